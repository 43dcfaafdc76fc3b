"""Profiles in the report: the top functions of a stage's cProfile / yappi file, and where its files are; the
sampled (py-spy) flame graphs of the measured repeats, their top functions, and the sampling cost."""

from __future__ import annotations

import linecache
import os
import pstats
import re
import shlex
from functools import cache
from pathlib import Path
from typing import Any

from experiments.analysis import sampling_cost as cost_analysis
from experiments.analysis import stacks as stack_analysis
from experiments.plan.matrix import DEFAULT_RATE_HZ
from experiments.present import flamegraph
from experiments.present.flamegraph import memory_commands
from experiments.results.model import CellResult, Results
from experiments.results.storage import ROOT

TOP_N = 10

# own-time entries that are a process waiting, not working
IDLE = ("select.epoll", "select.poll", "select.select", "select.kqueue", "select.devpoll", "time.sleep",
        "_thread.lock", "_thread.RLock", "threading.py", "sleep asyncio/tasks.py")  # fmt: skip
# cumulative-time entries that wrap everything (runpy, the event loop, imports): hidden from the cumulative table
SCAFFOLD = ("<frozen runpy>", "builtins.exec", "_contextvars.Context.run", "asyncio/runners.py",
            "asyncio/base_events.py", "asyncio/events.py", "selectors.py", "<frozen importlib", "pipeline/runtime.py",
            "uvloop")  # fmt: skip


def _short_path(file: str, root: Path) -> str:
    if file.startswith("<") or file == "~":
        return file
    p = file.replace("\\", "/")
    for marker in ("/site-packages/", "/dist-packages/"):
        if marker in p:
            return p.split(marker, 1)[1]
    for base in (root, ROOT):
        r = str(base).rstrip("/") + "/"
        if p.startswith(r):
            return p[len(r) :]
    m = re.search(r"/lib/python3\.\d+/(.*)$", p)
    return m.group(1) if m else p


def _func_name(key: tuple[str, int, str], root: Path) -> tuple[str, str]:
    """(function, where) in readable form."""
    file, line, func = key
    if file == "~" and line == 0:
        m = re.fullmatch(r"<method '([^']+)' of '([^']+)' objects>", func)
        if m:
            return f"{m.group(2)}.{m.group(1)}", "built-in"
        m = re.fullmatch(r"<built-in method ([^>]+)>", func)
        if m:
            return m.group(1), "built-in"
        return func.strip("<>"), "built-in"
    return func, f"{_short_path(file, root)}:{line}"


def _is(patterns: tuple[str, ...], name: str, where: str) -> bool:
    text = f"{name} {where}"
    return any(p in text for p in patterns)


@cache
def _load_stats(path: str) -> pstats.Stats | None:
    try:
        return pstats.Stats(path)
    except Exception:  # a truncated or foreign file: the report says it could not be read
        return None


def profile_tables(path: Path, root: Path, *, coroutines: bool = False) -> dict[str, Any] | None:
    """Top functions by own and by cumulative time (and, for yappi files, the coroutines by wall time)."""
    st = _load_stats(str(path))
    if st is None:
        return None
    raw: dict[Any, Any] = getattr(st, "stats", {})
    total = float(getattr(st, "total_tt", 0.0)) or sum(v[2] for v in raw.values()) or 1.0
    rows = []
    for key, (cc, nc, tt, ct, _callers) in raw.items():
        name, where = _func_name(key, root)
        rows.append({
            "name": name, "where": where, "calls": nc if nc == cc else f"{nc}/{cc}", "own": tt, "cum": ct,
            "own_pct": tt / total, "cum_pct": ct / total, "idle": _is(IDLE, name, where),
            "key": key,
        })  # fmt: skip
    own = sorted(rows, key=lambda r: r["own"], reverse=True)[:TOP_N]
    cum = [r for r in sorted(rows, key=lambda r: r["cum"], reverse=True) if not _is(SCAFFOLD, r["name"], r["where"])]
    cum = [r for r in cum if r["name"] not in ("<module>", "main")][:TOP_N]
    idle = sum(r["own"] for r in rows if r["idle"])
    hottest = next((r for r in sorted(rows, key=lambda r: r["own"], reverse=True) if not r["idle"]), None)
    out: dict[str, Any] = {"total": total, "idle": idle, "own": own, "cum": cum, "hottest": hottest}
    if coroutines:
        co = []
        for r in sorted(rows, key=lambda r: r["cum"], reverse=True):
            file, line, _ = r["key"]
            if file.startswith("<") or not line or _is(SCAFFOLD, r["name"], r["where"]):
                continue
            if linecache.getline(file, line).lstrip().startswith("async def"):
                co.append(r)
            if len(co) >= TOP_N:
                break
        out["coroutines"] = co
    return out


