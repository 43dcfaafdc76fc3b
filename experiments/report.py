"""The HTML report: ``reports/<run-id>/index.html`` from ``results.json``, and ``reports/index.html`` listing runs.

    telemetry-bench report [RUN]      # rebuild one run's report (default: the newest run) and the runs index

Self-contained: one HTML file per run, plots embedded as PNG data URIs (matplotlib, Agg canvas), inline CSS, no
script and nothing fetched from the network; links to profiles are relative, so the report opens from disk.
Rebuilding is always possible: the report is derived from ``results.json`` (and, when present, the cProfile/yappi
files under ``profiles/`` and the latest pytest-benchmark save under ``.benchmarks/``).

Rules, stated in the report too:

- **winner of a comparison** (a ``[[groups]]`` entry of the matrix): among the cells that did not fail their
  accounting, the highest median throughput over the timed repeats. In an open-loop comparison (no cell at max
  rate) throughput is pinned to the offered rate, so the winner is the lowest median p99 latency among the cells
  whose throughput is not below the best beyond noise.
- **within noise**: ``experiments.compare.diff`` — beyond noise only with ≥ 2 repeats each, non-overlapping min–max
  ranges, and Welch's t-test p < 0.05.
- **hottest function** of a stage: the most own time (cProfile ``tottime``) excluding idle waits (the event loop's
  ``epoll.poll``, ``select``, ``time.sleep``, lock waits).
"""

from __future__ import annotations

import base64
import collections
import io
import itertools
import json
import linecache
import math
import os
import pstats
import re
import shlex
import statistics
from collections.abc import Iterable
from datetime import datetime
from functools import cache
from pathlib import Path
from typing import Any, cast

import jinja2
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from experiments import compare
from experiments.promql import quantiles
from experiments.results import CellResult, Repeat, Results
from pipeline.wiring import FORWARD_SUFFIX

ROOT = Path(__file__).resolve().parent.parent
TEMPLATES = Path(__file__).resolve().parent / "templates"
UNSTABLE_CV = 0.10
TOP_N = 10
DPI = 144  # PNG pixels per inch; shown at 96 CSS px per inch (sharp on high-density screens)

# own-time entries that are a process waiting, not working
IDLE = ("select.epoll", "select.poll", "select.select", "select.kqueue", "select.devpoll", "time.sleep",
        "_thread.lock", "_thread.RLock", "threading.py", "sleep asyncio/tasks.py")  # fmt: skip
# cumulative-time entries that wrap everything (runpy, the event loop, imports): hidden from the cumulative table
SCAFFOLD = ("<frozen runpy>", "builtins.exec", "_contextvars.Context.run", "asyncio/runners.py",
            "asyncio/base_events.py", "asyncio/events.py", "selectors.py", "<frozen importlib", "pipeline/runtime.py",
            "uvloop")  # fmt: skip

C_WIN, C_OTHER, C_FAIL, C_INK, C_GRID = "#1f6feb", "#a8b1bd", "#d1242f", "#1f2328", "#e6e8eb"
STAGE_COLORS = ["#1f6feb", "#d97706", "#16a34a", "#9333ea", "#dc2626", "#0891b2", "#4b5563", "#db2777"]
RC: dict[str, Any] = {
    "font.size": 8.5, "axes.titlesize": 9, "axes.labelsize": 8.5, "xtick.labelsize": 8, "ytick.labelsize": 8,
    "legend.fontsize": 7.5, "axes.spines.top": False, "axes.spines.right": False, "axes.edgecolor": "#8c959f",
    "axes.grid": True, "grid.color": C_GRID, "grid.linewidth": 0.6, "axes.axisbelow": True,
    "xtick.color": "#57606a", "ytick.color": "#57606a", "axes.labelcolor": C_INK, "legend.frameon": False,
}  # fmt: skip


# ------------------------------------------------------------------------------------------------ formatting
def f_int(v: float | None) -> str:
    return "–" if v is None else f"{v:,.0f}"


def f_ms(v: float | None) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "–"
    a = abs(v)
    return f"{v:,.3f}" if a < 1 else f"{v:,.2f}" if a < 10 else f"{v:,.1f}" if a < 100 else f"{v:,.0f}"


def f_pct(v: float | None, digits: int = 1) -> str:
    return "–" if v is None else f"{v * 100:.{digits}f} %"


def f_bytes(v: float | None) -> str:
    if v is None:
        return "–"
    for unit, size in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if abs(v) >= size:
            return f"{v / size:,.1f} {unit}"
    return f"{v:,.0f} B"


def f_s(v: float | None) -> str:
    if v is None:
        return "–"
    if v >= 1:
        return f"{v:,.2f} s"
    if v >= 1e-3:
        return f"{v * 1e3:,.1f} ms"
    if v >= 1e-6:
        return f"{v * 1e6:,.1f} µs"
    return f"{v * 1e9:,.0f} ns"


