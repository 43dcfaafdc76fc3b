"""Which cells get another round: repeats planned from each cell's measured CV, the run's budget spent first on the
cells its targets read.

Once a cell has its minimum repeats (its pilot rounds), its noise says how many repeats its interval needs: the
fewest ``n`` whose half-width, at the noise measured so far, is ≤ its target (``repeats_needed``: the interval's
half-width h_k after k repeats scales as t(0.975, n − 1)/√n, the same t interval as ``stats.estimate``, so
h_n = h_k · [t(0.975, n − 1)/√n] / [t(0.975, k − 1)/√k]; the half-width the stopping rule reads, relative to the
median). Then, after every round (``plan``):

- **The cells the targets read** (``target_cells``: every cell a target of the run's target set names, and where it
  names a group's best, every cell of that group still *in contention*: its interval reaches the leader's; not the
  cells of a target decided on one repeat per cell, such as the sampling cost) keep the ordinary stopping rule
  (``summary.stop_reason``): converged, cap or budget.
- **Every other cell**, cheapest remaining need first, takes another round while its remaining repeats (to its need,
  or to its cap where its CV needs more) fit in the budget left once the target cells' remaining repeats are
  reserved; the others stop now (``budget``, with what was reserved, in ``Summary.stop_detail``). Their figures stay,
  flagged unstable where short of their target, and the rounds they do not take go to the target cells. Without a
  budget nothing is cut.

A CV from three repeats is itself uncertain (its relative standard error is about 1/√(2(n − 1)) = 50 % at n = 3):
so a target cell is never cut on it, and the need is re-estimated every round from every repeat taken so far.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from experiments.analysis import stats
from experiments.analysis.targets import ONE_REPEAT
from experiments.results.model import CellResult, Results, StopReason, best, throughputs


def repeats_needed(half_width: float | None, taken: int, target: float, cap: int) -> int | None:
    """The fewest repeats (≥ 2) whose interval's relative half-width, at the noise of the ``taken`` repeats whose
    half-width is ``half_width``, is at most ``target``; None when more than ``cap`` would be needed or the noise is
    unknown (fewer than two repeats)."""
    if half_width is None or taken < 2 or target <= 0:
        return None

    def scale(n: int) -> float:
        return stats.t_quantile(stats.CONFIDENCE, n - 1) / math.sqrt(n)

    for n in range(2, cap + 1):
        if half_width * scale(n) / scale(taken) <= target * (1 + 1e-9):
            return n
    return None


def contenders(res: Results, group: str) -> set[str]:
    """The cells of ``group`` that may still be its best: the leader (highest median) and every cell whose interval's
    upper end reaches the leader's lower end (or that has no interval yet)."""
    leader = best(res.cells, group)
    members = [c for c in res.cells if group in c.groups]
    if leader is None:
        return {c.id for c in members}
    lead = stats.estimate(throughputs(leader))
    out = set()
    for c in members:
        est = stats.estimate(throughputs(c))
        if c is leader or lead.lo is None or est.hi is None or est.hi >= lead.lo:
            out.add(c.id)
    return out


def target_cells(res: Results, targets: Callable[[Results], list[dict[str, Any]]] | None) -> set[str]:
    """The cells the run's targets read, on the results so far: each target's ``cells`` (but those of a target decided
    on one repeat per cell, ``targets.ONE_REPEAT``); a cell that is a group's best stands for the group's contenders
    (which one is best is what the rounds decide)."""
    if targets is None:
        return set()
    named = {cid for t in targets(res) if t.get("name") not in ONE_REPEAT for cid in t.get("cells", [])}
    out = set(named)
    for cid in named:
        cell = res.cell(cid)
        for group in cell.groups if cell else []:
            if (b := best(res.cells, group)) is not None and b.id == cid:
                out |= contenders(res, group)
    return out


@dataclass(frozen=True)
class Need:
    """One active cell at the end of a round: whether a target reads it, its counted repeats, the repeats its CV
    calls for (None: more than its cap), its cap, and what one more repeat costs in seconds of the round."""

    id: str
    priority: bool
    taken: int
    needed: int | None
    cap: int
    cv: float | None
    target: float
    repeat_s: float

    @property
    def extra(self) -> int:
        """The repeats it would still take: to its need, at most to its cap."""
        return max(0, min(self.needed if self.needed is not None else self.cap, self.cap) - self.taken)


@dataclass(frozen=True)
class Cut:
    """A cell stopped by the plan, and why in words."""

    reason: StopReason
    detail: str


def _pct(x: float | None) -> str:
    return "–" if x is None else f"{x:.1%}".replace("%", " %")


def plan(needs: Iterable[Need], remaining_s: float | None) -> dict[str, Cut]:
    """The cells to stop now (the rule in this module's docstring); the others take another round. ``remaining_s``:
    the run's budget not yet spent (None: no budget)."""
    needs = list(needs)
    cuts: dict[str, Cut] = {}
    if remaining_s is None:
        return cuts
    reserved = sum(n.extra * n.repeat_s for n in needs if n.priority)
    left = remaining_s - reserved
    for n in sorted((n for n in needs if not n.priority and n.id not in cuts), key=lambda n: n.extra * n.repeat_s):
        cost = n.extra * n.repeat_s
        if cost <= left:
            left -= cost
            continue
        kept = f" once the target cells' remaining repeats (≈ {reserved:,.0f} s) are reserved" if reserved else ""
        cuts[n.id] = Cut("budget", f"its {n.extra} more repeats (≈ {cost:,.0f} s) do not fit in the "
                                   f"{max(0.0, left):,.0f} s of budget left{kept}; no target reads it")  # fmt: skip
    return cuts


def short_of(n: Need) -> str:
    """Why a cell ended short of its target, in words: the repeats its CV calls for."""
    if n.cap <= 1:
        return "one repeat by design (its cap): its figure has no interval"
    if n.cv is None:
        return "fewer than two repeats measured a throughput: the noise is unknown"
    if n.needed is None:
        return f"at CV {_pct(n.cv)} its interval needs more than its cap of {n.cap} repeats to reach ±{_pct(n.target)}"
    return (
        f"at CV {_pct(n.cv)} its interval needs about {n.needed} repeats to reach ±{_pct(n.target)}; it took {n.taken}"
    )


def need_of(cell: CellResult, *, priority: bool, target: float, cap: int, overhead: float) -> Need:
    """A cell's need from its counted repeats; ``overhead`` scales its repeats' wall time to a round's share."""
    tps = throughputs(cell)
    cv = stats.cv(tps)
    hw = stats.estimate(tps).half_width
    took = [r.duration_s for r in cell.repeats if r.kind == "timed" and r.duration_s]
    return Need(cell.id, priority, len(tps), repeats_needed(hw, len(tps), target, cap), cap, cv, target,
                (sum(took) / len(took) if took else 0.0) * overhead)  # fmt: skip
