"""The runner's scheduling, without processes: interleaved rounds, extra rounds only for cells whose interval is too
wide, the cap, the pilot that sizes a window, and the summary keys results.json promises."""

from __future__ import annotations

import asyncio
import itertools
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console
from rich.progress import Progress

from experiments.plan.matrix import load
from experiments.results.model import Repeat, Results
from experiments.run import context, runner
from harness.services import Services
from tests.test_report import FIXTURES

MATRIX = """
name = "rounds"
repeats = 3
max_repeats = 5
ci_target = 0.05
min_commits = 20
warmup_s = 0.5
measure_s = 2.0
tail_s = 0.5

[base]
max_rate = true

[cells.steady]
title = "steady"
batch_size = 1000

[cells.noisy]
title = "noisy"
batch_size = 1001

[cells.slow-commits]
title = "a commit every 0.5 s"
batch_size = 1002

[cells.breaks]
title = "loses readings in its first repeat (a pilot too: a commit every 0.5 s)"
batch_size = 1003
"""

THROUGHPUT = {"steady": [100.0, 101.0, 99.0], "noisy": [100.0, 130.0, 80.0, 120.0, 90.0, 110.0],
              "slow-commits": [50.0, 50.5, 49.5, 50.2], "breaks": [10.0]}  # fmt: skip


SERVICES = Services("postgresql://x@127.0.0.1/x", "redis://127.0.0.1:6379/0", "given", "given")


def quiet_runner(m: Any, tmp_path: Path) -> runner.Runner:
    """A runner of ``m`` writing under ``tmp_path``, no profile, no console output."""
    return runner.Runner(m, SERVICES, profile="none", out=tmp_path, console=Console(quiet=True))


def run_rounds(m: Any, tmp_path: Path) -> runner.Runner:
    """The rounds of every cell of ``m`` (``Runner._run_phase``), with whatever ``run_repeat`` is patched to."""
    r = quiet_runner(m, tmp_path)
    r.dir.mkdir(parents=True, exist_ok=True)
    with Progress(console=Console(quiet=True)) as progress:
        overall, task = progress.add_task("all", total=len(m.cells)), progress.add_task("")
        asyncio.run(r._run_phase(m.cells, progress, overall, task))
    return r


def by_id(r: runner.Runner) -> dict[str, Any]:
    return {c.id: c for c in r.results.cells}


