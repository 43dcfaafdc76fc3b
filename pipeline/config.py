"""One settings object per stage, from CLI flags, the environment (``TELEMETRY_*``) and ``.env``, in that order.

Stages share groups of fields through mixins, so a name means the same everywhere (``--batch-size`` is the writer's
batch size whether the writer runs alone or inside the ``node`` topology). Variant names are checked against the
registries, and an unknown name fails with the valid ones listed before anything starts.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Literal, TypeVar

from pydantic import Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from pipeline.registry import check_variant

T = TypeVar("T", bound="StageSettings")


class ConfigError(SystemExit):
    """A configuration problem, reported in one readable message (no traceback), exit status 2."""

    def __init__(self, message: str) -> None:
        super().__init__(2)
        self.message = message

    def __str__(self) -> str:
        return self.message


def format_validation_error(exc: ValidationError, source: str = "settings") -> str:
    lines = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err["loc"]) or "(root)"
        flag = "--" + where.replace("_", "-")
        msg = err["msg"].removeprefix("Value error, ")
        lines.append(f"{source}: {flag} = {err.get('input')!r}: {msg}")
    return "\n".join(lines)


class _Settings(BaseSettings):
    """Base of every settings class and mixin, so that they all merge to this one configuration."""

    model_config = SettingsConfigDict(
        env_prefix="TELEMETRY_",
        env_file=".env",
        extra="ignore",
        cli_kebab_case=True,
        cli_implicit_flags=True,
        validate_default=True,
    )


class StageSettings(_Settings):
    host: str = Field("127.0.0.1", description="address every server of this stage binds")
    metrics_port: int = Field(0, ge=0, le=65535, description="port of /metrics (0: any free port)")
    log_level: str = "INFO"
    stats_file: str | None = Field(None, description="on exit, write the final /metrics text here")
    histograms: bool = Field(True, description="record histograms (off: counters only, to measure their cost)")

    @classmethod
    def from_cli(cls: type[T], argv: Sequence[str] | None = None) -> T:
        """Parse flags (and env/.env); on bad input raise ConfigError with one line per problem."""
        args = list(sys.argv[1:] if argv is None else argv)
        try:
            return cls(_cli_parse_args=args)
        except ValidationError as exc:
            raise ConfigError(format_validation_error(exc, cls.__name__)) from None


class ServicesMixin(_Settings):
    pg_dsn: str | None = Field(None, description="PostgreSQL DSN (default: local server, else a throwaway one)")
    redis_url: str | None = Field(None, description="Redis URL (default: local server, else a throwaway one)")
    db_schema: str = Field("public", description="schema holding telemetry_data")


class QueueMixin(_Settings):
    queue: str = Field("list", description="queue variant")
    queue_key: str = Field("queue:telemetry", description="Redis key of the writer queue")
    queue_entry: Literal["reading", "batch"] = Field("reading", description="one reading or one batch per entry")
    queue_cap: int = Field(1_000_000, gt=0, description="readings the queue may hold before producers wait")

    @field_validator("queue")
    @classmethod
    def _queue_known(cls, v: str) -> str:
        return check_variant("queue", v)


class StreamMixin(_Settings):
    """What the subscriber asks the generator for (the batched RPC's StreamRequest)."""

    generator: str = Field("127.0.0.1:50051", description="generator gRPC address")
    rpc: Literal["seed", "batched"] = Field("batched", description="seed: GetTelemetryStream; batched: StreamBatches")
    rate: float = Field(0.0, ge=0, description="offered readings/s (0: the seed's per-sensor periods)")
    max_rate: bool = Field(False, description="as fast as the pipeline takes them (bounded in-flight)")
    sensors: int = Field(5, ge=1, le=100_000)
    count: int = Field(0, ge=0, description="stop after this many readings (0: no limit)")
    duration: float = Field(0.0, ge=0, description="stop after this many seconds (0: no limit)")
    seed: int = Field(1, ge=0, description="random seed of the value models")
    readings_per_message: int = Field(1, ge=1, le=100_000)


class WriterMixin(_Settings):
    sink: str = Field("copy", description="sink variant")
    batch_size: int = Field(20, ge=1, le=1_000_000, description="rows per transaction (flush when reached)")
    flush_interval: float = Field(10.0, gt=0, description="seconds before a partial batch is flushed")
    dedupe: bool = Field(
        False, description="idempotent writes: stage, then INSERT … ON CONFLICT DO NOTHING (needs the unique index)"
    )

    @field_validator("sink")
    @classmethod
    def _sink_known(cls, v: str) -> str:
        return check_variant("sink", v)


class ForwarderMixin(_Settings):
    forwarder: str = Field("none", description="forwarder variant")
    backend_url: str = Field("http://127.0.0.1:8000", description="backend base URL")
    forward_batch: int = Field(1, ge=1, le=10_000, description="readings per POST (1: the seed's /telem_data)")
    concurrency: int = Field(8, ge=1, le=1024, description="POSTs in flight (async forwarder)")
    api_token: str | None = Field(None, description="bearer token for the backend, if it requires one")

    @field_validator("forwarder")
    @classmethod
    def _forwarder_known(cls, v: str) -> str:
        return check_variant("forwarder", v)


class DecoderMixin(_Settings):
    decoder: str = Field("dict", description="decoder variant")

    @field_validator("decoder")
    @classmethod
    def _decoder_known(cls, v: str) -> str:
        return check_variant("decoder", v)


class GeneratorSettings(StageSettings):
    port: int = Field(50051, ge=0, le=65535)
    sensors: int = Field(5, ge=1, le=100_000, description="sensors of the seed RPC's stream")
    rate: float = Field(0.0, ge=0, description="seed RPC: readings/s (0: the seed's per-sensor periods)")
    count: int = Field(0, ge=0, description="seed RPC: stop after this many readings per subscriber")
    duration: float = Field(0.0, ge=0, description="seed RPC: stop after this many seconds")
    seed: int = Field(1, ge=0)
    buffer_readings: int = Field(
        5000, ge=1, description="per-subscriber bounded buffer, in readings (at least one message)"
    )
    # generator fast path (issue 13): the harness passes it as --builder
    builder: Literal["numpy", "protobuf"] = Field(
        "numpy",
        description="batched RPC: numpy (vectorised, encoded once, stamped per message) or protobuf (the reference)",
    )


ForwardFrom = Literal["ingest", "writer"]


class IngestSettings(StageSettings, ServicesMixin, QueueMixin, StreamMixin, DecoderMixin):
    forward_from: ForwardFrom | None = Field(
        None, description="split topology: push readings to the forwarder's queue here (ingest) or not"
    )


class WriterSettings(StageSettings, ServicesMixin, QueueMixin, WriterMixin):
    consumer: str = Field("writer-1", description="this worker's name (stream consumer group member)")
    forward_from: ForwardFrom | None = None


class ForwarderSettings(StageSettings, ServicesMixin, QueueMixin, ForwarderMixin):
    consumer: str = Field("forwarder-1")


class NodeSettings(StageSettings, ServicesMixin, QueueMixin, StreamMixin, DecoderMixin, WriterMixin, ForwarderMixin):
    """The seed's topology: ingest, writer(s) and forwarder as coroutines of one process and one event loop."""

    metrics_port: int = Field(8001, ge=0, le=65535)
    workers: int = Field(1, ge=1, le=64, description="queue-reader coroutines")
    # [wt-c] issue 12 item 7: the seed node's per-reading prints (the seed preset passes --seed-prints)
    seed_prints: bool = Field(False, description="print the seed's two lines per reading (received, queue length)")


class BackendSettings(StageSettings):
    port: int = Field(8000, ge=0, le=65535)
    cors_origins: list[str] = Field(["http://localhost:3000"], description="allowed origins (the seed's Next.js)")
    api_token: str | None = Field(None, description="when set, required as a bearer token on POSTs and /ws")
    max_body_bytes: int = Field(8 * 1024 * 1024, gt=0, description="larger request bodies get 413")
    max_ws_clients: int = Field(64, ge=1)
    ws_buffer: int = Field(10_000, ge=1, description="messages queued per websocket client before drops")
    # [wt-c] issue 12 item 7: the seed's backend as a variant (the seed preset passes --behaviour seed)
    behaviour: Literal["fast", "seed"] = Field(
        "fast", description="fast: queued fan-out; seed: the seed's model, print and awaited broadcast per POST"
    )

    @model_validator(mode="after")
    def _no_wildcard_cors(self) -> BackendSettings:
        if "*" in self.cors_origins:
            raise ValueError("cors_origins must list origins; '*' is not accepted")
        return self
