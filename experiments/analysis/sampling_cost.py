"""What sampling profiles cost, measured in the same run (see :mod:`experiments.measure.sampler` for how and when
repeats are sampled). Decided on py-spy's own CPU seconds ÷ the rest of the CPU inside the measured windows of the
repeats it sampled (``own_share``, read off its processes at every poll); beside it, the end-to-end check, paired
per cell and pooled: CPU seconds per committed reading (every stage and server, py-spy's own CPU added on the
sampled side) and throughput, sampled ÷ unsampled — on 2 shared cores their intervals are several percent wide
(docs/targets.md)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from experiments.analysis import stats
from experiments.analysis.stats import Ratio
from experiments.plan.matrix import DEFAULT_RATE_HZ
from experiments.results.model import CellResult, Repeat, Results, cpu_per_reading, failed, loop_of

MAX_COST = 0.02  # the target: sampling costs at most 2 % (decided on the interval)


@dataclass(frozen=True)
class Cost:
    """Sampled ÷ unsampled throughput, paired per cell and pooled (a ratio with its interval), and its source."""

    ratio: Ratio
    sampled: int  # sampled repeats, over every pair
    unsampled: int  # unsampled repeats, over every pair
    cells: list[str]  # the pairs: one closed-loop cell each
    per_cell: dict[str, float]  # cell → its sampled median ÷ its unsampled median
    # CPU per committed reading, sampled (py-spy's own CPU included) ÷ unsampled, paired per cell the same way;
    # None where no sampled repeat recorded py-spy's CPU (older results)
    cpu: Ratio | None = None
    cpu_per_cell: dict[str, float] | None = None
    # py-spy's own CPU ÷ the rest of the CPU in its repeats' windows, over every sampled repeat (``own_share``):
    # what sampling takes from the cores, read off py-spy's processes, without an unsampled twin; None: not recorded
    direct: stats.Estimate | None = None

    @property
    def decided_on(self) -> str:
        """``direct`` where py-spy's own share has an interval, else ``cpu`` where the paired CPU ratio has one,
        else ``throughput``."""
        if self.direct is not None and self.direct.lo is not None:
            return "direct"
        return "cpu" if self.cpu is not None and self.cpu.lo is not None else "throughput"

    @property
    def status(self) -> str:
        """pass / fail / cannot_tell against :data:`MAX_COST`: on py-spy's own share of the CPU where measured
        (``stats.at_most``), else on CPU per reading (the interval of sampled ÷ unsampled ≤ 1 + MAX_COST passes,
        wholly above fails), else on throughput (``stats.at_least`` on the interval against 1 − MAX_COST)."""
        if self.decided_on == "direct" and self.direct is not None:
            return stats.at_most(self.direct, MAX_COST)
        if self.decided_on == "cpu" and self.cpu is not None and self.cpu.lo is not None and self.cpu.hi is not None:
            return "pass" if self.cpu.hi <= 1 + MAX_COST else "fail" if self.cpu.lo > 1 + MAX_COST else "cannot_tell"
        return stats.at_least(self.ratio, 1.0 - MAX_COST)

    def text(self) -> str:
        if self.ratio.ratio is None:
            return "not measured"
        cpu = f"CPU per reading (py-spy's own included) {self.cpu.text()}; " if self.cpu and self.cpu.ratio else ""
        direct = (f"py-spy's own CPU ÷ the rest of the CPU, in the measured windows: +{self.direct.text('.2%')} over "
                  f"{self.direct.n} sampled repeats; end-to-end check, "
                  if self.direct is not None and self.direct.median is not None else "")  # fmt: skip
        on = {"direct": "py-spy's own CPU", "cpu": "CPU per reading"}.get(self.decided_on, "throughput")
        return (f"{direct}sampled ÷ unsampled − 1: {cpu}throughput {self.ratio.text()} (decided on "
                f"{on}; paired in {len(self.cells)} "
                f"closed-loop cell(s): sampled median ÷ unsampled median per cell, t interval over the cells; "
                f"{self.sampled} sampled vs {self.unsampled} unsampled repeats)")  # fmt: skip


def _pair(cell: CellResult) -> tuple[list[float], list[float]] | None:
    """(sampled, unsampled) throughputs of a closed-loop cell's counted repeats without a fault — excluded ones
    included: the cost is measured on them — or None when the cell cannot be paired."""
    if loop_of(cell.params) != "closed" or failed(cell):
        return None
    reps = [r for r in cell.repeats if not r.pilot and r.throughput_rps and r.fault is None]
    # sampled: py-spy recorded every stage; a repeat whose sampling failed is on neither side
    s = [r.throughput_rps or 0.0 for r in reps if r.sampled and r.sampled.files and not r.sampled.problem]
    u = [r.throughput_rps or 0.0 for r in reps if r.sampled is None]
    return (s, u) if s and u else None


def _cpu(r: Repeat) -> float | None:
    """A repeat's CPU seconds per committed reading, a sampled one's with py-spy's own CPU added."""
    base = cpu_per_reading(r)
    if base is None or r.sampled is None:
        return base
    if r.sampled.cpu_s is None or not r.accounting.committed:
        return None
    return base + r.sampled.cpu_s / r.accounting.committed