def test_rounds_interleave_and_stop_per_cell(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "m.toml").write_text(MATRIX)
    m = load(str(tmp_path / "m.toml"))
    template = Results.model_validate_json((FIXTURES / "results.json").read_text()).cells[3].repeats[0]
    calls: list[tuple[str, int, float | None]] = []
    counters = {k: itertools.count() for k in THROUGHPUT}

    async def fake_repeat(cell: Any, m: Any, services: Any, workdir: Path, *, kind: str, index: int,
                          measure_s: float | None = None, queue_key: str = "", **k: Any) -> Repeat:  # fmt: skip
        assert kind == "timed" and workdir.name == f"repeat-{index + 1}"
        calls.append((cell.id, index, measure_s))
        tp = THROUGHPUT[cell.id][next(counters[cell.id])]
        gap = 0.5 if cell.id in ("slow-commits", "breaks") else 0.01
        commits = int((measure_s or 2.0) / gap)
        rep = template.model_dump()
        ok = cell.id != "breaks"
        rep.update(kind=kind, index=index, throughput_rps=tp, window_s=measure_s or 2.0, window_commits=commits,
                   commit_gap_s=gap, measure_s=measure_s, ok=ok,
                   failures=[] if ok else ["100 readings lost: generated 1000, committed 900"],
                   accounting={**rep["accounting"], **({} if ok else {"generated": 1_000, "committed": 900})},
                   )  # fmt: skip
        return Repeat.model_validate(rep)

    monkeypatch.setattr(context, "run_repeat", fake_repeat)
    monkeypatch.setattr(runner, "versions", lambda s: {})
    r = run_rounds(m, tmp_path)
    order = [c for c, _, _ in calls]
    # round 1: every cell in the matrix's order; round 2: all but the one that failed, reversed (ABBA); slow-commits'
    # first repeat was its pilot (4 commits in 2 s), so it runs 4 in all
    assert order[:7] == ["steady", "noisy", "slow-commits", "breaks", "slow-commits", "noisy", "steady"]
    broke = by_id(r)["breaks"]
    assert len(broke.repeats) == 1 and broke.summary is not None and broke.summary.failed
    assert broke.summary.stop_reason == "failed" and broke.summary.lost == 100  # a pilot's loss is a loss
    assert order.count("steady") == 3 and order.count("noisy") == 5 and order.count("slow-commits") == 4
    by = {c.id: c for c in r.results.cells}
    steady, noisy, slow = by["steady"].summary, by["noisy"].summary, by["slow-commits"].summary
    assert steady is not None and noisy is not None and slow is not None
    assert steady.stop_reason == "converged" and steady.repeats_taken == 3 and not steady.unstable
    assert steady.throughput_ci95 is not None and steady.throughput_ci95[0] < 100 < steady.throughput_ci95[1]
    assert steady.loop == "closed" and steady.half_width is not None and steady.half_width <= 0.05
    assert noisy.stop_reason == "max_repeats" and noisy.repeats_taken == 5 and noisy.unstable  # flagged, not hidden
    # the pilot sized the window: 1.25 × 20 commits × 0.5 s = 12.5 s, and is not counted
    assert [rep.pilot for rep in by["slow-commits"].repeats] == [True, False, False, False]
    assert slow.repeats_taken == 3 and slow.measure_s == pytest.approx(12.5)
    assert [ms for c, _, ms in calls if c == "slow-commits"][1:] == [12.5, 12.5, 12.5]
    assert slow.throughput_rps == pytest.approx(50.2)  # the median of the counted repeats (50.5, 49.5, 50.2)
    assert by["slow-commits"].params.duration == pytest.approx(0.5 + 12.5 + 0.5)


def test_phases_and_time_spent() -> None:
    """Each repeat's wall time split into start, stream, drain, stop; the console sums them over the run."""
    from experiments.present.console import time_spent
    from harness.accounting import Accounting, RunResult
    from harness.plan import PipelineConfig

    s = 1_000_000_000
    rr = RunResult(PipelineConfig(), Accounting(), 13 * s, 16 * s, 17 * s, [], {}, begun_ns=10 * s, stopped_ns=18 * s)
    assert rr.phases_s == {"start": 3.0, "stream": 3.0, "drain": 1.0, "stop": 1.0}
    assert RunResult(PipelineConfig(), Accounting(), 13 * s, 16 * s, 17 * s, [], {}).phases_s == {}  # no marks

    res = Results.model_validate_json((FIXTURES / "results.json").read_text())
    for c in res.cells:
        for r in c.repeats:
            r.phases_s = {}
    assert time_spent(res) == ""  # an older results.json: nothing to say
    res.cells[0].repeats[0].phases_s = rr.phases_s
    res.cells[0].repeats[1].phases_s = {"start": 1.0, "stream": 1.0, "drain": 0.0, "stop": 0.0}
    assert time_spent(res) == (
        "time in 2 repeats: 10 s — start 4 s (40%) · stream 4 s (40%) · drain 1 s (10%) · stop 1 s (10%)"
    )


