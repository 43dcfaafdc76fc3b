"""Sampling profiles: py-spy on a deliberately busy stage finds the function known to dominate it; the views
(speedscope, SVG flame graph, top functions) and the diff are built from the samples."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
import redis
from psycopg import sql
from psycopg.conninfo import make_conninfo

from experiments import sampling
from experiments.matrix import load
from experiments.repeat import run_repeat
from experiments.results import Repeat
from harness.services import Services

BUSY = textwrap.dedent(
    """
    import time

    def dominating_busy_function():
        s = 0
        for i in range(300_000):
            s += i * i
        return s

    def waits():
        time.sleep(0.005)

    print("ready", flush=True)
    t = time.time()
    while time.time() - t < 30:
        dominating_busy_function()
        waits()
    """
)


@pytest.mark.skipif(sampling.py_spy() is None, reason="py-spy is not installed")
def test_busy_stage_profile(tmp_path: Path) -> None:
    proc = subprocess.Popen([sys.executable, "-c", BUSY], stdout=subprocess.PIPE)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == b"ready"
        sampler = sampling.Sampler({"busy": proc.pid}, tmp_path, rate_hz=200)
        sampler.start()
        time.sleep(2.0)
        files = sampler.stop()
    finally:
        proc.kill()
        proc.wait()
    assert sampler.problem is None, sampler.problem
    stacks = sampling.read_collapsed(files["busy"])
    assert sum(stacks.values()) > 100
    hottest = sampling.top_self(stacks, n=3, busy_only=True)
    assert hottest[0].function == "dominating_busy_function" and not hottest[0].idle
    assert 0.0 < sampling.idle_share(stacks) < 0.5  # the sleeps are there, and told apart
    views = sampling.write_views(files["busy"], "busy stage")
    svg = views["svg"].read_text()
    assert svg.startswith("<svg") and "dominating_busy_function" in svg
    scope = json.loads(views["speedscope"].read_text())
    names = {f["name"] for f in scope["shared"]["frames"]}
    assert any("dominating_busy_function" in n for n in names)
    assert sum(scope["profiles"][0]["weights"]) == sum(stacks.values())


def test_idle_is_told_from_busy() -> None:
    assert sampling.is_idle("<module> (x.py);run (asyncio/base_events.py);0x7f (libc.so.6);epoll_wait (libc.so.6)")
    assert sampling.is_idle("main (x.py);time_sleep (libpython3.11.so);clock_nanosleep (libc.so.6)")
    assert not sampling.is_idle("main (x.py);decode (pipeline/decoders/direct.py)")


def test_diff_ranks_the_functions_whose_share_changed() -> None:
    a = sampling.Stacks({"main (m.py);decode (d.py)": 50, "main (m.py);write (w.py)": 50})
    b = sampling.Stacks({"main (m.py);decode (d.py)": 80, "main (m.py);write (w.py)": 20})
    changes = sampling.diff(a, b, n=2)
    assert {c.function for c in changes} == {"decode", "write"}
    by = {c.function: c.delta for c in changes}
    assert by["decode"] == pytest.approx(0.3) and by["write"] == pytest.approx(-0.3)


def test_alternate_flips_parity_from_cell_to_cell() -> None:
    assert [sampling.sampled("alternate", i, 0) for i in range(4)] == [True, False, True, False]
    assert [sampling.sampled("alternate", i, 1) for i in range(4)] == [False, True, False, True]
    assert all(sampling.sampled("on", i, 3) for i in range(3)) and not sampling.sampled("on", -1, 0)
    assert not any(sampling.sampled("off", i, 0) for i in range(3))
    with pytest.raises(ValueError, match="sampling = 'sometimes': valid values are off, on, alternate"):
        sampling.sampled("sometimes", 0, 0)


# ------------------------------------------------------------------------------------- a measured repeat, sampled
@pytest.fixture
def fresh_services(services: Services) -> Iterator[Services]:
    """The services with a new, empty database (a repeat recreates its table in the ``bench`` schema)."""
    name = f"tb_sampling_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(services.pg_dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    yield dataclasses.replace(services, pg_dsn=make_conninfo(services.pg_dsn, dbname=name))
    with psycopg.connect(services.pg_dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


@pytest.mark.skipif(sampling.py_spy() is None, reason="py-spy is not installed")
def test_a_measured_repeat_is_sampled_per_stage(tmp_path: Path, fresh_services: Services) -> None:
    toml = tmp_path / "m.toml"
    toml.write_text(
        'name = "s"\nrepeats = 1\nwarmup_s = 0.3\nmeasure_s = 1.5\ntail_s = 0.2\nmin_commits = 0\nsampling = "on"\n'
        '[base]\ntopology = "split"\nrate = 20000\nreadings_per_message = 100\nsink = "copy_binary"\n'
        'batch_size = 1000\nsensors = 20\nforwarder = "none"\n[cells.one]\n'
    )
    m = load(str(toml))
    [cell] = m.cells
    key = f"test:{uuid.uuid4().hex[:8]}:queue"
    cell_dir = tmp_path / "profiles" / "run" / cell.id
    try:
        rep, _, _ = asyncio.run(
            run_repeat(cell, m, fresh_services, tmp_path / "work", 0, queue_key=key, sample_dir=cell_dir)
        )
    finally:
        client = redis.Redis.from_url(fresh_services.redis_url)
        with contextlib.closing(client):
            for k in client.scan_iter(match=f"{key}*"):
                client.delete(k)
    assert rep["ok"], rep["failures"]
    record = Repeat(**rep).sampled
    assert record is not None and record.problem is None, record
    assert set(record.files) == {"generator", "ingest", "writer-1"}
    for stage, stored in record.files.items():
        stacks = sampling.read_collapsed(Path(stored))
        assert sum(stacks.values()) > 10, stage
        views = record.views[stage]
        assert Path(views["svg"]).read_text().startswith("<svg") and Path(views["speedscope"]).exists()
        assert Path(views["collapsed"]).parent == cell_dir
    # an unsampled repeat of the same cell (off) records nothing
    off = dataclasses.replace(m, sampling="off")
    assert not sampling.sampled(off.sampling, 1, 0)


def test_cost_is_a_ratio_of_medians_over_closed_loop_cells_with_its_interval() -> None:
    from experiments.results import Results, Sampled

    res = Results.model_validate_json((Path(__file__).parent / "fixtures" / "results.json").read_text())
    record = {"rate_hz": 100, "files": {"writer-1": "x.collapsed"}}
    for k, cell in enumerate(res.cells):
        for i, rep in enumerate(cell.repeats):
            on = sampling.sampled("alternate", i, k)
            rep.throughput_rps = 1000.0 * (k + 1) * (1 + 0.002 * i) * (0.97 if on else 1.0)
            rep.sampled = Sampled(**record) if on else None
    c = sampling.cost(res)
    assert c is not None and c.ratio.ratio == pytest.approx(0.97, abs=0.01)
    assert "seed" not in c.cells and "baseline" in c.cells  # open-loop cells' throughput is their offered rate
    assert c.ratio.lo is not None and c.ratio.hi is not None and c.ratio.hi < 0.98
    assert c.status == "fail" and "sampled ÷ unsampled − 1 = -3." in c.text()


def test_sampling_cost_target_is_decided_on_the_interval() -> None:
    from experiments.results import Results, Sampled
    from experiments.targets import perf

    base = Results.model_validate_json((Path(__file__).parent / "fixtures" / "results.json").read_text())

    def status(factor: float, noise: float) -> str:
        res = base.model_copy(deep=True)
        for k, cell in enumerate(res.cells):
            for i, rep in enumerate(cell.repeats):
                on = sampling.sampled("alternate", i, k)
                rep.throughput_rps = 1000.0 * (k + 1) * (1 + noise * (i - 1)) * (factor if on else 1.0)
                rep.sampled = Sampled(rate_hz=100, files={"writer-1": "x.collapsed"}) if on else None
        [t] = [t for t in perf(res) if t["name"] == "sampling cost"]
        assert "sampled ÷ unsampled − 1" in t["measured"] and t["cells"]
        return str(t["status"])

    assert status(0.999, 0.001) == "pass"
    assert status(0.95, 0.001) == "fail"
    assert status(0.98, 0.05) == "cannot_tell"
    [t] = [t for t in perf(base) if t["name"] == "sampling cost"]  # nothing sampled: not measured
    assert t["status"] == "cannot_tell" and t["measured"] == "not measured"
