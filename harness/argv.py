"""A run plan (``PipelineConfig``) → each stage's command-line flags. The stages read nothing else from the harness:
the children's environment carries no ``TELEMETRY_*`` setting (but the API token)."""

from __future__ import annotations

from harness.plan import PipelineConfig


def common(c: PipelineConfig, pg_dsn: str, redis_url: str, schema: str, queue_key: str) -> list[str]:
    return ["--pg-dsn", pg_dsn, "--redis-url", redis_url,
            "--db-schema", schema, "--queue", c.queue, "--queue-key", queue_key,
            "--queue-entry", c.queue_entry, "--queue-cap", str(c.effective_queue_cap)]  # fmt: skip


def stream(c: PipelineConfig, generator: str) -> list[str]:
    return ["--generator", generator, "--rpc", c.rpc, "--decoder", c.decoder,
            "--rate", str(c.rate), f"--{'' if c.max_rate else 'no-'}max-rate", "--sensors", str(c.sensors),
            "--count", str(c.count), "--duration", str(c.duration), "--seed", str(c.seed),
            "--readings-per-message", str(c.readings_per_message)]  # fmt: skip


def writer(c: PipelineConfig) -> list[str]:
    return ["--sink", c.sink, "--batch-size", str(c.batch_size), "--flush-interval", str(c.flush_interval),
            "--dedupe" if c.dedupe else "--no-dedupe"]  # fmt: skip


def forwarder(c: PipelineConfig, backend_url: str) -> list[str]:
    return ["--forwarder", c.forwarder, "--backend-url", backend_url,
            "--forward-batch", str(c.forward_batch), "--concurrency", str(c.concurrency)]  # fmt: skip


def generator(c: PipelineConfig, port: int) -> list[str]:
    gen = ["--port", str(port), "--seed", str(c.seed)]
    if c.rpc == "seed":  # the seed RPC carries no parameters: the generator's flags set the stream
        gen += ["--rate", str(c.rate), "--sensors", str(c.sensors), "--count", str(c.count),
                "--duration", str(c.duration)]  # fmt: skip
    return gen