def test_a_repeat_names_its_kind_and_older_files_load_theirs() -> None:
    """``kind`` is stored on every repeat; files written before it marked the other kinds with a negative index
    (−1 profiled, −2 memory, −100 − n capacity probe n) and load as that kind, counted within it."""
    from experiments.results.model import CellResult, counted

    res = Results.model_validate_json((FIXTURES / "results.json").read_text())
    old = res.cells[0].repeats[0].model_dump()
    old.pop("kind")
    loaded = [Repeat.model_validate({**old, "index": i}) for i in (2, -1, -2, -101, -105)]
    assert [(r.kind, r.index) for r in loaded] == [("timed", 2), ("profiled", 0), ("memory", 0), ("capacity", 0),
                                                   ("capacity", 4)]  # fmt: skip
    assert Repeat.model_validate({**old, "kind": "capacity", "index": 3}).index == 3  # a new file: as written
    cell = CellResult(id="c", title="c", groups=[], varied={}, params=res.cells[0].params, repeats=loaded)
    assert counted(cell) == loaded[:1]  # only timed repeats count


# --- repeats planned from the CV, the budget spent on the cells the targets read --------------------------------
def test_repeats_needed_and_the_plan() -> None:
    from experiments.analysis.planning import Need, plan, repeats_needed, short_of

    assert repeats_needed(0.0, 3, 0.05, 10) == 2
    # ±12.4 % after 3 repeats (a CV of 5 %: 4.303 · 5 % / √3): t(0.975, 6) · 5 % / √7 = 4.6 %, 6 repeats 5.2 %
    assert repeats_needed(4.303 * 0.05 / 3**0.5, 3, 0.05, 10) == 7
    assert repeats_needed(0.102, 3, 0.10, 10) == 4  # just above the target after 3: one more repeat does it
    assert repeats_needed(0.50, 3, 0.05, 10) is None  # beyond the cap
    assert repeats_needed(None, 3, 0.05, 10) is None and repeats_needed(0.1, 1, 0.05, 10) is None

    def need(cid: str, priority: bool, needed: int | None, repeat_s: float = 10.0) -> Need:
        return Need(cid, priority, 3, needed, 10, 0.08, 0.05, repeat_s)

    needs = [need("target", True, None), need("cheap", False, 5), need("dear", False, None)]
    assert plan(needs, None) == {}  # no budget: nothing cut
    assert plan(needs, 1_000.0) == {}  # everything fits
    # 70 s reserved for the target cell (7 more to its cap), 20 s for the cheap one: the dear one's 70 s do not fit
    cuts = plan(needs, 100.0)
    assert list(cuts) == ["dear"] and cuts["dear"].reason == "budget"
    assert "≈ 70 s" in cuts["dear"].detail and "10 s of budget left" in cuts["dear"].detail
    assert set(plan(needs, 10.0)) == {"cheap", "dear"}  # the target cell is never cut: it keeps the ordinary rule
    assert "needs more than its cap of 10" in short_of(needs[0]) and "about 5 repeats" in short_of(needs[1])
    assert short_of(Need("long", True, 1, None, 1, None, 0.05, 60.0)).startswith("one repeat by design")


