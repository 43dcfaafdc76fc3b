"""Nothing left behind: a stage dies with a killed harness, and the next run reaps what a killed run left.

The end-to-end checks stop a real ``telemetry-bench live`` each way (SIGTERM, SIGINT, SIGHUP, SIGKILL) mid-run and
assert that no process it started survives.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import psutil
import psycopg
import pytest
import redis
from psycopg import sql

from harness import lifeline
from harness.services import Services

ROOT = Path(__file__).resolve().parent.parent


def _gone(pids: list[int], timeout: float = 60.0) -> list[int]:
    """The pids still alive (not zombies) after ``timeout``."""
    deadline = time.monotonic() + timeout
    alive = pids
    while time.monotonic() < deadline:
        alive = []
        for pid in pids:
            try:
                if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                    alive.append(pid)
            except psutil.NoSuchProcess:
                pass
        if not alive:
            return []
        time.sleep(0.2)
    return alive


def test_child_dies_with_its_parent(tmp_path: Path) -> None:
    """A child started through die_with_parent() gets SIGTERM when the process that started it is SIGKILLed."""
    script = tmp_path / "parent.py"
    script.write_text(
        textwrap.dedent(
            """
            import subprocess, sys, time
            from harness.lifeline import die_with_parent
            child = subprocess.Popen(die_with_parent([sys.executable, "-c", "import time; time.sleep(60)"]),
                                     start_new_session=True)
            print(child.pid, flush=True)
            time.sleep(60)
            """
        )
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    parent = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, env=env, text=True)
    assert parent.stdout is not None
    child = int(parent.stdout.readline())
    deadline = time.monotonic() + 10  # setpriv sets the signal, then execs the command: wait for the command
    while psutil.Process(child).name() == "setpriv" and time.monotonic() < deadline:
        time.sleep(0.01)
    parent.kill()
    parent.wait()
    assert _gone([child]) == [], "the child outlived its SIGKILLed parent"


def test_reap_leftovers_of_a_dead_run(
    services: Services, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, queue_key: str
) -> None:
    monkeypatch.setattr(lifeline, "RECORDS", tmp_path / "runs")
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stray = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    schema = f"t_reap_{os.getpid()}"
    with psycopg.connect(services.pg_dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(schema)))
    r = redis.Redis.from_url(services.redis_url)
    r.set(f"{queue_key}:progress", "x")
    r.rpush(queue_key, "a")
    try:
        record = lifeline.RunRecord(services.redis_url, services.pg_dsn, queue_key, schema, owner=dead.pid)
        record.owner_started = 1.0  # a dead owner: no process has this start time
        record.add_child(stray.pid)
        # a record of a run still going is left alone
        alive = lifeline.RunRecord(services.redis_url, services.pg_dsn, "other:", "public")
        alive.save()
        lines = lifeline.reap_leftovers()
        assert len(lines) == 1 and str(dead.pid) in lines[0]
        assert stray.wait(timeout=10) == -signal.SIGKILL
        assert r.exists(queue_key, f"{queue_key}:progress") == 0
        with psycopg.connect(services.pg_dsn) as conn:
            found = conn.execute("SELECT 1 FROM pg_namespace WHERE nspname = %s", (schema,)).fetchone()
        assert found is None
        assert not record.path.exists() and alive.path.exists()
    finally:
        stray.kill()
        r.delete(queue_key, f"{queue_key}:progress")
        r.close()
        with psycopg.connect(services.pg_dsn, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))


def test_reap_never_touches_a_reused_pid(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """A recorded child whose pid now belongs to another process (another start time) is not killed."""
    monkeypatch.setattr(lifeline, "RECORDS", tmp_path / "runs")
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        record = lifeline.RunRecord("redis://127.0.0.1:1/0", "postgresql://x@127.0.0.1:1/x", "k:", "public", owner=1)
        record.owner_started = 1.0
        record.children = [(other.pid, 12345.0)]
        record.save()
        lifeline.reap_leftovers()
        assert other.poll() is None
    finally:
        other.kill()
        other.wait()


def _stages_started(proc: subprocess.Popen[bytes], timeout: float = 90.0) -> set[int]:
    """The harness's descendants once its generator and a writer run (pids collected as they appear)."""
    harness = psutil.Process(proc.pid)
    deadline = time.monotonic() + timeout
    seen: set[int] = set()
    while time.monotonic() < deadline and proc.poll() is None:
        seen |= {c.pid for c in harness.children(recursive=True)}
        cmdlines = []
        for pid in seen:
            with contextlib.suppress(psutil.Error):
                cmdlines.append(" ".join(psutil.Process(pid).cmdline()))
        if any("pipeline.generator" in c for c in cmdlines) and any("pipeline.writer" in c for c in cmdlines):
            time.sleep(1.0)  # mid-stream
            return seen | {c.pid for c in harness.children(recursive=True)}
        time.sleep(0.2)
    pytest.fail(f"the harness did not start its stages within {timeout:.0f} s")


