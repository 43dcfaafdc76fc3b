"""Faults mid-run, at small scale, with exact accounting: reliable variants lose and duplicate nothing; the seed's
lossy list reports what it lost. Stages are SIGKILLed and restarted with the same command."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from experiments.matrix import load
from harness.orchestrator import Fault, Orchestrator
from harness.plan import PipelineConfig
from harness.services import Services
from pipeline import db
from tests.helpers import expected_readings, table_readings

FAULTS = {c.id: c for c in load("faults").cells}


@pytest.mark.parametrize("cell_id", list(FAULTS))
async def test_fault(cell_id: str, services: Services, pg_schema: str, queue_key: str, tmp_path: Path) -> None:
    cell = FAULTS[cell_id]
    if cell.fault == "restart_postgres" and services.pg_source != "local":
        pytest.skip("restart_postgres needs the machine's own PostgreSQL cluster")
    cfg = cell.params.model_copy(update={"duration": 0.0, "count": 15_000})
    fault = Fault(cell.fault or "", cell.fault_at_s)
    result = await Orchestrator(cfg, services, tmp_path, schema=pg_schema, queue_key=queue_key, fault=fault).run()
    a = result.accounting
    assert fault.injected_at_ns is not None, fault.note
    assert a.generated == 15_000
    if cell.expect_loss:
        # the seed's list: what the killed writer had popped is gone — a real loss, seen in the table, not only in
        # the counters — and the accounting reports exactly that many
        assert a.lost > 0, f"the killed writer held no popped readings: nothing lost ({a})"
        assert a.duplicated == 0 and a.rows == a.committed < a.generated
        assert result.failures == [f"{a.lost} readings lost: generated {a.generated}, committed {a.committed}"]
        with db.connect_sync(services.pg_dsn, pg_schema) as conn:
            per_sensor = dict(
                conn.execute("SELECT sensor_id, max(sequence_number) FROM telemetry_data GROUP BY 1").fetchall()
            )
            got = table_readings(conn)
        expected = expected_readings(cfg.seed, cfg.sensors, per_sensor)
        assert all(expected.get(k) == v for k, v in got.items())  # what is there is right
        missing = set(expected) - set(got)  # readings sent before later ones that were committed: the popped ones
        assert 0 < len(missing) <= a.lost
        return
    assert result.failures == [], "\n".join(result.failures)
    assert a.committed == a.rows == 15_000 and a.lost == 0 and a.duplicated == 0
    assert fault.recovery_s is not None and fault.recovery_s < 30
    if cell.fault == "restart_redis":  # the cell's own Redis went down and came back with the queue's keys
        assert "came back with every key" in fault.detail and f"{queue_key}:progress" in fault.detail
    if cfg.forwarding:
        assert a.forwarded == 15_000
    with db.connect_sync(services.pg_dsn, pg_schema) as conn:
        per_sensor = dict(
            conn.execute("SELECT sensor_id, max(sequence_number) FROM telemetry_data GROUP BY 1").fetchall()
        )
        assert table_readings(conn) == expected_readings(cfg.seed, cfg.sensors, per_sensor)


@pytest.mark.parametrize("module", ["pipeline.writer", "pipeline.ingest", "pipeline.forwarder", "pipeline.generator"])
def test_sigterm_exits_cleanly(module: str, services: Services, tmp_path: Path) -> None:
    """Graceful shutdown: every stage stops on SIGTERM within the deadline, exit status 0."""
    args = [sys.executable, "-m", module, "--metrics-port", "0", "--log-level", "WARNING"]
    if module != "pipeline.generator":
        args += ["--pg-dsn", services.pg_dsn, "--redis-url", services.redis_url, "--queue-key", "test:sigterm"]
    if module == "pipeline.generator":
        args += ["--port", "0"]
    if module == "pipeline.ingest":
        args += ["--generator", "127.0.0.1:9"]  # nothing there: it waits for the generator
    proc = subprocess.Popen(args, stderr=subprocess.PIPE, text=True)
    time.sleep(2.0)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(15) == 0, proc.stderr.read() if proc.stderr else ""


@pytest.mark.parametrize("queue", ["stream", "list_reliable"])
async def test_sigterm_mid_stream_commits_what_it_took(
    queue: str, services: Services, pg_schema: str, queue_key: str, tmp_path: Path
) -> None:
    """SIGTERM to the writer while readings flow, holding a partial batch (long flush interval): it exits 0 having
    committed and acknowledged every reading it had taken (nothing left pending or in its processing list, table
    rows = its committed counter). Then, with the queue filling up to its cap, SIGTERM to ingest (waiting at the
    cap or mid-stream): it exits 0 and its saved stream position equals what it queued. A fresh writer drains the
    queue to exactly the readings before that position — no gap, no repeat."""
    import redis

    cfg = PipelineConfig(
        topology="split", rate=20_000, sensors=10, count=2_000_000, readings_per_message=100, queue=queue,
        sink="copy_binary", batch_size=3_000, flush_interval=30.0, forwarder="none", ws_clients=0,
    )  # fmt: skip
    orch = Orchestrator(cfg, services, tmp_path, schema=pg_schema, queue_key=queue_key)
    stages = {s.name: s for s in orch.plan()}
    writer, ingest, generator = stages["writer-1"], stages["ingest"], stages["generator"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("TELEMETRY_")}
    r = redis.Redis.from_url(services.redis_url, decode_responses=True)

    def rows() -> tuple[int, int]:
        with db.connect_sync(services.pg_dsn, pg_schema) as conn:
            got = conn.execute("SELECT count(*), count(DISTINCT (sensor_id, sequence_number)) FROM telemetry_data")
            n, distinct = got.fetchone() or (0, 0)
        return int(n), int(distinct)

    async def answers(url: str) -> bool:
        async with httpx.AsyncClient() as http:
            try:
                return (await http.get(url, timeout=1)).status_code == 200
            except httpx.HTTPError:
                return False

    try:
        for stage in (writer, ingest, generator):
            stage.start(env)
        deadline = time.monotonic() + 30
        while rows()[0] < 6_000:  # a couple of full batches committed: the stream is well under way
            assert time.monotonic() < deadline, writer.log_tail() + ingest.log_tail()
            await asyncio.sleep(0.1)
        assert await writer.stop(15) == 0, writer.log_tail()
        committed = writer.count("committed")
        deadline = time.monotonic() + 30
        while int(r.hget(f"{queue_key}:progress", "next") or 0) < committed + 3_000:  # the queue fills meanwhile
            assert ingest.alive and time.monotonic() < deadline, ingest.log_tail()
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.5)  # likely at the queue's cap by now: the stop must end that wait too
        assert await ingest.stop(15) == 0, ingest.log_tail()
        assert rows() == (committed, committed)
        if queue == "stream":
            assert r.xpending(queue_key, "writers")["pending"] == 0
        else:
            assert r.llen(f"{queue_key}:processing:writer-1") == 0
        position = int(r.hget(f"{queue_key}:progress", "next") or 0)
        assert position == ingest.count("queued") > committed
        assert ingest.count("ingested") >= position  # a batch cut off waiting on the cap is re-streamed on resume

        flush = writer.argv.index("--flush-interval") + 1
        writer.argv[flush] = "0.2"  # a fresh writer drains what ingest queued, its last partial batch included
        writer.start(env)
        deadline = time.monotonic() + 60
        while not await answers(writer.metrics_url or ""):  # up, its SIGTERM handler installed
            assert writer.alive and time.monotonic() < deadline, writer.log_tail()
            await asyncio.sleep(0.05)
        while rows()[0] < position:
            assert time.monotonic() < deadline, writer.log_tail()
            await asyncio.sleep(0.1)
        assert await writer.stop(15) == 0
        assert rows() == (position, position)
        with db.connect_sync(services.pg_dsn, pg_schema) as conn:
            per_sensor = dict(
                conn.execute("SELECT sensor_id, max(sequence_number) FROM telemetry_data GROUP BY 1").fetchall()
            )
            assert table_readings(conn) == expected_readings(cfg.seed, cfg.sensors, per_sensor)
    finally:
        for stage in stages.values():
            await stage.stop(5)
        r.close()
