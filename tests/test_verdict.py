"""The bottleneck verdict's rules on synthetic evidence (the rules are documented in ARCHITECTURE.md)."""

from __future__ import annotations

from experiments.measure.verdict import bottleneck
from harness.plan import SEED, PipelineConfig

FAST = PipelineConfig(max_rate=True, readings_per_message=100, queue_entry="batch", batch_size=1000)


def res(**util: float) -> dict[str, dict[str, float]]:
    return {k: {"cpu_util_window": v, "cpu_s": v, "peak_rss_bytes": 1} for k, v in util.items()}


def verdict(cfg: PipelineConfig, util: dict[str, float], growth: dict[str, float | None] | None = None,
            tp: float = 10_000, pub: float | None = None, post_s: float = 0.0) -> str:  # fmt: skip
    q = {"generator/generator_publish_delay_seconds": {"p99": pub}} if pub is not None else {}
    sums = {"node/forward_request_seconds": post_s}
    out = bottleneck(cfg, res(**util), growth or {}, tp, 2.0, q, sums, 5.0)
    assert out["reason"] and out["evidence"]["cpu_util_window"] is not None
    return str(out["stage"])


def test_blocking_posts_in_one_event_loop_blame_the_node() -> None:
    assert verdict(SEED.model_copy(update={"rate": 1000.0}), {"node": 0.4}, post_s=3.0) == "node"


def test_a_growing_writer_queue_blames_the_writer() -> None:
    # 30 entries/s × 100 readings × 2 s = 6,000 readings, above noise (2 batches, 5 % of 20,000)
    assert verdict(FAST, {"ingest": 0.6, "writer-1": 0.5}, {"writer_queue": 30.0}) == "writer"


def test_queue_wobble_within_batching_noise_is_not_growth() -> None:
    # 5 entries/s × 100 × 2 s = 1,000 readings: less than two batches of 1,000
    assert verdict(FAST, {"ingest": 0.95, "writer-1": 0.5}, {"writer_queue": 5.0}) == "ingest"


def test_a_growing_forward_queue_blames_the_forwarder() -> None:
    cfg = FAST.model_copy(update={"forwarder": "sync"})
    assert verdict(cfg, {"ingest": 0.5, "forwarder": 0.5}, {"forward_queue": 40.0}) == "forwarder"


def test_saturated_machine_blames_the_busiest_stage() -> None:
    assert verdict(FAST, {"ingest": 0.9, "writer-1": 0.6, "generator": 0.5}) == "ingest"


def test_open_loop_that_keeps_up_has_no_bottleneck() -> None:
    cfg = FAST.model_copy(update={"max_rate": False, "rate": 1000.0})
    assert verdict(cfg, {"ingest": 0.1, "writer-1": 0.1}, pub=3.0) == "none"


def test_open_loop_with_late_readings_is_backpressure_on_ingest_not_the_load_source() -> None:
    """Late sends mean the subscriber did not read (gRPC flow control): never the generator, the harness's own
    load source, which the stage ceilings show far above the pipeline."""
    cfg = FAST.model_copy(update={"max_rate": False, "rate": 1000.0})
    assert verdict(cfg, {"ingest": 0.3, "writer-1": 0.1}, pub=800.0) == "ingest"


def test_max_rate_with_no_rule_firing_says_none_found_with_its_evidence() -> None:
    """Never a default stage: at max rate with idle cores and no growing queue, the verdict says so."""
    out = bottleneck(FAST, res(ingest=0.4, **{"writer-1": 0.3}), {}, 10_000, 2.0, {}, {}, 5.0)
    assert out["stage"] == "none found"
    assert "no rule fired" in out["reason"] and "ingest at 40%" in out["reason"]


def test_a_saturated_redis_is_a_stage_too() -> None:
    assert verdict(FAST, {"ingest": 0.3, "writer-1": 0.3, "redis": 0.9}) == "redis"


def test_postgresql_is_saturated_per_writer_connection() -> None:
    """PostgreSQL's CPU is summed over its processes: 1.2 cores for two writer connections is 60 % each."""
    two = FAST.model_copy(update={"workers": 2})
    assert verdict(two, {"ingest": 0.3, "postgresql": 1.2}) == "none found"
    assert verdict(FAST, {"ingest": 0.3, "postgresql": 0.9}) == "postgresql"


def test_the_publish_delay_is_read_off_every_generator_merged() -> None:
    """Two generators: the first publishes on time, the second 90 % of its messages 400 ms late. Their window
    buckets merge exactly (summed by le): p99 400 ms, the rule blames ingest, which the first's alone would not."""
    cfg = PipelineConfig(rate=20_000, generators=2, sensors=10, readings_per_message=100)
    on_time = {"0.01": 100.0, "0.5": 100.0, "+Inf": 100.0}
    late = {"0.01": 10.0, "0.5": 100.0, "+Inf": 100.0}
    buckets = {"generator": {"generator_publish_delay_seconds": on_time},
               "generator-2": {"generator_publish_delay_seconds": late}}  # fmt: skip
    q = {"generator/generator_publish_delay_seconds": {"p99": 9.9}}  # the first generator's own: on time
    out = bottleneck(cfg, res(ingest=0.3, **{"ingest-2": 0.3}), {}, 20_000, 2.0, q, {}, 5.0, buckets)
    assert out["stage"] == "ingest" and out["evidence"]["publish_delay_p99_ms"] > 400
    assert bottleneck(cfg, res(ingest=0.3), {}, 20_000, 2.0, q, {}, 5.0)["stage"] == "none"