def test_the_budget_goes_to_the_cells_the_targets_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Two equally noisy cells, a budget for about one of them: the one a target reads takes every round to its cap,
    the other stops after its minimum with the reason stated."""
    from experiments.analysis import targets

    (tmp_path / "m.toml").write_text(
        MATRIX.split("[cells.steady]")[0].replace(
            'name = "rounds"', 'name = "rounds"\nbudget_s = 110\ntargets = "perf"'
        )
        + '[cells.read]\ntitle = "read by a target"\n\n[cells.unread]\ntitle = "read by none"\nbatch_size = 1001\n'
    )
    m = load(str(tmp_path / "m.toml"))
    monkeypatch.setitem(targets.TARGET_SETS, "perf", lambda res: [{"name": "t", "cells": ["read"]}])
    template = Results.model_validate_json((FIXTURES / "results.json").read_text()).cells[3].repeats[0]
    noisy = itertools.cycle([100.0, 130.0, 80.0, 120.0, 90.0])
    calls: list[str] = []

    async def fake_repeat(cell: Any, m: Any, services: Any, workdir: Path, *, index: int, **k: Any) -> Repeat:
        calls.append(cell.id)
        rep = template.model_dump()
        rep.update(index=index, throughput_rps=next(noisy), window_commits=100, duration_s=10.0, ok=True)
        return Repeat.model_validate(rep)

    monkeypatch.setattr(context, "run_repeat", fake_repeat)
    monkeypatch.setattr(runner, "versions", lambda s: {})

    async def no_pass(*a: Any, **k: Any) -> None:
        return None

    monkeypatch.setattr(runner.capacity_runs, "stage_pass", no_pass)
    r = run_rounds(m, tmp_path)
    # after 3 rounds: 110 s left; the read cell's 2 more repeats (to its cap of 5) reserve 20 s … then 90 s are left
    # for the unread one's 20 s: it fits. A tighter budget is the case to see: rerun with budget_s = 25 below.
    assert calls.count("read") == 5 and calls.count("unread") == 5
    calls.clear()
    m2 = load(str(tmp_path / "m.toml"))
    object.__setattr__(m2, "budget_s", 25.0)
    r = run_rounds(m2, tmp_path)
    assert calls.count("read") == 5 and calls.count("unread") == 3
    unread = by_id(r)["unread"].summary
    assert unread is not None and unread.stop_reason == "budget" and unread.unstable
    assert unread.stop_detail is not None and "no target reads it" in unread.stop_detail
    read = by_id(r)["read"].summary
    assert read is not None and read.stop_reason == "max_repeats" and read.repeats_needed is None
    assert read.stop_detail is not None and "needs more than its cap of 5" in read.stop_detail


def test_a_cluster_runs_what_the_run_measures_and_profiles_locally(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With --cluster, the timed, capacity and what-if repeats get the placement; a profiled or memory repeat runs
    locally (its profiler's files are written where its stage runs)."""
    (tmp_path / "m.toml").write_text(MATRIX)
    m = load(str(tmp_path / "m.toml"))
    placed: dict[str, object] = {}

    async def fake_repeat(cell: Any, m: Any, services: Any, workdir: Path, *, kind: str, **k: Any) -> None:
        placed[kind] = k["placement"]

    monkeypatch.setattr(context, "run_repeat", fake_repeat)
    monkeypatch.setattr(runner, "versions", lambda s: {})
    r = quiet_runner(m, tmp_path)
    r.ctx.placement = cluster = object()
    for kind in ("timed", "capacity", "whatif", "profiled", "memory"):
        asyncio.run(r.ctx.repeat(m.cells[0], kind))  # type: ignore[arg-type]
    assert placed == {"timed": cluster, "capacity": cluster, "whatif": cluster, "profiled": None, "memory": None}


def test_the_cells_the_targets_read_include_their_groups_contenders() -> None:
    from experiments.analysis.planning import target_cells
    from experiments.analysis.summary import summarize

    res = Results.model_validate_json((FIXTURES / "results.json").read_text())
    values = {
        "baseline": [100.0, 101.0, 99.0],
        "sink-sink=copy": [97.0, 99.0, 101.0],
        "sink-sink=insert": [9.0, 10.0, 11.0],
    }
    for c in res.cells:
        if c.id in values:
            c.repeats = [
                c.repeats[0].model_copy(update={"throughput_rps": v, "index": i}) for i, v in enumerate(values[c.id])
            ]
            c.summary = summarize(c, None)

    def targets(r: Results) -> list[dict[str, Any]]:  # the sampling cost reads one repeat per cell: not its cells
        return [{"name": "t", "cells": ["baseline"]}, {"name": "sampling cost", "cells": ["seed"]}]

    got = target_cells(res, targets)
    assert {"baseline", "sink-sink=copy"} <= got  # its interval reaches the leader's: it may still be the best
    assert "sink-sink=insert" not in got and "seed" not in got
    assert target_cells(res, None) == set()