def f_ratio(r: float | None) -> str:
    """A speed-up as "3.4×" when large, else as a percentage change."""
    if r is None:
        return "–"
    if r >= 1.5 or r <= 1 / 1.5:
        return f"{r:,.1f}×" if r >= 1.5 else f"{1 / r:,.1f}× less"
    return f"{r - 1:+.1%}".replace("%", " %")


def _times(r: float) -> str:
    return f"{r:,.2f}×" if r < 10 else f"{r:,.0f}×" if r >= 100 else f"{r:,.1f}×"


# ------------------------------------------------------------------------------------------------ plotting
def _figure(w: float, h: float) -> Figure:
    fig = Figure(figsize=(w, h), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _png(fig: Figure) -> dict[str, Any]:
    """The figure as an embedded PNG (quantized to a small palette: a third of the bytes, same look)."""
    from PIL import Image

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, facecolor="white")
    buf.seek(0)
    img = Image.open(buf).convert("RGB").quantize(colors=96, method=Image.Quantize.MEDIANCUT)
    out = io.BytesIO()
    img.save(out, format="PNG", optimize=True)
    w, h = fig.get_size_inches()
    return {
        "src": "data:image/png;base64," + base64.b64encode(out.getvalue()).decode("ascii"),
        "width": round(w * 96),
        "height": round(h * 96),
    }


def _log_axis(ax: Any, axis: str = "x") -> None:
    """Log scale with plain numbers (1, 2, 5 per decade when the span allows), no minor labels."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    a = ax.xaxis if axis == "x" else ax.yaxis
    lo, hi = ax.get_xlim() if axis == "x" else ax.get_ylim()
    decades = math.log10(hi / lo) if lo > 0 and hi > lo else 1.0
    subs = (1.0, 2.0, 5.0) if decades <= 1.6 else (1.0, 3.0) if decades <= 3.2 else (1.0,)
    a.set_major_locator(LogLocator(base=10, subs=subs))
    a.set_major_formatter(FuncFormatter(lambda v, _: f"{v:,.0f}" if v >= 1 else f"{v:g}"))
    a.set_minor_formatter(NullFormatter())


def _rc() -> Any:
    import matplotlib

    return matplotlib.rc_context(cast(Any, RC))  # RC's keys are valid rcParams; the stubs want Literal keys


def _median(vals: Iterable[float | None]) -> float | None:
    v = [x for x in vals if x is not None and not (isinstance(x, float) and math.isnan(x))]
    return statistics.median(v) if v else None


def _failed(c: CellResult) -> bool:
    return bool(c.summary.failed) if c.summary else any(not r.ok for r in c.repeats)


def group_plot(rows: list[dict[str, Any]], forwarding: bool = False) -> dict[str, Any]:
    """Throughput (bars: median, dots: repeats, line: min–max) and, beside it, p50/p99 latency (log) per cell —
    or, for an open-loop forwarding comparison, the backlog drain time after the stream ended."""
    n = len(rows)
    with _rc():
        fig = _figure(9.4, 0.36 * n + 0.95)
        ax1, ax2 = fig.subplots(1, 2, sharey=True, gridspec_kw={"width_ratios": [1.4, 1]})
        ys = list(range(n))
        top = max([max(r["tps"]) for r in rows if r["tps"]] or [1.0])
        for y, r in zip(ys, rows, strict=True):
            color = C_FAIL if r["failed"] else C_WIN if r["winner"] else C_OTHER
            if r["tps"]:
                med = statistics.median(r["tps"])
                ax1.barh(y, med, height=0.62, color=color, alpha=0.9 if r["winner"] else 0.75)
                ax1.hlines(y, min(r["tps"]), max(r["tps"]), color=C_INK, lw=0.9)
                ax1.plot(r["tps"], [y] * len(r["tps"]), "o", ms=2.6, color=C_INK, alpha=0.75)
                ax1.text(max(r["tps"]) + top * 0.012, y, f"{med:,.0f}", va="center", fontsize=7.5, color=C_INK)
            if forwarding:
                d = r["drains"]
                if d:
                    ax2.hlines(y, min(d), max(d), color=color, lw=0.9)
                    ax2.plot(d, [y] * len(d), "o", ms=2.8, color=color, alpha=0.55, mec="none")
                    ax2.plot([statistics.median(d)], [y], "D", ms=6, color=color, mec=C_INK, mew=0.5)
                continue
            p99, p50 = r["p99s"], r["p50s"]
            if p99:
                ax2.plot(p99, [y] * len(p99), "D", ms=2.8, color=color, alpha=0.55, mec="none")
                ax2.plot([statistics.median(p99)], [y], "D", ms=6, color=color, mec=C_INK, mew=0.5)
            if p50:
                ax2.plot([statistics.median(p50)], [y], "o", ms=5.5, mfc="white", mec=color, mew=1.3)
        ax1.set_yticks(ys, [r["label"] for r in rows])
        ax1.invert_yaxis()
        ax1.set_xlim(0, top * 1.16)
        ax1.set_xlabel("committed readings/s (bar: median, dots: repeats)")
        ax1.grid(axis="y", visible=False)
        ax1.xaxis.set_major_formatter(lambda x, _: f"{x / 1000:,.0f}k" if top >= 10_000 else f"{x:,.0f}")
        if forwarding:
            ax2.set_xlim(left=0)
            ax2.set_xlabel("backlog drain after the stream ended, s (◆ median)")
        else:
            ax2.set_xscale("log")
            if ax2.lines:
                _log_axis(ax2)
            ax2.set_xlabel("latency, ms (◆ p99 median, ○ p50)")
        ax2.grid(axis="y", visible=False)
        ax2.tick_params(axis="y", left=False)
        return _png(fig)


def latency_plot(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Per cell: exact p50/p95/p99/max (filled) and PromQL-interpolated p50/p95/p99 (hollow), log ms."""
    n = len(rows)
    with _rc():
        fig = _figure(9.4, 0.3 * n + 1.15)
        ax = fig.subplots()
        marks = {"p50": "o", "p95": "s", "p99": "D"}
        for y, r in enumerate(rows):
            ex, pr = r["exact"], r["prom"]
            vals = [v for v in (ex.get("p50"), ex.get("max")) if v]
            if len(vals) == 2:
                ax.hlines(y - 0.12, vals[0], vals[1], color=C_OTHER, lw=1)
            for p, m in marks.items():
                if ex.get(p):
                    ax.plot(ex[p], y - 0.12, m, ms=5, color=C_WIN, label=f"exact {p}" if y == 0 else None)
                if pr.get(p):
                    ax.plot(pr[p], y + 0.16, m, ms=5, mfc="white", mec="#d97706", mew=1.2,
                            label=f"Prometheus {p}" if y == 0 else None)  # fmt: skip
            if ex.get("max"):
                ax.plot(ex["max"], y - 0.12, "|", ms=8, color=C_INK, label="exact max" if y == 0 else None)
        ax.set_yticks(range(n), [r["id"] for r in rows])
        ax.invert_yaxis()
        ax.set_xscale("log")
        if ax.lines:
            _log_axis(ax)
        ax.set_xlabel("latency, ms (log scale)")
        ax.grid(axis="y", visible=False)
        handles, labels = ax.get_legend_handles_labels()
        if handles:
            fig.legend(handles, labels, loc="outside upper center", ncol=7, handletextpad=0.3, columnspacing=1.0)
        return _png(fig)


