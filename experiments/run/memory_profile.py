"""``telemetry-bench run --memory-profile [CELL]``: after the cells, one extra repeat with one stage under memray.

Which cell: the one named; else the matrix's ``overload`` cell (10× the best rate: where memory is at stake); else
the cell whose stage memory grew most over its timed repeats. Which stage: the one whose RSS grew most in that
cell's counted repeats (``monitor.ResourceMonitor`` samples every stage's RSS about four times a second: growth = the
series' last RSS − its first; PostgreSQL and Redis are C servers memray cannot run, so they are never chosen). That
stage is launched as ``python -m memray run --output <stage>.memray.bin -m pipeline.<stage> …`` (the orchestrator's
``python_prefix``, as the profiled repeat launches stages under cProfile); after the repeat ``memray flamegraph``
writes ``<stage>.memray.html`` beside it, under ``profiles/<run>/<cell>/``. The repeat is of kind ``memory``, not
counted: a tracer changes what it measures. ``results.json`` keeps it as ``memory_profile``; the report links both
files.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from experiments.measure.window import SERVERS  # sampled like stages, but C servers: memray cannot run them
from experiments.results.model import CellResult, Results, counted
from experiments.results.storage import ROOT
from experiments.run.context import RunContext


def growth(cell: CellResult) -> dict[str, int]:
    """Stage → the most its RSS grew over one of the cell's counted repeats (last − first of its RSS series)."""
    out: dict[str, int] = {}
    for rep in counted(cell):
        for stage, r in rep.resources.items():
            if stage in SERVERS or not r.series:
                continue
            grew = int(r.series[-1][2] - r.series[0][2])
            out[stage] = max(out.get(stage, grew), grew)
    return out


def pick(res: Results, named: str | None) -> tuple[str, str, str] | None:
    """(cell id, stage, why) of the memory-profiled repeat; None when no cell has a stage's memory series."""
    by_id = {c.id: c for c in res.cells}
    if named:
        if named not in by_id:
            raise ValueError(f"--memory-profile {named!r}: no such cell; cells: {', '.join(by_id)}")
        cells, why = [by_id[named]], "the cell named"
    elif "overload" in by_id:
        cells, why = [by_id["overload"]], "the matrix's overload cell"
    else:
        cells, why = list(by_id.values()), "the cell whose stage memory grew most"
    best: tuple[int, str, str] | None = None
    for c in cells:
        for stage, grew in growth(c).items():
            if best is None or grew > best[0]:
                best = (grew, c.id, stage)
    if best is None:
        return None
    grew, cid, stage = best
    return cid, stage, f"{why}; {stage} grew most ({grew / 2**20:+.1f} MiB over a timed repeat)"


def prefix(stage: str, out: Path) -> Callable[[str], list[str]]:
    """The orchestrator's python_prefix that runs ``stage`` (and no other) under ``memray run``."""

    def of(name: str) -> list[str]:
        return ["-m", "memray", "run", "--force", "--quiet", "--output", str(out)] if name == stage else []

    return of


def flamegraph(binary: Path, html: Path) -> str | None:
    """``memray flamegraph`` of ``binary`` into ``html``; the problem, or None."""
    proc = subprocess.run(
        [sys.executable, "-m", "memray", "flamegraph", "--force", "--output", str(html), str(binary)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    if proc.returncode != 0 or not html.exists():
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:]
        return f"memray flamegraph failed: {tail[0] if tail else proc.returncode}"
    return None


async def run(ctx: RunContext, named: str | None) -> dict[str, Any]:
    """The memory-profiled repeat of the run: ``results.memory_profile``."""
    if importlib.util.find_spec("memray") is None:
        return {"problem": "memray is not installed (pip install 'telemetry-bench[profiling]'): no memory profile"}
    chosen = pick(ctx.results, named)
    if chosen is None:
        return {"problem": "no cell has a stage memory series to choose from: no memory profile"}
    cid, stage, why = chosen
    out = ctx.profile_dir / cid / f"{stage}.memray.bin"
    out.parent.mkdir(parents=True, exist_ok=True)
    ctx.say(f"memory profile: {cid} · {stage} under memray ({why})")
    rep = await ctx.repeat(ctx.cell(cid), "memory", python_prefix=prefix(stage, out))
    record: dict[str, Any] = {"cell": cid, "stage": stage, "why": why, "failures": rep.failures, "files": {}}
    if not out.exists() or not out.stat().st_size:
        record["problem"] = f"memray wrote no {out.name} (see the stage's log under logs/{cid}/memory-profile)"
        return record
    html = out.with_suffix(".html")
    record["files"]["bin"] = _stored(out)
    problem = flamegraph(out, html)
    if problem is None:
        record["files"]["flamegraph"] = _stored(html)
    record["problem"] = problem
    used = rep.resources.get(stage)
    record["peak_rss_bytes"] = used.peak_rss_bytes if used else None
    return record


def _stored(p: Path) -> str:
    """As results.json keeps a path: relative to the repository when inside it."""
    return str(p.relative_to(ROOT) if p.is_relative_to(ROOT) else p)