def _wait_or_explain(proc: subprocess.Popen[bytes], timeout: float, tmp_path: Path) -> int:
    """``proc``'s exit status; if it has not exited within ``timeout``, fail with where it is stuck (py-spy's dump of
    the harness, its children, the tail of its log) so that a hang seen once in CI can be read afterwards."""
    try:
        return proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        py_spy = str(Path(sys.executable).parent / "py-spy")  # the test extra installs it beside the interpreter
        dump = subprocess.run([py_spy, "dump", "--pid", str(proc.pid)], capture_output=True, text=True, timeout=30)
        children: list[str] = []
        with contextlib.suppress(psutil.Error):
            children = [" ".join(c.cmdline()[:6]) for c in psutil.Process(proc.pid).children(recursive=True)]
        log = (tmp_path / "harness.log").read_text(errors="replace")[-3000:]
        pytest.fail(
            f"the harness did not exit within {timeout:.0f} s of the signal\n{dump.stdout}{dump.stderr}\n"
            f"children: {children}\nlog: {log}"
        )


def _harness(args: list[str], tmp_path: Path, services: Services) -> subprocess.Popen[bytes]:
    """``telemetry-bench ARGS`` on the test run's servers (never the machine's default database and Redis db)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TELEMETRY_")}
    env.update(PYTHONPATH=str(ROOT), TELEMETRY_PG_DSN=services.pg_dsn, TELEMETRY_REDIS_URL=services.redis_url)
    log = (tmp_path / "harness.log").open("wb")
    return subprocess.Popen([sys.executable, "-m", "telemetry_bench.cli", *args], stdout=log, stderr=log, env=env,
                            cwd=tmp_path)  # fmt: skip


# each way once between live and run: live gets Ctrl-C (SIGINT) and SIGHUP, run SIGTERM and SIGKILL (all four take
# the same paths in both commands: harness.lifeline.graceful_stop_signals, the loop's handlers, PR_SET_PDEATHSIG)
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGHUP], ids=lambda s: s.name)
def test_live_stopped_from_outside_leaves_no_process(tmp_path: Path, services: Services, sig: signal.Signals) -> None:
    """``telemetry-bench live`` stopped mid-run by each signal: every process it started is gone afterwards."""
    proc = _harness(["live", "--topology", "split", "--rpc", "batched", "--rate", "300", "--flush-interval", "0.5",
                     "--duration", "120", "--forwarder", "async"], tmp_path, services)  # fmt: skip
    try:
        seen = _stages_started(proc)
        proc.send_signal(sig)
        proc.wait(timeout=120)
        assert _gone(sorted(seen)) == [], f"processes of the run survived {sig.name}"
    finally:
        if proc.poll() is None:
            proc.kill()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=lambda s: s.name)
def test_run_stopped_from_outside_leaves_no_process(tmp_path: Path, services: Services, sig: signal.Signals) -> None:
    """``telemetry-bench run`` stopped mid-cell: no process of the run survives; SIGTERM gives a non-zero exit
    after an orderly stop, with the results so far written."""
    matrix = tmp_path / "m.toml"
    matrix.write_text(
        'name = "stop"\ndescription = "stopped from outside"\nrepeats = 3\nwarmup_s = 5.0\nmeasure_s = 30.0\n'
        'tail_s = 1.0\n[base]\ntopology = "split"\nrate = 2000\nforwarder = "async"\n'
        '[cells.one]\ntitle = "one cell, long enough to be stopped mid-repeat"\n'
    )
    proc = _harness(["run", "--matrix", str(matrix), "--out", str(tmp_path / "reports"), "--profile", "none",
                     "--profiles", str(tmp_path / "profiles")], tmp_path, services)  # fmt: skip
    try:
        seen = _stages_started(proc, timeout=300)
        proc.send_signal(sig)
        rc = _wait_or_explain(proc, 180, tmp_path)
        assert _gone(sorted(seen)) == [], f"processes of the run survived {sig.name}"
        if sig != signal.SIGKILL:
            assert rc != 0
            assert list((tmp_path / "reports").glob("*/results.json")), "no results written"
    finally:
        if proc.poll() is None:
            proc.kill()


def test_an_orderly_stop_that_hangs_still_ends(tmp_path: Path) -> None:
    """A run whose cleanup never ends (a task that swallows its cancellation) still exits 130 after the grace time
    of a SIGTERM, saying so in one line, and writes what it was still waiting on: the task and the await."""
    script = tmp_path / "stubborn.py"
    script.write_text(
        "import asyncio\nfrom harness.lifeline import graceful_stop_signals\ngraceful_stop_signals(0.5)\n"
        "async def stubborn():\n    print('ready', flush=True)\n    while True:\n        try:\n"
        "            await asyncio.sleep(3600)\n        except asyncio.CancelledError:\n            pass\n"
        "asyncio.run(stubborn())\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    assert proc.stdout is not None and proc.stdout.readline() == b"ready\n"
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 130
    assert b"the orderly stop after SIGTERM did not end within 0.5 s: exiting now" in err, err
    assert b"asyncio tasks not done" in err and b"stubborn" in err and b"await asyncio.sleep(3600)" in err, err