def timeline_plot(rep: Repeat, per_entry: int, cores: int | None = None) -> dict[str, Any] | None:
    """Queue lengths (≈ readings) and per-stage CPU (cores busy) over the repeat."""
    if not rep.queue_len and not rep.resources:
        return None
    with _rc():
        fig = _figure(9.4, 2.05)
        ax1, ax2 = fig.subplots(1, 2)
        for i, (key, series) in enumerate(sorted(rep.queue_len.items())):
            if not series:
                continue
            label = "forward queue" if key.endswith(FORWARD_SUFFIX) else "writer queue"
            ax1.plot([p[0] for p in series], [p[1] * per_entry for p in series], lw=1.3,
                     color=STAGE_COLORS[i % len(STAGE_COLORS)], label=label)  # fmt: skip
        ax1.set_xlabel("s since start")
        ax1.set_ylabel("queued readings")
        ax1.set_ylim(bottom=0)
        ax1.yaxis.set_major_formatter(lambda x, _: f"{x / 1000:,.0f}k" if x >= 10_000 else f"{x:,.0f}")
        if ax1.get_legend_handles_labels()[0]:
            ax1.legend(loc="upper right")
        for i, (stage, res) in enumerate(sorted(rep.resources.items())):
            s = res.series
            if len(s) < 2:
                continue
            t = [(a[0] + b[0]) / 2 for a, b in itertools.pairwise(s)]
            u = [(b[1] - a[1]) / (b[0] - a[0]) if b[0] > a[0] else 0.0 for a, b in itertools.pairwise(s)]
            ax2.plot(t, u, lw=1.2, color=STAGE_COLORS[i % len(STAGE_COLORS)], label=stage)
        ax2.axhline(1.0, color=C_INK, lw=0.7, ls="--", alpha=0.5)
        ax2.set_ylim(0, min(ax2.get_ylim()[1], (cores or 64) + 0.25))
        ax2.set_xlabel("s since start")
        ax2.set_ylabel("CPU, cores busy")
        if ax2.get_legend_handles_labels()[0]:
            ax2.legend(loc="upper right", ncol=2)
        return _png(fig)


