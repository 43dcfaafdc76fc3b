"""The headline: like with like against the seed.

- ``full_job_vs_seed``: the fastest cell that does the seed's whole job — every reading committed, POSTed to the
  backend and broadcast to at least one websocket client (``results.full_job``) — ÷ the seed cell;
- ``db_only_vs_seed``: the fastest cell that only commits (``forwarder = "none"``), labelled database-only, ÷ the
  seed cell.

"Fastest": the highest median throughput among the cells that did not fail and have an interval (two repeats or
more, where any cell has), at max rate (closed loop) when the run has such cells (an open-loop cell's throughput
is its offered rate). Each ratio carries the 95 % interval of ``stats.ratio`` over the two cells' repeats. An
open-loop seed cell that kept up with its offered rate (nothing unsent) makes the ratio a lower bound, and its
label says so.
"""

from __future__ import annotations

from experiments.analysis import stats
from experiments.results.model import (
    CellResult,
    Headline,
    RatioCI,
    Results,
    best,
    counted,
    full_job,
    is_seed,
    loop_of,
    throughputs,
)


def _candidates(res: Results) -> list[CellResult]:
    """Cells a headline may name: not the seed, not a fault cell (its throughput is a share of its pilot's, with a
    fault in it), with an interval (≥ 2 counted repeats: a single long run such as a 10M-reading cell has none, and a
    headline without an interval decides nothing), closed loop where there are."""
    cells = [c for c in res.cells if not is_seed(c) and not any(r.fault for r in c.repeats)]
    with_ci = [c for c in cells if len(throughputs(c)) >= 2]
    cells = with_ci or cells
    closed = [c for c in cells if loop_of(c.params) == "closed"]
    return closed or cells


def seed_kept_up(seed: CellResult) -> bool:
    """An open-loop seed cell that sent its whole schedule (nothing ``unsent`` in any counted repeat) measured its
    offered rate, not its capacity: a ratio over it is then an upper bound on the seed, a lower bound on the gain."""
    reps = counted(seed)
    return loop_of(seed.params) == "open" and bool(reps) and all(r.accounting.unsent == 0 for r in reps)


def _vs(cell: CellResult | None, seed: CellResult | None, label: str) -> RatioCI | None:
    if cell is None:
        return None
    r = stats.ratio(throughputs(cell), throughputs(seed)) if seed else stats.Ratio(None, None, None)
    if seed is not None and seed_kept_up(seed):
        label += f"; the seed kept up with its offered {seed.params.rate:,.0f}/s: a lower bound"
    return RatioCI(ratio=r.ratio, ci95=r.ci, numerator=cell.id, denominator=seed.id if seed else None, label=label)


def headline_of(res: Results) -> Headline:
    seed = res.cell("seed")
    cells = _candidates(res)
    full = best([c for c in cells if full_job(c)])
    db_only = best([c for c in cells if not c.params.forwarding])
    return Headline(
        full_job_vs_seed=_vs(full, seed, "full job (committed, POSTed, broadcast to a websocket client) ÷ seed"),
        db_only_vs_seed=_vs(db_only, seed, "database only (committed, nothing forwarded) ÷ seed"),
    )
