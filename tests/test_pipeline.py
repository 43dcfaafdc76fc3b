"""End to end: every stage a real process, real gRPC, Redis, PostgreSQL, uvicorn and websockets.

A covering set of cells sends ~10k readings (the seed's slow design: 1k) through each sink, decoder, queue,
forwarder and topology; each must account for every reading, and the table must hold exactly the readings the
generator made from its seed.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.orchestrator import Orchestrator
from harness.plan import SEED, PipelineConfig
from harness.services import Services
from pipeline import db
from tests.helpers import expected_readings, table_readings

CELLS = {
    # split, the fast path: batched stream, binary COPY, Redis Streams with batch entries, async batched POSTs
    "split-direct-stream-copy_binary-async": PipelineConfig(
        topology="split", rate=20_000, count=10_000, sensors=50, readings_per_message=100, decoder="direct",
        queue="stream", queue_entry="batch", sink="copy_binary", batch_size=2000, flush_interval=0.2,
        forwarder="async", forward_batch=200, seed=11,
    ),
    # the seed's queue (per-reading JSON on a list) and text COPY, MessageToDict, nothing forwarded
    "split-dict-list-copy-none": PipelineConfig(
        topology="split", rate=10_000, count=10_000, readings_per_message=50, decoder="dict", queue="list",
        queue_entry="reading", sink="copy", batch_size=500, flush_interval=0.2, forwarder="none", seed=12,
    ),
    # one INSERT per row, two writer workers on a stream of per-reading entries; sync POSTs fed after commit
    "split-insert-2workers-sync-from-writer": PipelineConfig(
        topology="split", rate=10_000, count=10_000, readings_per_message=100, decoder="direct", queue="stream",
        queue_entry="reading", sink="insert", batch_size=500, flush_interval=0.2, workers=2, forwarder="sync",
        forward_batch=250, forward_from="writer", seed=13,
    ),
    "split-executemany": PipelineConfig(
        topology="split", rate=20_000, count=10_000, readings_per_message=100, queue="list", queue_entry="batch",
        sink="executemany", batch_size=1000, flush_interval=0.2, forwarder="none", seed=14,
    ),
    "split-values": PipelineConfig(
        topology="split", rate=20_000, count=10_000, readings_per_message=100, queue="stream", queue_entry="batch",
        sink="values", batch_size=1000, flush_interval=0.2, forwarder="none", seed=15,
    ),
    # the reliable list, idempotent writes (unique index, staging, ON CONFLICT DO NOTHING)
    "split-list_reliable-dedupe": PipelineConfig(
        topology="split", rate=20_000, count=10_000, readings_per_message=100, queue="list_reliable",
        queue_entry="batch", sink="copy_binary", batch_size=1000, flush_interval=0.2, dedupe=True,
        forwarder="none", seed=18,
    ),
    # the seed's own design: one process, seed RPC, MessageToDict, LPUSH/BRPOP, COPY of 20, a blocking POST each
    # (a few hundred readings/s at best: 1,000 readings are 50 COPYs and 1,000 POSTs, every one accounted for)
    "node-seed": SEED.model_copy(update={"rate": 1000.0, "count": 1000, "flush_interval": 0.5, "seed": 16}),
    # the pubsub forwarder: batches published on the run's Redis channel, the backend subscribed, no HTTP hop
    "split-pubsub": PipelineConfig(
        topology="split", rate=10_000, count=5_000, readings_per_message=100, decoder="direct", queue="stream",
        queue_entry="batch", sink="copy_binary", batch_size=1000, flush_interval=0.2, forwarder="pubsub",
        forward_batch=100, seed=19,
    ),
    # load from three generators, each with its own ingest (a third of the sensors, rate and count each: 23 sensors,
    # 10,001 readings, so neither divides evenly), into one stream consumed by two writers: the same readings, ids and
    # values one generator would send
    "split-3generators": PipelineConfig(
        topology="split", rate=20_000, count=10_001, sensors=23, generators=3, readings_per_message=100,
        decoder="direct", queue="stream", queue_entry="batch", sink="copy_binary", batch_size=1000,
        flush_interval=0.2, workers=2, forwarder="async", forward_batch=200, seed=20,
    ),
    # node topology with the async forwarder and two queue-reader coroutines
    "node-async-2workers": PipelineConfig(
        topology="node", rate=10_000, count=10_000, readings_per_message=100, decoder="direct", queue="stream",
        queue_entry="batch", sink="copy_binary", batch_size=1000, flush_interval=0.2, workers=2,
        forwarder="async", forward_batch=100, seed=17,
    ),
}  # fmt: skip


@pytest.mark.parametrize("cell", list(CELLS))
async def test_every_reading_accounted_for(
    cell: str, services: Services, pg_schema: str, queue_key: str, tmp_path: Path
) -> None:
    cfg = CELLS[cell]
    result = await Orchestrator(cfg, services, tmp_path, schema=pg_schema, queue_key=queue_key).run()
    a = result.accounting
    assert result.failures == [], "\n".join(result.failures)
    assert a.generated == cfg.count
    assert a.committed == a.rows == cfg.count and a.lost == 0 and a.duplicated == 0
    if cfg.forwarding:
        assert a.forwarded == cfg.count
        assert a.ws_clients == 1 and a.broadcast == a.ws_received == cfg.count
    with db.connect_sync(services.pg_dsn, pg_schema) as conn:
        got = table_readings(conn)
        per_sensor = dict(
            conn.execute("SELECT sensor_id, max(sequence_number) FROM telemetry_data GROUP BY 1").fetchall()
        )
        order = conn.execute(
            "SELECT count(*) FROM telemetry_data WHERE NOT (intended_ns <= sent_ns AND sent_ns <= ingested_ns "
            "AND ingested_ns <= (extract(epoch FROM inserted_at) * 1e9)::bigint + 1000)"
        ).fetchone()
    assert got == expected_readings(cfg.seed, cfg.sensors, per_sensor)
    assert order == (0,), "every row's stamps must follow the path: intended ≤ sent ≤ ingested ≤ inserted"


async def test_lost_readings_are_reported(services: Services, pg_schema: str, queue_key: str, tmp_path: Path) -> None:
    """The accounting is not a formality: a row deleted behind the pipeline's back is reported lost."""
    cfg = PipelineConfig(rate=5000, count=1000, readings_per_message=50, forwarder="none", flush_interval=0.1)
    orch = Orchestrator(cfg, services, tmp_path, schema=pg_schema, queue_key=queue_key)
    result = await orch.run()
    assert result.ok
    with db.connect_sync(services.pg_dsn, pg_schema) as conn:
        conn.execute("DELETE FROM telemetry_data WHERE id IN (SELECT id FROM telemetry_data LIMIT 3)")
        conn.execute(
            "INSERT INTO telemetry_data (reading_timestamp, telemetry_type, sensor_id, subsystem, sequence_number) "
            "SELECT reading_timestamp, telemetry_type, sensor_id, subsystem, sequence_number "
            "FROM telemetry_data LIMIT 2"
        )
    acct = orch._account()
    assert acct.lost == 3 and acct.duplicated == 2
    assert any("3 readings lost" in p for p in acct.problems())
    assert any("2 duplicated" in p for p in acct.problems())