# ------------------------------------------------------------------------------------------------- profiles
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


def _resolve(stored: str, roots: list[Path]) -> Path:
    p = Path(stored)
    if p.is_absolute():
        return p
    for r in roots:
        if (r / p).exists():
            return r / p
    return roots[0] / p


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
            full = _resolve(stored, roots)
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


# -------------------------------------------------------------------------------------------- derived data
def _label(cell: CellResult, keys: list[str]) -> str:
    parts = [f"{k}={cell.params.get(k, cell.varied.get(k))}" for k in keys]
    text = ", ".join(parts) if parts else cell.id
    return text + (" (baseline)" if cell.id == "baseline" else "")


def cell_latency(cell: CellResult) -> dict[str, Any]:
    prom = [_prom_hist(r, "latency_to_db_insert") for r in cell.repeats]
    s = cell.summary
    ex = s.latency_ms if s else None
    return {
        "id": cell.id,
        "exact": {"p50": ex.p50, "p95": ex.p95, "p99": ex.p99, "max": ex.max, "n": ex.n} if ex else {},
        "sent_p99": s.latency_sent_ms.p99 if s else None,
        "prom": {p: _median(q.get(p) for q in prom) for p in ("p50", "p95", "p99")},
    }


def representative(cell: CellResult) -> Repeat | None:
    """The repeat with the median throughput (the lower middle one for an even count)."""
    reps = [r for r in cell.repeats if r.throughput_rps is not None] or list(cell.repeats)
    if not reps:
        return None
    ordered = sorted(reps, key=lambda r: r.throughput_rps or 0.0)
    return ordered[(len(ordered) - 1) // 2]


def ceiling_of(res: Results) -> float | None:
    return res.ceilings.copy_binary_rps if res.ceilings else None


def headline(res: Results) -> dict[str, Any]:
    """The best configuration (highest median throughput, not failed), its share of the ceiling, × the seed."""
    ok = [c for c in res.cells if c.summary and c.summary.throughput_rps and not _failed(c)]
    h: dict[str, Any] = {"best": None, "cells": len(res.cells), "failed": [c.id for c in res.cells if _failed(c)]}
    if not ok:
        return h
    best = max(ok, key=lambda c: c.summary.throughput_rps or 0.0 if c.summary else 0.0)
    assert best.summary is not None
    tp = best.summary.throughput_rps or 0.0
    ceiling = ceiling_of(res)
    seed = next((c for c in res.cells if c.id == "seed"), None)
    seed_tp = seed.summary.throughput_rps if seed and seed.summary else None
    bn = best.summary.bottleneck
    h.update(
        best=best.id,
        title=best.title,
        rps=tp,
        fraction=best.summary.fraction_of_ceiling or (tp / ceiling if ceiling else None),
        ceiling=ceiling,
        seed_rps=seed_tp,
        vs_seed=(tp / seed_tp) if seed_tp else None,
        seed_open_loop=bool(seed and not seed.params.get("max_rate", False)),
        seed_rate=seed.params.get("rate") if seed else None,
        seed_failed=bool(seed and _failed(seed)),
        bottleneck=bn.stage if bn else None,
        bottleneck_reason=bn.reason if bn else None,
        cv=best.summary.cv,
    )
    return h


def _stage_order(cell: CellResult) -> list[str]:
    """The bottleneck's stage(s) first, then by CPU use during the window."""
    s = cell.summary
    rep = representative(cell)
    util = {k: (v.cpu_util_window or 0.0) for k, v in rep.resources.items()} if rep else {}
    stages = list(cell.profile.files) if cell.profile else []
    first = []
    if s and s.bottleneck:
        b = s.bottleneck.stage
        first = [st for st in stages if st == b or (b == "writer" and st.startswith("writer"))]
    rest = sorted((st for st in stages if st not in first), key=lambda st: -util.get(st, 0.0))
    busiest = sorted(util, key=lambda k: -util[k])
    return first + rest + [b for b in busiest if b not in first and b not in rest]


def _prom_hist(rep: Repeat, name: str, scale: float = 1000.0) -> dict[str, float | None]:
    """PromQL quantiles of histogram ``name`` over every stage that has it (buckets summed by le), × scale."""
    summed: dict[str, float] = collections.defaultdict(float)
    for hists in rep.prometheus.values():
        for le, count in hists.get(name, {}).items():
            summed[le] += count
    if not summed:
        return {}
    return {k: (v * scale if v is not None else None) for k, v in quantiles(summed).items()}


def group_view(group: dict[str, Any], by_id: dict[str, CellResult], ceiling: float | None) -> dict[str, Any]:
    cells = [by_id[i] for i in group.get("cells", []) if i in by_id]
    keys = list(group.get("keys", []))
    open_loop = bool(cells) and all(not c.params.get("max_rate", False) for c in cells)
    forwarding = open_loop and any(c.params.get("forwarder", "none") != "none" for c in cells)
    rows: list[dict[str, Any]] = []
    for c in cells:
        s = c.summary
        tps = compare.throughputs(c)
        post = [_prom_hist(r, "forward_request_seconds") for r in c.repeats]
        rows.append({
            "id": c.id, "label": _label(c, keys), "cell": c, "tps": tps, "p99s": compare.p99s(c),
            "p50s": [r.latency_ms.p50 for r in c.repeats if r.latency_ms.p50 is not None],
            "drains": [r.drain_s for r in c.repeats],
            "post_p50": _median(q.get("p50") for q in post), "post_p99": _median(q.get("p99") for q in post),
            "median": _median(tps), "min": min(tps) if tps else None, "max": max(tps) if tps else None,
            "cv": s.cv if s else None, "unstable": bool(s and s.unstable), "failed": _failed(c),
            "fraction": (s.fraction_of_ceiling if s and s.fraction_of_ceiling else
                         (_median(tps) or 0) / ceiling if ceiling and tps else None),
            "p50": s.latency_ms.p50 if s else None, "p99": s.latency_ms.p99 if s else None,
            "bottleneck": s.bottleneck.stage if s and s.bottleneck else None, "winner": False, "vs_best": None,
            "rate": c.params.get("rate") or 0.0,
        })  # fmt: skip
    sentence, winner = _verdict(rows, open_loop, forwarding)
    best = next((x for x in rows if x["id"] == winner), None)
    for r in rows:
        r["winner"] = r["id"] == winner
        if best and best["median"] and r["median"] is not None:
            r["vs_best"] = r["median"] / best["median"]
    return {
        "name": group.get("name", ""),
        "title": group.get("title", ""),
        "vary": keys,
        "rows": rows,
        "missing": [i for i in group.get("cells", []) if i not in by_id],
        "open_loop": open_loop,
        "forwarding": forwarding,
        "sentence": sentence,
        "plot": group_plot(rows, forwarding) if rows else None,
    }


def _why(d: compare.Diff) -> str:
    """The reason inside noise_text's parentheses: "p=0.012", "ranges overlap"."""
    t = d.noise_text()
    return t[t.index("(") + 1 : -1] if "(" in t else t


def _by(winner: float, other: float, lower_is_better: bool) -> str:
    """ "2.40× the runner-up" / "+5.5 % over the runner-up" wording of a margin."""
    if lower_is_better:
        r = other / winner if winner else math.inf
        return f"{_times(r)} lower than" if r >= 1.5 else f"{1 - winner / other:.1%} lower than".replace("%", " %")
    r = winner / other if other else math.inf
    return f"{_times(r)}" if r >= 1.5 else f"{r - 1:+.1%} over".replace("%", " %")


def _verdict(rows: list[dict[str, Any]], open_loop: bool, forwarding: bool = False) -> tuple[str, str | None]:
    """The sentence naming the winner and by how much, or saying the difference is within noise."""
    failed = [r["label"] for r in rows if r["failed"]]
    note = f" Not ranked (failed their accounting): {', '.join(failed)}." if failed else ""
    cands = [r for r in rows if not r["failed"] and r["tps"]]
    if len(cands) < 2:
        if cands:
            return f"Only <b>{cands[0]['label']}</b> has results to rank.{note}", cands[0]["id"]
        return f"No cell of this comparison has results.{note}", None
    by_tp = sorted(cands, key=lambda r: r["median"], reverse=True)
    if open_loop:
        top = by_tp[0]
        kept = [r for r in by_tp if r is top or compare.diff(top["tps"], r["tps"]).significant is not True]
        behind = [r for r in by_tp if r not in kept]
        behind_text = (
            " Fell behind the offered rate (committed readings/s lower beyond noise): "
            + ", ".join(f"{r['label']} ({r['median']:,.0f}/s)" for r in behind)
            + "."
            if behind
            else ""
        )
        key = "drains" if forwarding else "p99s"
        ranked = sorted([r for r in kept if r[key]], key=lambda r: _median(r[key]) or 0.0)

        def show(v: float) -> str:
            return f"{v:,.2f} s" if forwarding else f"{f_ms(v)} ms"

        what = "the shortest backlog drain after the stream ended" if forwarding else "the lowest p99 latency"
        if len(ranked) >= 2:
            w, ru = ranked[0], ranked[1]
            d = compare.diff(w[key], ru[key])
            wv, rv = _median(w[key]) or 0.0, _median(ru[key]) or 0.0
            lead = (f"<b>{w['label']}</b> wins: it commits {w['median']:,.0f} readings/s (offered "
                    f"{w['rate']:,.0f}/s) with {what}, {show(wv)}")  # fmt: skip
            if show(wv) == show(rv):  # equal as shown: say so rather than name a winner
                metric = "backlog drain" if forwarding else "p99 latency"
                s = f"<b>{w['label']}</b> and {ru['label']} tie: both commit {w['median']:,.0f} readings/s (offered "
                s += f"{w['rate']:,.0f}/s) with the same {metric}, {show(wv)}."
            elif d.significant:
                s = f"{lead}, {_by(wv, rv, True)} the runner-up {ru['label']} ({show(rv)}) — beyond noise ({_why(d)})."
            elif d.significant is None:
                s = f"{lead}, against {show(rv)} for the runner-up {ru['label']} — one repeat each: noise unknown."
            else:
                s = (f"{lead}; the runner-up {ru['label']} ({show(rv)}) is <b>within noise</b> of it ({_why(d)}): "
                     "they tie.")  # fmt: skip
            return s + behind_text + note, w["id"]
        if ranked:
            w = ranked[0]
            lead = f"<b>{w['label']}</b> wins: the only cell keeping up ({w['median']:,.0f} readings/s)."
            return lead + behind_text + note, w["id"]
    w, ru, last = by_tp[0], by_tp[1], by_tp[-1]
    d = compare.diff(ru["tps"], w["tps"])
    lead = (f"<b>{w['label']}</b> wins with {w['median']:,.0f} readings/s, {_by(w['median'], ru['median'], False)} "
            f"the runner-up {ru['label']} ({ru['median']:,.0f}/s)")  # fmt: skip
    if f"{w['median']:,.0f}" == f"{ru['median']:,.0f}":
        s = f"<b>{w['label']}</b> and {ru['label']} tie at {w['median']:,.0f} readings/s."
    elif d.significant:
        s = f"{lead} — beyond noise ({_why(d)})."
    elif d.significant is None:
        s = f"{lead} — one repeat each, so the noise is unknown: treat as indicative."
    else:
        s = f"{lead}, but that difference is <b>within noise</b> ({_why(d)}): {w['label']} and {ru['label']} tie."
    if last is not ru and last["median"]:
        s += (
            f" Slowest: {last['label']} ({last['median']:,.0f}/s); the winner is {_times(w['median'] / last['median'])}"
        )
        s += " it."
    return s + note, w["id"]


def _flags(res: Results) -> dict[str, list[dict[str, Any]]]:
    red, amber = [], []
    for c in res.cells:
        s = c.summary
        if _failed(c):
            msgs: list[str] = []
            for r in c.repeats:
                msgs.extend(m for m in r.failures if m not in msgs)
            acct = f"lost {s.lost:,}, duplicated {s.duplicated:,} of {s.readings_generated:,} generated" if s else ""
            red.append({"cell": c.id, "kind": "FAILED accounting", "text": "; ".join([acct, *msgs[:3]]).strip("; ")})
    for c in res.cells:
        s = c.summary
        if s and (s.unstable or (s.cv is not None and s.cv > UNSTABLE_CV)):
            red.append({
                "cell": c.id, "kind": "UNSTABLE",
                "text": f"CV {f_pct(s.cv)} > {f_pct(UNSTABLE_CV, 0)} over {len(c.repeats)} repeats: "
                f"{f_int(s.throughput_min_rps)} – {f_int(s.throughput_max_rps)} readings/s",
            })  # fmt: skip
    if res.finished is None:
        amber.append({"cell": "run", "kind": "INCOMPLETE", "text": "the run has not finished (still running or "
                      "interrupted): this report shows the repeats written so far"})  # fmt: skip
    for c in res.cells:
        short = [r.index + 1 for r in c.repeats if not r.window_complete]
        if short:
            amber.append({"cell": c.id, "kind": "SHORT WINDOW", "text": f"repeat(s) {short} ended before "
                          "warm-up + measured window elapsed: throughput over a shorter window"})  # fmt: skip
        if c.profile and c.profile.failures:
            amber.append({"cell": c.id, "kind": "PROFILED RUN FAILED", "text": "; ".join(c.profile.failures[:2])})
    return {"red": red, "amber": amber}


def _pg(cell: CellResult) -> dict[str, Any]:
    reps = cell.repeats
    per_row = [
        r.pg.table_bytes / r.accounting["committed"]
        for r in reps
        if r.pg.table_bytes is not None and r.accounting.get("committed")
    ]
    cps = [r.pg.checkpoints for r in reps if r.pg.checkpoints is not None]
    return {
        "wal_per_reading": _median(r.pg.wal_bytes_per_reading for r in reps),
        "wal_bytes": _median(r.pg.wal_bytes for r in reps),
        "table_bytes": _median(r.pg.table_bytes for r in reps),
        "table_per_row": _median(per_row),
        "checkpoints": max(cps) if cps else None,
    }


def _params_line(cell: CellResult) -> str:
    p = cell.params
    if not p:
        return ""
    rate = "max rate" if p.get("max_rate") else f"{p.get('rate', 0):,.0f}/s offered"
    fwd = p.get("forwarder", "none")
    if fwd != "none":
        fwd = f"{fwd} POSTs ×{p.get('forward_batch')} from {p.get('forward_from')}"
    return " · ".join([
        f"{p.get('topology')}", f"{p.get('rpc')} RPC ×{p.get('readings_per_message')}", rate,
        f"{p.get('decoder')} decode", f"{p.get('queue')} queue ({p.get('queue_entry')})",
        f"{p.get('sink')} batch {p.get('batch_size') or 0:,}",
        f"{p.get('workers')} writer(s)", f"forward: {fwd}",
    ])  # fmt: skip


def cell_view(cell: CellResult, res: Results, roots: list[Path], run_dir: Path) -> dict[str, Any]:
    s = cell.summary
    rep = representative(cell)
    per_entry = int(cell.params.get("readings_per_message", 1)) if cell.params.get("queue_entry") == "batch" else 1
    order = _stage_order(cell)
    profiles = cell_profiles(cell, roots, run_dir, order)
    bn = s.bottleneck if s else None
    hot = None
    for p in profiles:  # the first stage in order (the bottleneck) with a readable profile
        t = p["tables"]
        if t and t.get("hottest"):
            hot = {"stage": p["stage"], **t["hottest"], "total": t["total"]}
            break
    util = (bn.evidence.get("cpu_util_window") if bn else None) or (
        {k: v.cpu_util_window for k, v in rep.resources.items() if v.cpu_util_window is not None} if rep else {}
    )
    return {
        "id": cell.id,
        "title": cell.title,
        "groups": cell.groups,
        "params": _params_line(cell),
        "s": s,
        "failed": _failed(cell),
        "repeats": len(cell.repeats),
        "rep_index": rep.index + 1 if rep else None,
        "timeline": timeline_plot(rep, per_entry, res.machine.get("cpu_logical")) if rep else None,
        "per_entry": per_entry,
        "bottleneck": bn,
        "util": util,
        "profiles": profiles,
        "profiler": cell.profile.profiler if cell.profile else None,
        "hot": hot,
        "pg": _pg(cell),
        "cpu_us": s.cpu_s_per_reading * 1e6 if s and s.cpu_s_per_reading else None,
        "fraction": s.fraction_of_ceiling if s else None,
        "sink": cell.params.get("sink", "–"),
        "batch": cell.params.get("batch_size"),
        "faults": fault_lines(cell),
    }


def fault_lines(cell: CellResult) -> list[str]:
    """One sentence per repeat of a fault cell: the fault, its recovery time, what it did, the expected loss."""
    out = []
    for r in cell.repeats:
        f = r.fault
        if not f:
            continue
        label = "profiled repeat" if r.index < 0 else f"repeat {r.index + 1}"
        if not f.get("injected"):
            out.append(f"{label}: {f['kind']} {f.get('note') or 'not injected'}")
            continue
        rec = f.get("recovery_s")
        line = f"{label}: {f['kind']} at {f['at_s']:g} s, " + (
            f"recovered in {rec:.2f} s" if rec is not None else "the affected path never moved again"
        )
        a = r.accounting
        line += f"; generated {a.get('generated', 0):,}, committed {a.get('committed', 0):,}, lost {a.get('lost', 0):,}"
        line += f", duplicated {a.get('duplicated', 0):,}"
        if f.get("detail"):
            line += f". {f['detail']}"
        if r.expected_failures:
            line += " (this design's loss, expected and reported: " + "; ".join(r.expected_failures) + ")"
        out.append(line)
    return out


# --------------------------------------------------------------------------------------- micro-benchmarks
def microbench(root: Path) -> dict[str, Any] | None:
    """The latest pytest-benchmark result of every benchmark under ``root/.benchmarks`` (the machine directory of
    the newest save; a partial run such as ``-k decode`` updates only its own rows) and its change from the save
    before."""
    newest = max((root / ".benchmarks").glob("*/*.json"), key=lambda p: (p.stat().st_mtime, p.name), default=None)
    if newest is None:
        return None
    latest: dict[str, tuple[dict[str, Any], str]] = {}
    before: dict[str, float] = {}
    meta: dict[str, Any] = {}
    for save in sorted(newest.parent.glob("*.json")):  # NNNN_... : oldest first
        try:
            data = json.loads(save.read_text())
        except (OSError, ValueError):
            continue
        meta = data
        for b in data.get("benchmarks", []):
            key = b.get("fullname") or b.get("name", "?")
            if key in latest and latest[key][0].get("stats", {}).get("median"):
                before[key] = latest[key][0]["stats"]["median"]
            latest[key] = (b, save.name.split("_", 1)[0])
    rows = []
    for key, (b, save_no) in latest.items():
        st = b.get("stats", {})
        items = (b.get("extra_info") or {}).get("items")
        prev = before.get(key)
        rows.append({
            "group": b.get("group") or "", "name": b.get("name", "?"), "median": st.get("median"),
            "iqr": st.get("iqr"), "min": st.get("min"), "ops": st.get("ops"), "rounds": st.get("rounds"),
            "per_item": st["median"] / items if items and st.get("median") else None, "n_items": items,
            "change": (st["median"] / prev - 1.0) if prev and st.get("median") else None, "save": save_no,
            "payload": (b.get("extra_info") or {}).get("bytes"),
        })  # fmt: skip
    rows.sort(key=lambda r: (r["group"], r["median"] or 0))
    commit = meta.get("commit_info", {})
    return {
        "dir": os.path.relpath(newest.parent, root),
        "newest": newest.name,
        "datetime": meta.get("datetime"),
        "commit": (commit.get("id") or "")[:8] + (" (dirty)" if commit.get("dirty") else ""),
        "rows": rows,
    }


# ------------------------------------------------------------------------------------------------- building
def _env() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(TEMPLATES)),
        autoescape=jinja2.select_autoescape(["html"]),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(
        int=f_int, ms=f_ms, pct=f_pct, bytes=f_bytes, secs=f_s, ratio=f_ratio, times=_times, median=_median
    )
    return env


