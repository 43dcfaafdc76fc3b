"""Per-stage ceilings on the real services (one short pass), and which ceiling binds a cell."""

from __future__ import annotations

from experiments.run import stage_ceilings
from harness.plan import PipelineConfig
from harness.services import Services
from pipeline.queues import QUEUES

CFG = PipelineConfig(max_rate=True, sensors=5, readings_per_message=100, batch_size=1000)


async def test_one_pass_measures_every_stage_alone(services: Services, pg_schema: str, queue_key: str) -> None:
    for broker in {q.broker for q in QUEUES.values() if q.broker}:
        services.broker_url(broker)
    full_job = CFG.model_copy(update={"forwarder": "async", "forward_batch": 1000, "concurrency": 8})
    got = await stage_ceilings.one_pass(CFG, services.pg_dsn, services.redis_url, pg_schema, queue_key, 2,
                                        readings=5_000, forwarding=[CFG, full_job, full_job])  # fmt: skip
    # forward included: a backend process and a websocket client; each queue variant alone, both brokers included;
    # the forward stage again with the forwarding cell's own settings (once: the two are the same; CFG's own are
    # "forward")
    keyed = stage_ceilings.forward_key(full_job)
    assert keyed == "forward@async/1000/8/fast"
    assert set(got) == set(stage_ceilings.STAGES) | {f"queue_{name}" for name in QUEUES} | {keyed}
    assert all(v > 0 for v in got.values()), got
    summary = stage_ceilings.summarize([got, got], 2)
    assert summary["writer_N"]["connections"] == 2 and summary["queue"]["min"] == got["queue"]


def test_binding_ceiling_is_the_verdicts_stage_else_the_lowest_on_the_path() -> None:
    stages = {s: {"median": m} for s, m in
              {"generator": 900_000.0, "ingest": 300_000.0, "queue": 200_000.0, "writer_1": 100_000.0,
               "writer_N": 150_000.0}.items()}  # fmt: skip
    b = stage_ceilings.binding_ceiling(stages, 90_000.0, "ingest", 1)
    assert b is not None and b["stage"] == "ingest" and b["fraction"] == 0.3
    b = stage_ceilings.binding_ceiling(stages, 90_000.0, "none found", 1)
    assert b is not None and b["stage"] == "writer_1" and b["fraction"] == 0.9 and "lowest" in b["why"]
    b = stage_ceilings.binding_ceiling(stages, 120_000.0, "writer", 2)
    assert b is not None and b["stage"] == "writer_N" and b["fraction"] == 0.8
    # a forwarding cell: its own settings' forward ceiling where measured, else the stage-ceilings cell's
    stages |= {"forward": {"median": 50_000.0}, "forward@async/1000/8/fast": {"median": 95_000.0}}
    b = stage_ceilings.binding_ceiling(stages, 76_000.0, "forwarder", 1, forwarding=True,
                                       forward="forward@async/1000/8/fast")  # fmt: skip
    assert b is not None and b["stage"] == "forward@async/1000/8/fast" and b["fraction"] == 0.8
    b = stage_ceilings.binding_ceiling(stages, 40_000.0, "forwarder", 1, forwarding=True, forward="forward@sync/1/1/x")
    assert b is not None and b["stage"] == "forward" and b["fraction"] == 0.8
