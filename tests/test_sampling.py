"""Sampling profiles: py-spy on a deliberately busy stage finds the function known to dominate it; the views
(speedscope, SVG flame graph, top functions) and the diff are built from the samples."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import math
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

from experiments.analysis import sampling_cost
from experiments.analysis import stacks as stack_analysis
from experiments.measure import sampler as sampling
from experiments.plan.matrix import load
from experiments.present import flamegraph
from experiments.results.model import Results
from experiments.run.repeat import run_repeat
from harness.services import Services

BUSY = textwrap.dedent(
    """
    import threading
    import time

    def dominating_busy_function():
        s = 0
        for i in range(300_000):
            s += i * i
        return s

    def waits():
        time.sleep(0.005)  # visible with native frames only (its caller is the innermost Python frame)
        threading.Event().wait(0.005)  # a Python-level wait: threading.py's wait, idle on pure-Python stacks

    print("ready", flush=True)
    t = time.time()
    while time.time() - t < 30:
        dominating_busy_function()
        waits()
    """
)


@pytest.mark.skipif(sampling.py_spy() is None, reason="py-spy is not installed")
@pytest.mark.parametrize("native", [False, True], ids=["nonblocking", "native"])
def test_busy_stage_profile(tmp_path: Path, native: bool) -> None:
    """The measured repeats' sampler (nonblocking, Python frames) and the native one both find the function known to
    dominate a busy process, and tell its waits apart."""
    proc = subprocess.Popen([sys.executable, "-c", BUSY], stdout=subprocess.PIPE)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == b"ready"
        sampler = sampling.Sampler({"busy": proc.pid}, tmp_path, rate_hz=200, native=native)
        sampler.start()
        argv = sampler.procs["busy"].args
        assert isinstance(argv, list) and ("--native" in argv) == native and ("--nonblocking" in argv) != native
        time.sleep(2.0)
        files = sampler.stop()
    finally:
        proc.kill()
        proc.wait()
    assert sampler.problem is None, sampler.problem
    stacks = stack_analysis.read_collapsed(files["busy"])
    assert sum(stacks.values()) > 100
    hottest = stack_analysis.top_self(stacks, n=3, busy_only=True)
    assert hottest[0].function == "dominating_busy_function" and not hottest[0].idle
    assert 0.0 < stack_analysis.idle_share(stacks) < 0.5  # the sleeps are there, and told apart
    views = flamegraph.write_views(files["busy"], "busy stage")
    svg = views["svg"].read_text()
    assert svg.startswith("<svg") and "dominating_busy_function" in svg
    scope = json.loads(views["speedscope"].read_text())
    names = {f["name"] for f in scope["shared"]["frames"]}
    assert any("dominating_busy_function" in n for n in names)
    assert sum(scope["profiles"][0]["weights"]) == sum(stacks.values())


def test_idle_is_told_from_busy() -> None:
    assert stack_analysis.is_idle(
        "<module> (x.py);run (asyncio/base_events.py);0x7f (libc.so.6);epoll_wait (libc.so.6)"
    )
    assert stack_analysis.is_idle("main (x.py);time_sleep (libpython3.11.so);clock_nanosleep (libc.so.6)")
    assert not stack_analysis.is_idle("main (x.py);decode (pipeline/decoders/direct.py)")


def test_idle_is_told_from_busy_on_pure_python_stacks() -> None:
    """Without native frames the innermost frame is the Python one that makes the waiting call (py-spy ≥ 0.4 names
    methods Class.method and shortens files to the package part)."""
    loop = "main (pipeline/runtime.py);run (asyncio/runners.py);Runner.run (asyncio/runners.py);"
    once = "BaseEventLoop._run_once (asyncio/base_events.py);"
    assert stack_analysis.is_idle(loop + once + "EpollSelector.select (selectors.py)")
    assert stack_analysis.is_idle("Thread._bootstrap (threading.py);Thread._bootstrap_inner (threading.py);"
                            "Thread.run (threading.py)")  # a C target: grpc's completion-queue poller  # fmt: skip
    assert stack_analysis.is_idle("Thread.run (threading.py);_worker (concurrent/futures/thread.py)")
    assert stack_analysis.is_idle("x (a.py);Event.wait (threading.py);Condition.wait (threading.py)")
    assert stack_analysis.is_idle("handle (http/server.py);readline (socket.py);SocketIO.readinto (socket.py)")
    assert stack_analysis.is_idle(loop.rstrip(";"))  # asyncio.run over a C loop (uvloop): the loop waits in C
    # busy: a callback run by the loop, a decoder, the loop's own Python bookkeeping, a function called wait elsewhere
    assert not stack_analysis.is_idle(loop + "Handle._run (asyncio/events.py);decode (pipeline/decoders/direct.py)")
    assert not stack_analysis.is_idle(loop + once.rstrip(";"))
    assert not stack_analysis.is_idle("main (x.py);Connection.wait (psycopg/connection.py)")
    assert not stack_analysis.is_idle("main (x.py);select (pipeline/decoders/direct.py)")


def test_py_spy_command_samples_without_pausing_unless_native() -> None:
    argv = sampling.py_spy_argv("py-spy", 42, Path("w.collapsed"), 50)
    assert argv[:4] == ["py-spy", "record", "--pid", "42"] and argv[argv.index("--rate") + 1] == "50"
    assert {"--nonblocking", "--idle", "--nolineno"} <= set(argv) and "--native" not in argv
    native = sampling.py_spy_argv("py-spy", 42, Path("w.collapsed"), 50, native=True)
    assert "--native" in native and "--nonblocking" not in native  # py-spy unwinds C stacks only while paused


def test_diff_ranks_the_functions_whose_share_changed() -> None:
    a = stack_analysis.Stacks({"main (m.py);decode (d.py)": 50, "main (m.py);write (w.py)": 50})
    b = stack_analysis.Stacks({"main (m.py);decode (d.py)": 80, "main (m.py);write (w.py)": 20})
    changes = stack_analysis.diff(a, b, n=2)
    assert {c.function for c in changes} == {"decode", "write"}
    by = {c.function: c.delta for c in changes}
    assert by["decode"] == pytest.approx(0.3) and by["write"] == pytest.approx(-0.3)


def test_diff_labels_waits_from_the_whole_stack() -> None:
    """A wait on a pure-Python stack is told by its file too (``select`` in selectors.py, not any ``select``)."""
    wait = "main (m.py);BaseEventLoop._run_once (asyncio/base_events.py);EpollSelector.select (selectors.py)"
    a = stack_analysis.Stacks({wait: 50, "main (m.py);decode (d.py)": 50})
    b = stack_analysis.Stacks({wait: 20, "main (m.py);decode (d.py)": 80})
    by = {c.function: c for c in stack_analysis.diff(a, b)}
    assert by["EpollSelector.select"].idle and by["EpollSelector.select"].delta == pytest.approx(-0.3)
    assert not by["decode"].idle and by["decode"].delta == pytest.approx(0.3)


def test_alternate_flips_parity_from_cell_to_cell() -> None:
    assert [sampling.sampled("alternate", i, 0) for i in range(4)] == [True, False, True, False]
    assert [sampling.sampled("alternate", i, 1) for i in range(4)] == [False, True, False, True]
    assert all(sampling.sampled("on", i, 3) for i in range(3)) and not sampling.sampled("on", -1, 0)
    assert not any(sampling.sampled("off", i, 0) for i in range(3))
    with pytest.raises(ValueError, match="sampling = 'sometimes': valid values are off, one, on, alternate"):
        sampling.sampled("sometimes", 0, 0)


def test_one_samples_the_second_repeat_of_every_cell() -> None:
    for position in range(3):  # the same repeat in every cell: the second (the first may become the pilot)
        assert [sampling.sampled("one", i, position) for i in range(5)] == [False, True, False, False, False]
    assert sampling.sampled("one", 0, 2, single=True) and not sampling.sampled("one", 1, 2, single=True)
    assert not sampling.sampled("one", -1, 0)  # the profiled repeat


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
        "sampling_hz = 50\n"
        '[base]\ntopology = "split"\nrate = 20000\nreadings_per_message = 100\nsink = "copy_binary"\n'
        'batch_size = 1000\nsensors = 20\nforwarder = "none"\n[cells.one]\n'
    )
    m = load(str(toml))
    [cell] = m.cells
    key = f"test:{uuid.uuid4().hex[:8]}:queue"
    cell_dir = tmp_path / "profiles" / "run" / cell.id
    try:
        rep = asyncio.run(run_repeat(cell, m, fresh_services, tmp_path / "work", queue_key=key, sample_dir=cell_dir))
    finally:
        client = redis.Redis.from_url(fresh_services.redis_url)
        with contextlib.closing(client):
            for k in client.scan_iter(match=f"{key}*"):
                client.delete(k)
    assert rep.ok and rep.kind == "timed", rep.failures
    record = rep.sampled
    assert record is not None and record.problem is None, record
    assert record.rate_hz == 50 and record.native is False  # the matrix's rate, Python frames, nonblocking
    assert set(record.files) == {"generator", "ingest", "writer-1"}
    for stage, stored in record.files.items():
        stacks = stack_analysis.read_collapsed(Path(stored))
        assert sum(stacks.values()) > 10, stage
        views = record.views[stage]
        assert Path(views["svg"]).read_text().startswith("<svg") and Path(views["speedscope"]).exists()
        assert Path(views["collapsed"]).parent == cell_dir
    # an unsampled repeat of the same cell (off) records nothing
    off = dataclasses.replace(m, sampling="off")
    assert not sampling.sampled(off.sampling, 1, 0)


def test_cost_is_a_ratio_of_medians_over_closed_loop_cells_with_its_interval() -> None:
    from experiments.results.model import Results, Sampled

    res = Results.model_validate_json((Path(__file__).parent / "fixtures" / "results.json").read_text())
    record = {"rate_hz": 100, "files": {"writer-1": "x.collapsed"}}
    for k, cell in enumerate(res.cells):
        for i, rep in enumerate(cell.repeats):
            on = sampling.sampled("alternate", i, k)
            rep.throughput_rps = 1000.0 * (k + 1) * (1 + 0.002 * i) * (0.97 if on else 1.0)
            rep.sampled = Sampled(**record) if on else None
    c = sampling_cost.cost(res)
    assert c is not None and c.ratio.ratio == pytest.approx(0.97, abs=0.01)
    assert "seed" not in c.cells and "baseline" in c.cells  # open-loop cells' throughput is their offered rate
    assert c.ratio.lo is not None and c.ratio.hi is not None and c.ratio.hi < 0.98
    assert c.status == "fail" and "sampled ÷ unsampled − 1: throughput -3." in c.text()


def test_sampling_cost_target_is_decided_on_the_interval() -> None:
    from experiments.analysis.targets import perf
    from experiments.results.model import Results, Sampled

    base = Results.model_validate_json((Path(__file__).parent / "fixtures" / "results.json").read_text())

    def status(factor: float, noise: float, mode: str = "one") -> str:
        res = base.model_copy(deep=True)
        res.matrix["sampling"] = mode
        for k, cell in enumerate(res.cells):
            for i, rep in enumerate(cell.repeats):
                on = sampling.sampled(mode, i, k)
                # each repeat its own noise (a symmetric pattern would cancel exactly in every cell's pair)
                rep.throughput_rps = 1000.0 * (k + 1) * (1 + noise * math.sin(7 * k + 3 * i)) * (factor if on else 1)
                rep.sampled = Sampled(rate_hz=100, files={"writer-1": "x.collapsed"}) if on else None
        [t] = [t for t in perf(res) if t["name"] == "sampling cost"]
        assert "sampled ÷ unsampled − 1" in t["measured"] and t["cells"]
        return str(t["status"])

    for mode in ("one", "alternate"):
        assert status(0.999, 0.001, mode) == "pass"
        assert status(0.95, 0.001, mode) == "fail"
        assert status(0.98, 0.05, mode) == "cannot_tell"
    [t] = [t for t in perf(base) if t["name"] == "sampling cost"]  # nothing sampled: not measured
    assert t["status"] == "cannot_tell" and t["measured"] == "not measured"


def _one_mode(ratios: list[float]) -> Results:
    """The fixture run with sampling = "one": every cell's second repeat sampled; each closed-loop cell's unsampled
    repeats have median 1000·(k + 1) and its sampled repeat is that × the next of ``ratios``."""
    from experiments.results.model import Results, Sampled

    res = Results.model_validate_json((Path(__file__).parent / "fixtures" / "results.json").read_text())
    res.matrix["sampling"] = "one"
    factors = iter(ratios)
    for k, cell in enumerate(res.cells):
        closed = cell.params.max_rate and not (cell.summary and cell.summary.failed)
        r = next(factors) if closed else 0.5
        for i, rep in enumerate(cell.repeats):
            on = sampling.sampled("one", i, k)
            rep.throughput_rps = 1000.0 * (k + 1) * (r if on else (1.01, 1.0, 0.99)[i])
            rep.sampled = Sampled(rate_hz=50, files={"writer-1": "x.collapsed"}, native=False) if on else None
    return res


def test_cost_is_paired_per_cell_with_a_t_interval_over_the_cells() -> None:
    res = _one_mode([0.97, 0.98, 0.99, 0.96, 1.00])
    c = sampling_cost.cost(res)
    assert c is not None
    # closed-loop cells that didn't fail, each its own control; open-loop cells (offered rate) and failed ones out
    assert c.cells == ["sink-sink=insert", "sink-sink=copy", "baseline", "batch-batch_size=10000",
                       "decoder-decoder=dict"]  # fmt: skip
    assert c.per_cell["baseline"] == pytest.approx(0.99) and (c.sampled, c.unsampled) == (5, 10)
    # ln r over the five cells: exp(median) = 0.98, exp(mean ± t(0.975, 4)·s/√5) = [0.960460, 0.999729]
    assert c.ratio.ratio == pytest.approx(0.98) and c.ratio.lo == pytest.approx(0.960460, abs=1e-5)
    assert c.ratio.hi == pytest.approx(0.999729, abs=1e-5)
    assert c.status == "cannot_tell" and c.decided_on == "throughput"  # no py-spy CPU recorded (older results)
    assert c.text().startswith("sampled ÷ unsampled − 1: throughput -2.0 % [-4.0 %, -0.0 %]")
    # not shown beyond 2 %: the sampled repeats count
    cost, changed = sampling_cost.apply_cost(res)
    assert cost is not None and not changed and not any(r.excluded for cell in res.cells for r in cell.repeats)
    record = sampling_cost.cost_record(res)
    assert record is not None and record["status"] == "cannot_tell" and record["excluded"] is False
    assert record["ci95"] == [pytest.approx(0.960460, abs=1e-5), pytest.approx(0.999729, abs=1e-5)]


@pytest.mark.parametrize(("spy_cpu_s", "status"), [(0.001, "pass"), (0.05, "fail")])
def test_cpu_per_reading_decides_the_sampling_cost_where_throughput_cannot(spy_cpu_s: float, status: str) -> None:
    """Throughput within ±2 % noise cannot tell; CPU per committed reading — the stages' own, ±0.3 % from repeat to
    repeat, plus py-spy's CPU on the sampled side — decides: +0.1 % of CPU passes, +5 % fails."""
    from experiments.results.model import StageResources

    res = _one_mode([0.97, 1.01, 0.99, 0.96, 1.02])
    for k, cell in enumerate(res.cells):
        for i, rep in enumerate(cell.repeats):
            rep.accounting.committed = 10_000
            rep.resources = {"writer-1": StageResources(cpu_s=1.0 + 0.003 * math.sin(5 * k + 2 * i),
                                                         cpu_util_window=None, peak_rss_bytes=1)}  # fmt: skip
            if rep.sampled is not None:
                rep.sampled.cpu_s = spy_cpu_s
    c = sampling_cost.cost(res)
    # decided on py-spy's own share (its CPU ÷ the rest of its repeat's), the paired CPU ratio agreeing beside it
    assert c is not None and stats_status(c.ratio) == "cannot_tell" and c.decided_on == "direct"
    assert c.direct is not None and c.direct.median == pytest.approx(spy_cpu_s, rel=0.01)
    assert c.direct.lo is not None and c.direct.lo > 0  # the stated extra cost: an interval excluding 0
    assert c.cpu is not None and c.cpu.ratio == pytest.approx(1 + spy_cpu_s, abs=0.004)
    assert c.status == status and "CPU per reading (py-spy's own included)" in c.text()
    assert c.text().startswith("py-spy's own CPU ÷ the rest of the CPU, in the measured windows: +")
    record = sampling_cost.cost_record(res)
    assert record is not None and record["decided_on"] == "direct" and record["status"] == status
    assert record["own_share"] == pytest.approx(spy_cpu_s, rel=0.01)


