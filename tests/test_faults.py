"""Faults mid-run, at small scale, with exact accounting: reliable variants lose and duplicate nothing; the seed's
lossy list reports what it lost. Stages are SIGKILLed and restarted with the same command."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from experiments.matrix import load
from pipeline import db
from pipeline.orchestrator import Fault, Orchestrator
from pipeline.services import Services
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
        # the seed's list: what the killed writer had popped is gone, and the accounting says so
        assert all("lost" in f for f in result.failures), result.failures
        assert a.lost == a.generated - a.committed and a.duplicated == 0
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
