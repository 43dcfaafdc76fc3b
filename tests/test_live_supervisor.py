"""``telemetry-bench live`` as a supervisor: a real live run whose writer is SIGKILLed mid-stream. By default the
writer is restarted (one line says so) and, with the stream queue and dedupe, nothing is lost; with ``--no-restart``
the run stops and its accounting says where every uncommitted reading is — in the queue (recoverable: a writer
started on it afterwards commits exactly those), in flight, or lost — adding up to generated − committed."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import psycopg
import pytest
import redis

from harness.services import Services
from harness.supervisor import Supervisor
from pipeline.queues.base import decode
from pipeline.queues.stream import FIELD
from pipeline.rows import COLUMNS

ROOT = Path(__file__).resolve().parent.parent
KEY = "queue:telemetry"  # live's queue key and schema (public)
COUNT = 15_000
LIVE = [
    "live", "--topology", "split", "--rpc", "batched", "--rate", "5000", "--count", str(COUNT), "--sensors", "20",
    "--readings-per-message", "100", "--decoder", "direct", "--queue", "stream", "--queue-entry", "batch",
    "--sink", "copy_binary", "--batch-size", "500", "--flush-interval", "0.2", "--dedupe", "--forwarder", "none",
]  # fmt: skip
# the seed's lossy list: a writer that commits a batch a second always holds popped readings when it is killed
SEED_LIST = ["--queue", "list", "--batch-size", "5000", "--flush-interval", "5.0", "--no-dedupe"]


@pytest.fixture
def live_keys(services: Services) -> Iterator[redis.Redis]:
    r = redis.Redis.from_url(services.redis_url)
    yield r
    keys = list(r.scan_iter(match=f"{KEY}*"))
    if keys:
        r.delete(*keys)
    r.close()


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TELEMETRY_")}
    env["PYTHONPATH"] = str(ROOT)
    return env


def _distinct(dsn: str) -> int:
    try:
        with psycopg.connect(dsn) as conn:
            row = conn.execute("SELECT count(DISTINCT (sensor_id, sequence_number)) FROM public.telemetry_data")
            return int((row.fetchone() or (0,))[0])
    except psycopg.Error:  # the run is (re)creating its table
        return 0


def _live_killing_the_writer(services: Services, tmp_path: Path, *flags: str) -> tuple[int, str]:
    """Run live; once its writer has committed a few batches, SIGKILL it; the exit status and the output."""
    out = tmp_path / "live.log"
    args = [*LIVE, "--pg-dsn", services.pg_dsn, "--redis-url", services.redis_url, *flags]
    with out.open("wb") as log:
        proc = subprocess.Popen([sys.executable, "-m", "telemetry_bench.cli", *args], stdout=log,
                                stderr=subprocess.STDOUT, env=_env(), cwd=tmp_path)  # fmt: skip
    try:
        deadline = time.monotonic() + 90
        writer = None
        while writer is None:  # its table is fresh once the writer runs
            assert proc.poll() is None and time.monotonic() < deadline, out.read_text()
            for child in psutil.Process(proc.pid).children(recursive=True):
                try:
                    if "pipeline.writer" in child.cmdline():
                        writer = child
                except psutil.Error:
                    pass
            time.sleep(0.1)
        while _distinct(services.pg_dsn) < 2_000:  # mid-stream, several batches committed
            assert proc.poll() is None and time.monotonic() < deadline, out.read_text()
            time.sleep(0.05)
        writer.send_signal(signal.SIGKILL)
        rc = proc.wait(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return rc, out.read_text()


# the broker queues: what the dead writer took and never acknowledged is redelivered to its successor (JetStream
# after ack_wait, shortened here from its 10 s; RabbitMQ as soon as the channel closes), and dedupe skips a repeat
BROKERS = {"jetstream": ["--queue", "jetstream", "--ack-wait", "2"], "rabbitmq": ["--queue", "rabbitmq"]}


@pytest.mark.parametrize("queue", ["stream", *BROKERS])
def test_a_dead_writer_is_restarted_and_nothing_is_lost(
    queue: str, services: Services, tmp_path: Path, live_keys: redis.Redis
) -> None:
    rc, out = _live_killing_the_writer(services, tmp_path, *BROKERS.get(queue, []))
    assert "writer-1 died (exit status -9): restarted (1 of at most 3)" in out, out
    assert rc == 0, out
    assert f"generated {COUNT:,} · committed {COUNT:,} (rows {COUNT:,}, duplicated 0, lost 0)" in out, out
    assert "restarted: writer-1 1×" in out and "every reading accounted for" in out, out
    assert _distinct(services.pg_dsn) == COUNT


@pytest.mark.parametrize("queue", ["stream", "list"])
def test_no_restart_says_where_every_uncommitted_reading_is(
    queue: str, services: Services, tmp_path: Path, live_keys: redis.Redis
) -> None:
    """The stream keeps what the dead writer held (nothing lost); the seed's list lost what it had popped."""
    seed_list = SEED_LIST if queue == "list" else []
    rc, out = _live_killing_the_writer(services, tmp_path, "--no-restart", *seed_list)
    assert rc == 1, out
    assert "FAILED: writer-1 exited with status -9 (not restarted: --no-restart)" in out, out
    found = re.search(
        r"FAILED: ([\d,]+) readings not committed \(generated ([\d,]+), committed ([\d,]+)\): ([\d,]+) in the queue "
        rf"\(recoverable: a writer started on {KEY} commits them\), ([\d,]+) in flight \(sent, never queued: a "
        r"resumed stream sends them again\), ([\d,]+) lost",
        out,
    )
    assert found, out
    missing, generated, committed, in_queue, in_flight, lost = (int(g.replace(",", "")) for g in found.groups())
    assert in_queue + in_flight + lost == missing == generated - committed > 0
    assert f"(rows {committed:,}, duplicated 0, not committed {missing:,}, of which lost {lost:,})" in out, out
    assert "readings lost" not in out, out  # not what the issue saw: "N readings lost" while they sat in the stream
    if queue == "stream":
        assert lost == 0 and in_queue > 0  # the stream keeps what the dead writer held: nothing is gone
    else:
        assert lost > 0  # what the dead writer had popped from the seed's list
    # the figures are the queue's and the table's own: the queue holds in_queue readings not in the table,
    # ingest's saved position leaves in_flight of the generated ones unqueued
    assert _distinct(services.pg_dsn) == committed
    assert generated - int(live_keys.hget(f"{KEY}:progress", "next") or 0) == in_flight
    sid, seq = COLUMNS.index("sensor_id"), COLUMNS.index("sequence_number")
    if queue == "stream":
        payloads = [fields[FIELD] for _id, fields in live_keys.xrange(KEY)]
    else:
        payloads = live_keys.lrange(KEY, 0, -1)
    held = {(row[sid], row[seq]) for payload in payloads for row in decode(payload)}
    with psycopg.connect(services.pg_dsn) as conn:
        table = set(conn.execute("SELECT sensor_id, sequence_number FROM public.telemetry_data").fetchall())
    assert len(held - table) == in_queue
    # recoverable indeed: a writer started on the queue commits exactly those
    writer = subprocess.Popen(
        [sys.executable, "-m", "pipeline.writer", "--pg-dsn", services.pg_dsn, "--redis-url", services.redis_url,
         "--queue", queue, "--queue-entry", "batch", "--sink", "copy_binary", "--batch-size", "500",
         "--flush-interval", "0.2", "--db-schema", "public", "--queue-key", KEY, "--log-level", "WARNING",
         *(["--dedupe"] if queue == "stream" else [])], env=_env(), cwd=tmp_path,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while _distinct(services.pg_dsn) < committed + in_queue:
            assert writer.poll() is None and time.monotonic() < deadline
            time.sleep(0.1)
        time.sleep(0.5)
        assert _distinct(services.pg_dsn) == committed + in_queue
    finally:
        writer.send_signal(signal.SIGTERM)
        assert writer.wait(15) == 0


def test_supervisor_limits_and_bad_values() -> None:
    lines: list[str] = []
    sup = Supervisor(2, on_restart=lines.append)
    assert sup.allows("writer-1") and not sup.allows("generator")
    sup.restarted("writer-1", -9)
    sup.restarted("writer-1", 1)
    assert not sup.allows("writer-1") and sup.allows("ingest")
    assert lines == ["writer-1 died (exit status -9): restarted (1 of at most 2)",
                     "writer-1 died (exit status 1): restarted (2 of at most 2)"]  # fmt: skip
    assert sup.why_not("writer-1") == " (restarted 2 times already: the limit, --max-restarts 2)"
    assert Supervisor(0).why_not("writer-1") == " (not restarted: --no-restart)"
    with pytest.raises(ValueError, match=re.escape("max_restarts = -1: must be an integer ≥ 0")):
        Supervisor(-1)


@pytest.mark.parametrize("value", ["-1", "three"])
def test_live_rejects_a_bad_max_restarts(value: str, capsys: pytest.CaptureFixture[str]) -> None:
    from telemetry_bench.cli import main

    assert main(["live", "--max-restarts", value]) == 2
    assert f"live: --max-restarts = '{value}': must be an integer ≥ 0" in capsys.readouterr().err