def stats_status(r: object) -> str:
    from experiments.analysis import stats

    return stats.at_least(r, 1 - sampling_cost.MAX_COST)  # type: ignore[arg-type]


def test_a_cost_shown_beyond_two_percent_excludes_the_sampled_repeats() -> None:
    from experiments.analysis.summary import summarize
    from experiments.results.model import counted

    res = _one_mode([0.90, 0.91, 0.92, 0.89, 0.93])
    cost, changed = sampling_cost.apply_cost(res)
    assert cost is not None and cost.status == "fail" and changed
    assert cost.ratio.hi is not None and cost.ratio.hi < 0.98
    baseline = res.cell("baseline")
    assert baseline is not None
    assert [r.excluded for r in baseline.repeats] == [False, True, False]
    assert [r.index for r in counted(baseline)] == [0, 2]
    s = summarize(baseline, None)
    assert s.repeats_taken == 2 and s.throughput_rps == pytest.approx(4000.0)  # the unsampled repeats only
    # the cost is still measured on the excluded repeats, and stated
    again = sampling_cost.cost(res)
    assert again is not None and again.ratio.ratio == cost.ratio.ratio
    record = sampling_cost.cost_record(res)
    assert record is not None and record["excluded"] is True and record["status"] == "fail"
    # with another mode nothing is excluded (alternate's sampled repeats are half of every cell)
    res.matrix["sampling"] = "alternate"
    _, changed = sampling_cost.apply_cost(res)
    assert changed and not any(r.excluded for cell in res.cells for r in cell.repeats)


