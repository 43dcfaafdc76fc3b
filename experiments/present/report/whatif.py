"""The report's what-if section (issue 20): per cell with a what-if run, the plot of throughput (or p99) against the
time added to each stage, the stages ranked by sensitivity, the prediction beside the real variant and the sentence;
for every cell, the command that runs its what-if."""

from __future__ import annotations

from typing import Any

from experiments.analysis import stats
from experiments.analysis import whatif as analysis
from experiments.present.report.plots import C_INK, STAGE_COLORS, _figure, _png, _rc
from experiments.results.model import Results, WhatIf


def _relative(w: WhatIf) -> dict[str, dict[float, list[float]]]:
    """Stage → amount → each repeat's figure relative to its undelayed neighbours (1 = unchanged)."""
    obs = analysis.observations(w.runs, w.metric)
    out: dict[str, dict[float, list[float]]] = {}
    if not any(o.stage == analysis.BASELINE for o in obs):
        return out
    for o, r in analysis.responses(obs, w.metric):
        rel = 1.0 / (1.0 + r) if w.metric == "throughput" else 1.0 + r
        out.setdefault(o.stage, {}).setdefault(o.x, []).append(rel)
    return out


def whatif_plot(w: WhatIf) -> dict[str, Any] | None:
    """One line per stage through the median relative figure at each amount, its 95 % interval as a band; the
    undelayed repeats at 0 %."""
    rel = _relative(w)
    base = rel.pop(analysis.BASELINE, {}).get(0.0, [])
    if not rel:
        return None
    order = [f.stage for f in w.fits] + [s for s in rel if s not in {f.stage for f in w.fits}]
    with _rc():
        fig = _figure(6.4, 3.2)
        ax = fig.subplots()
        b = stats.estimate(base)
        for i, stage in enumerate(s for s in order if s in rel):
            color = STAGE_COLORS[i % len(STAGE_COLORS)]
            xs, mid, lo, hi = [0.0], [b.median or 1.0], [b.lo or b.median or 1.0], [b.hi or b.median or 1.0]
            for x in sorted(rel[stage]):
                e = stats.estimate(rel[stage][x])
                xs.append(x * 100)
                mid.append(e.median or 1.0)
                lo.append(e.lo if e.lo is not None else e.median or 1.0)
                hi.append(e.hi if e.hi is not None else e.median or 1.0)
                ax.scatter([x * 100] * len(rel[stage][x]), rel[stage][x], s=7, color=color, alpha=0.5, lw=0)
            fit = next((f for f in w.fits if f.stage == stage), None)
            label = f"{stage}: {fit.text}" if fit else stage
            ax.plot(xs, mid, color=color, lw=1.6, marker="o", ms=3, label=label)
            ax.fill_between(xs, lo, hi, color=color, alpha=0.15, lw=0)
        top = max((x for s in rel.values() for x in s), default=0.5) * 100
        grid = [t * top / 50 for t in range(51)]
        if w.metric == "throughput":  # what a stage alone on the critical path would show: 1 / (1 + x)
            ax.plot(grid, [1 / (1 + g / 100) for g in grid], color=C_INK, lw=0.8, ls="--", label="sensitivity 1")
        else:
            ax.plot(grid, [1 + g / 100 for g in grid], color=C_INK, lw=0.8, ls="--", label="sensitivity 1")
        ax.axhline(1.0, color="#8c959f", lw=0.6)
        ax.set_xlabel("time added to the stage, % of its own time per reading")
        ax.set_ylabel("throughput ÷ undelayed" if w.metric == "throughput" else "p99 ÷ undelayed")
        ax.legend(loc="lower left" if w.metric == "throughput" else "upper left", fontsize=7)
        return _png(fig)


def _pct(v: float | None) -> str:
    return "–" if v is None else f"{v * 100:+.1f} %".replace("-", "−")


def _ci_pct(v: list[float] | None) -> str:
    return "" if not v else f" [{_pct(v[0])}, {_pct(v[1])}]"


def whatif_views(res: Results) -> dict[str, dict[str, Any]]:
    """Cell id → what the report shows of its what-if run."""
    out = {}
    for cid, w in res.whatif.items():
        out[cid] = {
            "w": w,
            "plot": whatif_plot(w),
            "fits": w.fits,
            "predictions": [
                {
                    "variant": ", ".join(f"{k} = {v}" for k, v in p.variant.items()),
                    "stage": p.stage,
                    "k": p.k,
                    "predicted": _pct(p.predicted) + _ci_pct(p.predicted_ci95),
                    "measured": _pct(p.measured) + _ci_pct(p.measured_ci95),
                    "agree": p.agree,
                    "text": p.text,
                }
                for p in w.predictions
            ],
            "repeats": len(w.runs),
            "failed": sum(1 for r in w.runs if not r.ok),
        }
    return out


def command(res: Results, cell: str) -> str:
    """The copy-paste command that runs a cell's what-if (the run's own matrix)."""
    name = res.matrix.get("name") or "default"
    return f"telemetry-bench whatif --matrix {name} --cell {cell}"