def load(run_dir: Path) -> Results:
    return Results.model_validate_json((run_dir / "results.json").read_text())


def _when(iso: str | None) -> str:
    if not iso:
        return "–"
    try:
        return datetime.fromisoformat(iso).strftime("%Y-%m-%d %H:%M:%S UTC")
    except ValueError:
        return iso


def build_report(run_dir: Path, *, root: Path | None = None) -> Path:
    """Write ``run_dir/index.html`` from ``run_dir/results.json``; returns its path."""
    run_dir = run_dir.resolve()
    res = load(run_dir)
    # where profiles/ and .benchmarks/ live: the given root, else the reports directory's parent, then the repository
    roots = [root.resolve()] if root else list(dict.fromkeys([run_dir.parent.parent, ROOT]))
    by_id = {c.id: c for c in res.cells}
    ceiling = ceiling_of(res)
    groups = [group_view(g, by_id, ceiling) for g in res.matrix.get("groups", [])]
    lat_rows = [cell_latency(c) for c in res.cells if c.summary]
    cells = [cell_view(c, res, roots, run_dir) for c in res.cells]
    template = _env().get_template("run.html")
    html = template.render(
        res=res,
        created=_when(res.created),
        finished=_when(res.finished) if res.finished else None,
        head=headline(res),
        flags=_flags(res),
        groups=groups,
        cells=cells,
        latency=lat_rows,
        latency_plot=latency_plot(lat_rows) if lat_rows else None,
        ceiling=ceiling,
        micro=microbench(roots[0]),
        unstable_cv=UNSTABLE_CV,
        confidence=compare.CONFIDENCE,
        rebuild=f"telemetry-bench report {shlex.quote(res.run_id)}",
    )
    out = run_dir / "index.html"
    tmp = out.with_suffix(".html.tmp")
    tmp.write_text(html)
    tmp.replace(out)
    return out


def build_index(reports_dir: Path) -> Path:
    """Write ``reports_dir/index.html``: every run (newest first) with its headline, and the comparisons."""
    reports_dir = reports_dir.resolve()
    runs = []
    for d in sorted((p for p in reports_dir.iterdir() if p.is_dir()), key=lambda p: p.name, reverse=True):
        f = d / "results.json"
        if not f.exists():
            continue
        entry: dict[str, Any] = {"dir": d.name, "html": (d / "index.html").exists()}
        try:
            res = Results.model_validate_json(f.read_text())
        except Exception as exc:  # an unreadable file is listed, not fatal
            entry["error"] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:160]}"
            runs.append(entry)
            continue
        entry.update(
            res=res,
            head=headline(res),
            created=_when(res.created),
            unstable=[c.id for c in res.cells if c.summary and c.summary.unstable],
        )
        runs.append(entry)
    comparisons = sorted(p.name for p in reports_dir.glob("compare-*.md"))
    html = _env().get_template("index.html").render(runs=runs, comparisons=comparisons)
    out = reports_dir / "index.html"
    tmp = out.with_suffix(".html.tmp")
    tmp.write_text(html)
    tmp.replace(out)
    return out