def test_the_console_states_the_cost_and_whether_the_sampled_repeats_count() -> None:
    from experiments.present.console import sampling_cost_line

    res = _one_mode([0.97, 0.98, 0.99, 0.96, 1.00])
    res.matrix.update(sampling_hz=50, sampling_native=False)
    assert "not measured" in (sampling_cost_line(res) or "")
    sampling_cost.apply_cost(res)
    res.sampling_cost = sampling_cost.cost_record(res)
    line = sampling_cost_line(res) or ""
    assert line.startswith("[yellow]CANNOT TELL[/yellow] sampling cost (py-spy 50 Hz, Python frames, nonblocking")
    assert "sampled ÷ unsampled − 1: throughput -2.0 % [-4.0 %, -0.0 %]" in line and "(target ≤ 2 %)" in line
    assert "count in their cells' intervals" in line
    res = _one_mode([0.90, 0.91, 0.92, 0.89, 0.93])
    res.matrix.update(sampling_hz=50, sampling_native=False)
    sampling_cost.apply_cost(res)
    res.sampling_cost = sampling_cost.cost_record(res)
    line = sampling_cost_line(res) or ""
    assert line.startswith("[red]FAIL[/red]") and "excluded from their cells' intervals" in line
    res.matrix["sampling"] = "off"
    assert sampling_cost_line(res) is None


