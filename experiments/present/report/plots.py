"""The report's plots: matplotlib on the Agg canvas, embedded as PNG data URIs."""

from __future__ import annotations

import base64
import io
import itertools
import math
import statistics
from typing import Any, cast

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from experiments.results.model import Repeat, Scaling
from pipeline.wiring import FORWARD_SUFFIX

DPI = 144  # PNG pixels per inch; shown at 96 CSS px per inch (sharp on high-density screens)

C_WIN, C_OTHER, C_FAIL, C_INK, C_GRID = "#1f6feb", "#a8b1bd", "#d1242f", "#1f2328", "#e6e8eb"
STAGE_COLORS = ["#1f6feb", "#d97706", "#16a34a", "#9333ea", "#dc2626", "#0891b2", "#4b5563", "#db2777"]
RC: dict[str, Any] = {
    "font.size": 8.5, "axes.titlesize": 9, "axes.labelsize": 8.5, "xtick.labelsize": 8, "ytick.labelsize": 8,
    "legend.fontsize": 7.5, "axes.spines.top": False, "axes.spines.right": False, "axes.edgecolor": "#8c959f",
    "axes.grid": True, "grid.color": C_GRID, "grid.linewidth": 0.6, "axes.axisbelow": True,
    "xtick.color": "#57606a", "ytick.color": "#57606a", "axes.labelcolor": C_INK, "legend.frameon": False,
}  # fmt: skip


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


def group_plot(rows: list[dict[str, Any]], forwarding: bool = False) -> dict[str, Any]:
    """Throughput (bars: median, dots: repeats, line: the 95 % interval, else min–max) and, beside it, p50/p99
    latency (log) per cell — or, for an open-loop forwarding comparison, the backlog drain time after the stream
    ended."""
    n = len(rows)
    with _rc():
        fig = _figure(9.4, 0.36 * n + 0.95)
        ax1, ax2 = fig.subplots(1, 2, sharey=True, gridspec_kw={"width_ratios": [1.4, 1]})
        ys = list(range(n))
        top = max([max([*r["tps"], *(r.get("ci") or [])]) for r in rows if r["tps"]] or [1.0])
        for y, r in zip(ys, rows, strict=True):
            color = C_FAIL if r["failed"] else C_WIN if r["winner"] else C_OTHER
            if r["tps"]:
                med = statistics.median(r["tps"])
                ax1.barh(y, med, height=0.62, color=color, alpha=0.9 if r["winner"] else 0.75)
                lo, hi = r.get("ci") or (min(r["tps"]), max(r["tps"]))  # the 95 % interval (one repeat: none)
                ax1.hlines(y, max(lo, 0.0), hi, color=C_INK, lw=0.9)
                ax1.plot(r["tps"], [y] * len(r["tps"]), "o", ms=2.6, color=C_INK, alpha=0.75)
                right = max([*r["tps"], *(r.get("ci") or [])])
                ax1.text(right + top * 0.012, y, f"{med:,.0f}", va="center", fontsize=7.5, color=C_INK)
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
        ax1.set_xlabel("committed readings/s (bar: median, line: 95 % interval, dots: repeats)")
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


def usl_plot(scaling: Scaling) -> dict[str, Any]:
    """Throughput per step (dots: repeats' median, line: its 95 % interval) and the fitted USL curve, with linear
    scaling from one process for reference."""
    with _rc():
        fig = _figure(6.2, 3.0)
        ax = fig.subplots()
        for s in scaling.steps:
            if s.median is None:
                continue
            if s.ci95:
                ax.vlines(s.n, max(s.ci95[0], 0.0), s.ci95[1], color=C_INK, lw=0.9)
            ax.plot([s.n], [s.median], "o", ms=5, color=C_WIN, mec=C_INK, mew=0.5)
        f = scaling.fit
        if f is not None:
            ns = [p[0] for p in f.curve]
            ax.plot(ns, [p[1] for p in f.curve], "-", color=C_WIN, lw=1.2,
                    label=f"USL: σ = {f.sigma.value:.3f}, κ = {f.kappa.value:.4f}")  # fmt: skip
            ax.plot(ns, [f.lam.value * n for n in ns], ":", color=C_OTHER, lw=1.0, label="linear (λN)")
            top = max([p[1] for p in f.curve] + [s.median or 0 for s in scaling.steps])
            ax.set_ylim(0, top * 1.15)
            ax.legend(loc="upper left")
        ax.set_xlabel(f"{scaling.key} (processes)")
        ax.set_ylabel("committed readings/s")
        ax.set_xlim(left=0)
        return _png(fig)
