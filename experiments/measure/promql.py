"""Quantiles from Prometheus histogram buckets, computed exactly as PromQL's ``histogram_quantile`` does.

Semantics (prometheus/promql/quantile.go, classic histograms): buckets sorted by upper bound, cumulative counts;
rank = q × count(+Inf); the first bucket whose cumulative count ≥ rank holds the quantile, linearly interpolated
between its lower bound (the previous bucket's upper bound, or 0 for the first bucket when its upper bound is
positive) and its upper bound. If that bucket is +Inf, the answer is the largest finite upper bound. q < 0 gives
−Inf, q > 1 gives +Inf, no observations or fewer than two buckets give NaN.
"""

from __future__ import annotations

import collections
import math
from collections.abc import Mapping
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from experiments.results.model import Repeat


def _le(key: str | float) -> float:
    return float("inf") if key in ("+Inf", "Inf", "inf") else float(key)


def histogram_quantile(q: float, buckets: Mapping[str, float] | Mapping[float, float]) -> float:
    """``buckets``: upper bound (``le`` label, '+Inf' included) → cumulative count."""
    if math.isnan(q):
        return math.nan
    if q < 0:
        return -math.inf
    if q > 1:
        return math.inf
    pairs = sorted((_le(k), float(v)) for k, v in buckets.items())
    if len(pairs) < 2 or not math.isinf(pairs[-1][0]):
        return math.nan
    # counts must be monotonic; PromQL fixes small non-monotonicity by carrying the max forward
    fixed, highest = [], 0.0
    for le, count in pairs:
        highest = max(highest, count)
        fixed.append((le, highest))
    total = fixed[-1][1]
    if total == 0:
        return math.nan
    rank = q * total
    i = next(i for i, (_, count) in enumerate(fixed) if count >= rank)
    if i == len(fixed) - 1:
        return fixed[-2][0]
    if i == 0 and fixed[0][0] <= 0:
        return fixed[0][0]
    lower = 0.0 if i == 0 else fixed[i - 1][0]
    below = 0.0 if i == 0 else fixed[i - 1][1]
    upper, count = fixed[i]
    in_bucket = count - below
    if in_bucket == 0:  # only when rank is 0 in an empty first bucket: Go divides 0 by 0
        return math.nan
    return lower + (upper - lower) * ((rank - below) / in_bucket)


def quantiles(buckets: Mapping[str, float], qs: tuple[float, ...] = (0.5, 0.95, 0.99)) -> dict[str, float | None]:
    """{'p50': …, 'p95': …, 'p99': …}; None where PromQL would give NaN."""
    out: dict[str, float | None] = {}
    for q in qs:
        v = histogram_quantile(q, buckets)
        out[f"p{round(q * 100):d}"] = None if math.isnan(v) else v
    return out


def prom_hist(rep: Repeat, name: str, scale: float = 1000.0) -> dict[str, float | None]:
    """PromQL quantiles of histogram ``name`` in the repeat's measured window, over every stage that has it (buckets
    summed by le), × scale."""
    summed: dict[str, float] = collections.defaultdict(float)
    for hists in rep.prometheus.values():
        for le, count in hists.get(name, {}).items():
            summed[le] += count
    if not summed:
        return {}
    return {k: (v * scale if v is not None else None) for k, v in quantiles(summed).items()}