def test_py_spy_share_is_read_inside_the_measured_window_and_an_only_repeat_stays() -> None:
    """py-spy's start-up falls in the warm-up (it starts at the first commit): its share is its CPU inside the
    window ÷ everyone else's there, each read off a cumulative series by interpolation; the whole repeat where a
    process did not span the window. A failed cost never leaves a one-repeat cell without its figure."""
    from experiments.measure.monitor import cpu_between
    from experiments.results.model import Sampled, StageResources

    series = [[0.0, 0.0], [1.0, 0.5], [2.0, 0.52], [3.0, 0.54]]  # 0.5 s of start-up, then 0.02 s per second
    assert cpu_between(series, 1.5, 2.5) == pytest.approx(0.02)
    assert cpu_between(series, 2.5, 3.5) is None  # past the last poll: unknown
    res = _one_mode([0.97, 0.98, 0.99, 0.96, 1.00])
    rep = next(r for c in res.cells for r in c.repeats if r.sampled is not None)
    rep.sampled = Sampled(rate_hz=25, files={"writer-1": "x"}, cpu_s=0.54, cpu_s_window=0.02)
    rep.resources = {"writer-1": StageResources(cpu_s=3.0, cpu_s_window=1.0, cpu_util_window=None, peak_rss_bytes=1)}
    assert sampling_cost.own_share(rep) == pytest.approx(0.02)
    rep.resources["ingest"] = StageResources(cpu_s=1.0, cpu_util_window=None, peak_rss_bytes=1)  # ended early
    assert sampling_cost.own_share(rep) == pytest.approx(0.54 / 4.0)
    # one cell whose only timed repeat was sampled keeps it when the cost fails
    res = _one_mode([0.90, 0.91, 0.92, 0.89, 0.93])
    baseline = res.cell("baseline")
    assert baseline is not None
    only = baseline.repeats[1].model_copy()
    baseline.repeats = [only]
    _, _ = sampling_cost.apply_cost(res)
    assert baseline.repeats[0].excluded is False