def cell_profiles(cell: CellResult, roots: list[Path], run_dir: Path, order: list[str]) -> list[dict[str, Any]]:
    if cell.profile is None:
        return []
    out = []
    stages = sorted(cell.profile.files, key=lambda s: (order.index(s) if s in order else len(order), s))
    for stage in stages:
        kinds = cell.profile.files[stage]
        entry: dict[str, Any] = {
            "stage": stage, "files": [], "cprofile": None, "yappi": None, "missing": [], "snakeviz": None,
        }  # fmt: skip
        for kind, stored in kinds.items():
            full = stack_analysis.resolve(stored, roots)
            href = os.path.relpath(full, run_dir)
            entry["files"].append({"kind": kind, "href": href, "path": stored, "exists": full.exists()})
            if not full.exists():
                entry["missing"].append(stored)
                continue
            if kind == "cprofile":
                entry["cprofile"] = profile_tables(full, roots[0])
                entry["snakeviz"] = "snakeviz " + shlex.quote(stored)
            elif kind == "yappi_pstat":
                entry["yappi"] = profile_tables(full, roots[0], coroutines=True)
                entry["snakeviz"] = entry["snakeviz"] or "snakeviz " + shlex.quote(stored)
        entry["tables"] = entry["cprofile"] or entry["yappi"]
        out.append(entry)
    return out


# ------------------------------------------------------------------------------- sampling profiles (py-spy)
def sampled_profiles(cell: CellResult, roots: list[Path], run_dir: Path, order: list[str]) -> dict[str, Any] | None:
    """Per stage (in ``order``), from the cell's sampled timed repeats merged: the flame graph (SVG, embedded),
    the top functions by self samples (busy and idle waits apart), and the files with the command to open each.
    None when no repeat of the cell was sampled."""
    reps = [r for r in cell.repeats if not r.pilot and r.sampled is not None]
    if not reps:
        return None
    problems = sorted({r.sampled.problem for r in reps if r.sampled and r.sampled.problem})
    stacks = stack_analysis.cell_stacks(cell, roots)
    views = next((r.sampled.views for r in reversed(reps) if r.sampled and r.sampled.views), {})
    stages = []
    for stage in sorted(stacks, key=lambda s: (order.index(s) if s in order else len(order), s)):
        st = stacks[stage]
        files = []
        for kind, stored in views.get(stage, {}).items():
            full = stack_analysis.resolve(stored, roots)
            command = flamegraph.open_commands({kind: stored}).get(kind)
            files.append({"kind": kind, "href": os.path.relpath(full, run_dir), "path": stored,
                          "exists": full.exists(), "command": command})  # fmt: skip
        busy = stack_analysis.top_self(st, TOP_N, busy_only=True)
        waits = [h for h in stack_analysis.top_self(st, 3 * TOP_N) if h.idle][:5]
        stages.append({
            "stage": stage, "samples": sum(st.values()), "idle": stack_analysis.idle_share(st), "busy": busy,
            "waits": waits, "hottest": busy[0] if busy else None, "files": files,
            "svg": flamegraph.flamegraph_svg(st, f"{cell.id} · {stage}", min_px=1.0),
        })  # fmt: skip
    rate = reps[-1].sampled.rate_hz if reps[-1].sampled else DEFAULT_RATE_HZ
    return {"repeats": len(reps), "rate_hz": rate, "stages": stages, "problems": problems}


def sampling_cost(res: Results) -> dict[str, Any] | None:
    """The run's sampling cost (``experiments.analysis.sampling_cost.cost``) as the report states it."""
    return cost_analysis.cost_record(res)


def memory_profile(res: Results, roots: list[Path], run_dir: Path) -> dict[str, Any] | None:
    """``run --memory-profile``'s repeat as the report links it: the cell, the stage, why, and each file (the memray
    capture and its flame graph) with a link from the report and the command that opens it."""
    mp = res.memory_profile
    if not mp:
        return None
    files = []
    for kind, stored in mp.get("files", {}).items():
        full = stack_analysis.resolve(stored, roots)
        files.append({"kind": kind, "href": os.path.relpath(full, run_dir), "path": stored, "exists": full.exists(),
                      "command": memory_commands({kind: stored}).get(kind)})  # fmt: skip
    return {**mp, "links": files}