def own_share(r: Repeat) -> float | None:
    """A sampled repeat's py-spy CPU seconds ÷ every other CPU second, inside its measured window where both are
    measured (the figures come from the window; py-spy's start-up falls in the warm-up), else over the whole repeat
    (start-up included: errs high). What sampling took from the cores, as "sampled ÷ unsampled − 1" of CPU per
    reading would state it were the stages' own work unchanged (nonblocking py-spy reads their memory without
    stopping them)."""
    if r.sampled is None or r.sampled.cpu_s is None or not r.sampled.files or r.sampled.problem or not r.resources:
        return None
    inside = [s.cpu_s_window for s in r.resources.values()]
    if r.sampled.cpu_s_window is not None and all(c is not None for c in inside):
        rest = sum(c for c in inside if c is not None)
        return r.sampled.cpu_s_window / rest if rest > 0 else None
    rest = sum(s.cpu_s for s in r.resources.values())
    return r.sampled.cpu_s / rest if rest > 0 else None


def _direct(res: Results) -> stats.Estimate | None:
    """``own_share`` over every sampled timed repeat without a fault, of every cell that did not fail (open-loop
    ones too: py-spy's share does not need a twin); Student's t over the repeats."""
    shares = [
        own_share(r)
        for c in res.cells
        if not failed(c)
        for r in c.repeats
        if r.kind == "timed" and not r.pilot and r.fault is None
    ]
    e = stats.estimate(shares)
    return e if e.median is not None else None


def _cpu_pair(cell: CellResult) -> float | None:
    """A closed-loop cell's median sampled ÷ median unsampled CPU per reading (as ``_pair`` picks the repeats)."""
    if loop_of(cell.params) != "closed" or failed(cell):
        return None
    reps = [r for r in cell.repeats if not r.pilot and r.throughput_rps and r.fault is None]
    s = [_cpu(r) for r in reps if r.sampled and r.sampled.files and not r.sampled.problem]
    u = [_cpu(r) for r in reps if r.sampled is None]
    ms, mu = stats.median(s), stats.median(u)
    return ms / mu if ms and mu else None


def cost(res: Results) -> Cost | None:
    """The sampling cost measured in ``res``, paired per cell: for each closed-loop cell without a fault that has
    sampled and unsampled counted repeats, median(sampled) ÷ median(unsampled); pooled over those cells
    (``stats.pooled_ratio``: the median of the log ratios, Student's t interval over the cells — each cell is its
    own control, so cells of different speeds pool and no cell's interval mixes the two populations). None when
    the run has no such cell; one cell gives a point without an interval."""
    ratios: dict[str, float] = {}
    n_s = n_u = 0
    for c in res.cells:
        pair = _pair(c)
        if pair is None:
            continue
        s, u = pair
        ratios[c.id] = (stats.median(s) or 0.0) / (stats.median(u) or 1.0)
        n_s, n_u = n_s + len(s), n_u + len(u)
    if not ratios:
        return None
    cpu = {cid: r for cid in ratios if (r := _cpu_pair(res.cell(cid))) is not None}  # type: ignore[arg-type]
    return Cost(stats.pooled_ratio(ratios.values()), n_s, n_u, list(ratios), ratios,
                stats.pooled_ratio(cpu.values()) if cpu else None, cpu or None, _direct(res))  # fmt: skip


def apply_cost(res: Results) -> tuple[Cost | None, bool]:
    """With ``sampling = "one"``: exclude every sampled repeat from its cell's figures when the run's cost is
    shown beyond :data:`MAX_COST` (status ``fail``), include them otherwise; a cell's only measured repeat stays.
    Returns (the cost, whether any repeat's ``excluded`` changed: the cells' summaries are then stale)."""
    c = cost(res)
    exclude = res.matrix.get("sampling") == "one" and c is not None and c.status == "fail"
    changed = False
    for cell in res.cells:
        # a cell's only measured repeat stays (a one-repeat cell, count-10m or overload, would measure nothing)
        alone = sum(1 for r in cell.repeats if r.kind == "timed" and not r.pilot) == 1
        for r in cell.repeats:
            want = exclude and r.sampled is not None and not r.pilot and not alone
            if r.excluded != want:
                r.excluded, changed = want, True
    return c, changed


def cost_record(res: Results) -> dict[str, Any] | None:
    """The cost as ``results.json`` keeps it (``sampling_cost``) and the report and console state it."""
    c = cost(res)
    if c is None:
        return None
    return {
        "ratio": c.ratio.ratio, "ci95": c.ratio.ci, "status": c.status, "bound": MAX_COST, "text": c.text(),
        "cells": c.cells, "per_cell": c.per_cell, "sampled": c.sampled, "unsampled": c.unsampled,
        "cpu_ratio": c.cpu.ratio if c.cpu else None, "cpu_ci95": c.cpu.ci if c.cpu else None,
        "cpu_per_cell": c.cpu_per_cell, "decided_on": c.decided_on,
        "own_share": c.direct.median if c.direct else None, "own_share_ci95": c.direct.ci if c.direct else None,
        "rate_hz": res.matrix.get("sampling_hz", DEFAULT_RATE_HZ), "native": bool(res.matrix.get("sampling_native")),
        "excluded": any(r.excluded for cell in res.cells for r in cell.repeats),
    }  # fmt: skip
