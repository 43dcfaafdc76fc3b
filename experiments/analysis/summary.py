"""A cell's summary over its counted repeats, and the stopping rule that decides whether it needs another.

**Stopping rule** (checked after every round, per cell): stop when a repeat failed its accounting (``failed``) or
no repeat measured a throughput (``no_data``). Otherwise, once the minimum repeats are taken: stop when the
throughput interval's half-width is ≤ the target (``converged``); when the cell is a fault cell (its figures are
about recovery), the matrix sets no target, or the cell's cap is its minimum (``fixed``); when the cap is reached
(``max_repeats``) or the run's time budget is spent (``budget``). A cell that stops without converging is
``unstable``: flagged with its interval, never hidden. With a budget, after every round the cells no target reads
may also be stopped early (``budget``), so that the cells the targets read get the rounds
(``experiments.analysis.planning``, which also states the repeats each cell's CV calls for).
"""

from __future__ import annotations

import collections
import statistics
from collections.abc import Callable
from typing import Any

from experiments.analysis import stats
from experiments.results.model import CellResult, Latency, Results, StopReason, Summary, counted, failed, loop_of
from harness.accounting import Accounting
from harness.faults import recovery_of


def _latency(reps: list[Any], attr: str) -> Latency:
    out: dict[str, Any] = {"n": sum(getattr(r, attr).n for r in reps)}
    for p in ("p50", "p95", "p99"):
        out[p] = stats.median(getattr(getattr(r, attr), p) for r in reps)
    maxes = [getattr(r, attr).max for r in reps if getattr(r, attr).max is not None]
    out["max"] = max(maxes) if maxes else None
    return Latency(**out)


def summarize(
    cell: CellResult, ceiling: float | None, ci_target: float | None = None, stop_reason: StopReason = "running"
) -> Summary:
    reps = counted(cell)
    tps = [r.throughput_rps for r in reps if r.throughput_rps is not None]
    est = stats.estimate(tps)
    p99 = stats.estimate(r.latency_ms.p99 for r in reps)
    cpu = [sum(s.cpu_s for s in r.resources.values()) / r.accounting.committed for r in reps if r.accounting.committed]
    verdicts = [r.bottleneck for r in reps if r.bottleneck]
    bn = None
    if verdicts:  # the most frequent verdict over the repeats
        stage = collections.Counter(v.stage for v in verdicts).most_common(1)[0][0]
        bn = next(v for v in verdicts if v.stage == stage)

    def total(count: Callable[[Accounting], int]) -> int:  # over every timed repeat, pilots included: each ran
        return sum(count(r.accounting) for r in cell.repeats)

    hw = est.half_width
    fault_cell = any(r.fault for r in reps)  # its figures are about the fault and the recovery: not judged here
    unstable = (
        bool(ci_target)
        and stop_reason in ("max_repeats", "budget", "fixed")
        and not fault_cell
        and (hw is None or hw > (ci_target or 0))
    )
    med = est.median
    return Summary(
        throughput_rps=med,
        throughput_min_rps=min(tps) if tps else None,
        throughput_max_rps=max(tps) if tps else None,
        cv=stats.cv(tps),
        resolution=stats.mde(stats.cv(tps), len(tps)),
        unstable=unstable,
        throughput_ci95=est.ci,
        half_width=hw,
        ci_target=ci_target,
        repeats_taken=len(reps),
        stop_reason=stop_reason,
        loop=loop_of(cell.params),
        latency_p99_ci95=p99.ci,
        measure_s=reps[-1].measure_s if reps else None,
        fraction_of_ceiling=(med / ceiling) if med and ceiling else None,
        readings_generated=total(lambda a: a.generated),
        readings_committed=total(lambda a: a.committed),
        lost=total(lambda a: a.lost),
        duplicated=total(lambda a: a.duplicated),
        forwarded=total(lambda a: a.forwarded),
        broadcast=total(lambda a: a.broadcast),
        unsent=total(lambda a: a.unsent),
        latency_ms=_latency(reps, "latency_ms"),
        latency_sent_ms=_latency(reps, "latency_sent_ms"),
        e2e_latency_ms=_latency(reps, "e2e_latency_ms"),
        e2e_throughput_rps=stats.median(r.e2e_throughput_rps for r in reps if r.e2e_throughput_rps),
        cpu_s_per_reading=statistics.median(cpu) if cpu else None,
        bottleneck=bn,
        failed=any(not r.ok for r in cell.repeats) or not cell.repeats,
        recovery=recovery_of([r.fault for r in reps if r.fault]),
    )


def stop_reason(
    cell: CellResult,
    *,
    min_repeats: int,
    max_repeats: int,
    ci_target: float,
    fixed: bool,
    over_budget: bool,
) -> StopReason | None:
    """Why this cell needs no further repeat, or None if it needs one (the rule in this module's docstring)."""
    reps = counted(cell)
    n = len(reps)
    if cell.repeats and failed(cell):  # a pilot's failure counts too
        return "failed"
    if n < min_repeats:
        return None
    tps = [r.throughput_rps for r in reps if r.throughput_rps is not None]
    if not tps:
        return "no_data"
    hw = stats.estimate(tps).half_width
    if ci_target > 0 and hw is not None and hw <= ci_target:
        return "converged"
    if fixed or ci_target <= 0 or max_repeats <= min_repeats:
        return "fixed"
    if n >= max_repeats:
        return "max_repeats"
    if over_budget:
        return "budget"
    return None


def run_resolution(res: Results) -> dict[str, Any] | None:
    """The run's resolution: over its cells with an interval (fault cells left out), the relative minimum
    detectable effect of each (``Summary.resolution``): the median, the best and the worst, and one sentence."""
    per = {
        c.id: c.summary.resolution
        for c in res.cells
        if c.summary and c.summary.resolution is not None and not any(r.fault for r in counted(c))
    }
    if not per:
        return None
    values = sorted(per.values())
    med = statistics.median(values)
    best, worst = min(per, key=per.__getitem__), max(per, key=per.__getitem__)
    text = (
        f"this run tells apart throughput differences of about ±{med:.1%} (median over {len(per)} cells; "
        f"best ±{per[best]:.1%} in {best}, worst ±{per[worst]:.1%} in {worst}): smaller ones are within its noise"
    ).replace("%", " %")
    return {"median": med, "best": per[best], "best_cell": best, "worst": per[worst], "worst_cell": worst,
            "cells": per, "power": stats.POWER, "confidence": stats.CONFIDENCE, "text": text}  # fmt: skip