async def test_overloaded_generator_counts_what_it_never_sent(
    services: Services, pg_schema: str, queue_key: str, tmp_path: Path
) -> None:
    """A writer committing one row per transaction can't take 40,000 readings/s (a few thousand here); with a small
    queue cap its backpressure reaches the generator, which falls behind its schedule, stops 1 s after the
    schedule's end and counts what it never sent as unsent — accounted for, not lost, and exactly the schedule."""
    cfg = PipelineConfig(
        rate=40_000, duration=1.0, readings_per_message=10, sink="insert", batch_size=1, queue_cap=100,
        forwarder="none", ws_clients=0,
    )  # fmt: skip
    result = await Orchestrator(cfg, services, tmp_path, schema=pg_schema, queue_key=queue_key).run()
    a = result.accounting
    assert result.failures == [], "\n".join(result.failures)
    assert a.unsent > 0 and a.lost == 0 and a.duplicated == 0
    assert a.generated + a.unsent == 40_000  # every reading of the schedule: sent, or counted as unsent


async def test_api_token_reaches_backend_forwarder_and_clients(
    services: Services, pg_schema: str, queue_key: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """TELEMETRY_API_TOKEN set for a run: the backend requires it (a POST without it gets 401), the forwarder and
    our websocket client present it, and every reading is still forwarded and broadcast."""
    import httpx

    monkeypatch.setenv("TELEMETRY_API_TOKEN", "s3cret-token")
    cfg = PipelineConfig(rate=5000, count=2000, readings_per_message=50, forwarder="async", flush_interval=0.1)
    orch = Orchestrator(cfg, services, tmp_path, schema=pg_schema, queue_key=queue_key)
    assert orch.api_token == "s3cret-token"
    refused: list[int] = []

    class Probe:  # at the first poll, while the backend runs: a POST without the token
        async def sample(self, o: Orchestrator, snap: dict[str, object]) -> None:
            if not refused:
                async with httpx.AsyncClient() as http:
                    r = await http.post(f"http://127.0.0.1:{o.ports['backend']}/telem_data", json={})
                    refused.append(r.status_code)

    orch.monitor = Probe()
    result = await orch.run()
    assert result.failures == [], "\n".join(result.failures)
    assert refused == [401]
    a = result.accounting
    assert a.forwarded == a.received == a.ws_received == 2000
