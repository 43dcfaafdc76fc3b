"""The Universal Scalability Law (Gunther) fitted to a scaling comparison: throughput per step of N processes.

    X(N) = λ N / (1 + σ (N − 1) + κ N (N − 1))

λ: one process's throughput; σ (contention): the share of work that queues for something shared (a lock, the one
queue, the one database); κ (coherency): the cost of keeping N processes in agreement (it makes the curve turn down
past N* = √((1 − σ) / κ)). Fitted by least squares over every counted repeat of every step
(``scipy.optimize.curve_fit``, λ > 0, 0 ≤ σ ≤ 1, κ ≥ 0); each coefficient's 95 % interval is ± t(df) × its standard
error from the fit's covariance, df = points − 3. A scaling comparison is a matrix group that varies ``workers`` only
(``experiments/matrices/cluster.toml``'s ``scaling``); each step's throughput keeps its own interval (Student's t
over its repeats, ``experiments.analysis.stats``).

What it can say depends on where the steps ran: on one machine every added process shares the same cores, so σ and κ
measure this machine's sharing, not a fleet's (docs/cluster.md).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from experiments.analysis import stats
from experiments.results.model import Results

SCALED_KEY = "workers"  # the comparison's one varied key: N = the writer processes (placed round robin on the hosts)
MIN_POINTS = 4  # three coefficients and at least one degree of freedom for their intervals


def usl(n: Any, lam: float, sigma: float, kappa: float) -> Any:
    """X(N) for a number or a numpy array of N."""
    return lam * n / (1 + sigma * (n - 1) + kappa * n * (n - 1))


def fit(points: Sequence[tuple[float, float]]) -> dict[str, Any] | None:
    """λ, σ, κ with their 95 % intervals from (N, throughput) points; None with fewer than ``MIN_POINTS`` points or
    fewer than 3 distinct N (a curve of three coefficients through two N is not determined), or where scipy is not
    installed (the ``cluster`` extra)."""
    pts = [(float(n), float(x)) for n, x in points if n >= 1 and x is not None and x > 0]
    if len(pts) < MIN_POINTS or len({n for n, _ in pts}) < 3:
        return None
    try:
        import numpy as np
        from scipy.optimize import curve_fit
    except ImportError:
        return None
    ns = np.array([p[0] for p in pts])
    xs = np.array([p[1] for p in pts])
    lam0 = float(max(x for n, x in pts if n == min(ns)))
    try:
        popt, pcov = curve_fit(usl, ns, xs, p0=[lam0, 0.05, 0.001], bounds=([0, 0, 0], [np.inf, 1, 1]), maxfev=20_000)
    except (RuntimeError, ValueError):  # no convergence
        return None
    df = len(pts) - 3
    t = stats.t_quantile(stats.CONFIDENCE, df)
    se = [math.sqrt(v) if v >= 0 and math.isfinite(v) else None for v in np.diag(pcov)]
    out: dict[str, Any] = {"points": len(pts), "df": df}
    for name, value, err in zip(("lam", "sigma", "kappa"), popt, se, strict=True):
        lo = max(0.0, value - t * err) if err is not None else None
        out[name] = {"value": float(value), "ci95": [lo, float(value + t * err)] if err is not None else None}
    lam, sigma, kappa = (float(v) for v in popt)
    out["peak_n"] = math.sqrt((1 - sigma) / kappa) if kappa > 0 and sigma < 1 else None
    residuals = xs - usl(ns, *popt)
    out["rmse"] = float(math.sqrt(float(np.mean(residuals**2))))
    top = max(float(ns.max()), out["peak_n"] or 0.0, 1.0)
    grid = [1 + i * (min(top * 1.5, 4 * float(ns.max())) - 1) / 60 for i in range(61)]
    out["curve"] = [[round(n, 3), float(usl(n, lam, sigma, kappa))] for n in grid]
    return out


def scaling_of(results: Results) -> dict[str, Any] | None:
    """The USL fit of the run's scaling comparison (a group varying ``workers`` only), with each step's median
    throughput and interval; None when the run has no such group."""
    by_id = {c.id: c for c in results.cells}
    for g in results.matrix.get("groups", []):
        if list(g.get("keys", [])) != [SCALED_KEY]:
            continue
        steps: list[dict[str, Any]] = []
        points: list[tuple[float, float]] = []
        for cid in g.get("cells", []):
            cell = by_id.get(cid)
            if cell is None:
                continue
            n = int(cell.params.workers)
            tps = [r.throughput_rps for r in cell.repeats if r.index >= 0 and not r.pilot and not r.excluded]
            tps_ok = [float(x) for x in tps if x is not None and x > 0]
            est = stats.estimate(tps_ok)
            steps.append({"n": n, "cell": cid, "median": est.median, "ci95": [est.lo, est.hi]
                          if est.lo is not None else None, "repeats": est.n})  # fmt: skip
            points += [(float(n), x) for x in tps_ok]
        return {"group": g.get("name"), "key": SCALED_KEY, "steps": sorted(steps, key=lambda s: s["n"]),
                "fit": fit(points)}  # fmt: skip
    return None
