"""The one statistics module: every consumer (runner and console, report, ``compare``, targets) uses it.

**Estimator.** A cell's figure (throughput, p99) is the *median* of its per-repeat values.

**Interval.** Its 95 % confidence interval is Student's t interval of the per-repeat values: mean ± t(0.975, n−1) ·
s/√n. Why t and not a bootstrap: a cell has 3 to ~12 repeats. A bootstrap of the median with that few values can only
return values it has seen (with 3 repeats, three of them), so its interval is too narrow and jumps between repeats;
the t interval is exact for normal noise and each repeat's figure is an average over ≥ 20 commits (close to normal
by the central limit theorem). The t interval is centred on the mean; for the symmetric noise of repeated windows the
mean and the median estimate the same centre. Fewer than two values: no interval (the noise is unknown).

**Relative half-width** = (hi − lo) / 2 / median: what the runner's stopping rule compares with the cell's target
(5 % unless the matrix says otherwise).

**Ratios** (A ÷ B: a comparison, on ÷ off, best ÷ seed): the point is median(A) ÷ median(B); the interval is Welch's
on the log scale (delta method): ln(mean A / mean B) ± t(0.975, ν) · √(s_A²/(n_A·m_A²) + s_B²/(n_B·m_B²)), ν by
Welch–Satterthwaite, then exponentiated. **The noise rule:** A differs from B *beyond noise* when that interval
excludes 1 — "A beats B by x % [lo, hi]" — else "within noise". With a single repeat on either side the noise is
unknown and said so.

**Paired ratios** (the sampling cost: each cell's sampled ÷ unsampled median, one ratio per cell): pooled on the
log scale with the same t interval as a cell's figure (``pooled_ratio``: ``estimate`` over ln r, exponentiated).

**Distributions** are scipy.stats's: Student's t quantiles (``t.isf``) and tail probabilities (``t.sf``), Welch's
test (``ttest_ind``); no special function is written here. ``scipy.stats.bootstrap`` is not used: every interval in
a run is over per-repeat figures (or per-cell ratios), 1 to ~15 of them, each an average over ≥ 20 commits — the
case where the t interval is right and a bootstrap wrong (above). It would be the right tool for an interval over
many skewed raw values (one repeat's per-reading latencies, say); no figure needs one: a repeat's percentiles are
exact (``percentile_disc`` over every reading) and their noise is measured across repeats.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from scipy import stats as scipy_stats

CONFIDENCE = 0.95
POWER = 0.8  # the resolution (``mde``): the difference found beyond noise 4 times in 5
DEFAULT_CI_TARGET = 0.05  # relative half-width a cell's throughput interval must reach (matrix `ci_target`)


def clean(values: Iterable[float | None]) -> list[float]:
    """The finite values, as floats."""
    return [float(v) for v in values if v is not None and not math.isnan(v) and not math.isinf(v)]


def median(values: Iterable[float | None]) -> float | None:
    v = clean(values)
    return statistics.median(v) if v else None


def cv(values: Iterable[float | None]) -> float | None:
    """Coefficient of variation (stdev / mean); None with fewer than two values or a zero mean."""
    v = clean(values)
    if len(v) < 2 or not statistics.fmean(v):
        return None
    return statistics.stdev(v) / statistics.fmean(v)


# ----------------------------------------------------------------------------------------------- Student's t
def t_two_sided_p(t: float, df: float) -> float:
    """P(|T| ≥ |t|) for Student's t with ``df`` degrees of freedom (``scipy.stats.t.sf``)."""
    if df <= 0 or math.isnan(t):
        return math.nan
    return float(2.0 * scipy_stats.t.sf(abs(t), df))


def t_quantile(confidence: float, df: float) -> float:
    """The two-sided critical value: P(|T| ≤ q) = ``confidence`` (e.g. 12.706 for 95 % and df = 1;
    ``scipy.stats.t.isf``, the normal's where df is infinite)."""
    if df <= 0 or not 0 < confidence < 1:
        raise ValueError(f"t_quantile: need df > 0 and 0 < confidence < 1, got df={df}, confidence={confidence}")
    return float(scipy_stats.t.isf((1.0 - confidence) / 2.0, df))


def welch_p(a: Sequence[float], b: Sequence[float]) -> float:
    """Two-sided p of Welch's t-test (``scipy.stats.ttest_ind``, unequal variances; informative only: the noise
    rule is the ratio's interval). Two constant samples: 1 when they are equal, else 0."""
    if statistics.variance(a) + statistics.variance(b) == 0:
        return 1.0 if statistics.fmean(a) == statistics.fmean(b) else 0.0
    return float(scipy_stats.ttest_ind(a, b, equal_var=False).pvalue)


# ------------------------------------------------------------------------------------------------ resolution
def mde(
    cv: float | None, n: int, *, paired: bool = False, confidence: float = CONFIDENCE, power: float = POWER
) -> float | None:
    """The **minimum detectable effect**: the smallest relative difference this many repeats at this noise tell from
    noise (found beyond noise with probability ``power`` by the two-sided test at 1 − ``confidence``).

    Two cells of ``n`` repeats each with coefficient of variation ``cv``: (t(1 − α/2, ν) + t(power, ν)) · cv · √(2/n),
    ν = 2(n − 1) — the same normal-noise model as the ratio's interval (Welch on the log scale, where a relative
    spread ``cv`` is ≈ the log's standard deviation). ``paired``: ``n`` paired log ratios whose spread is ``cv``:
    (t(1 − α/2, n − 1) + t(power, n − 1)) · cv / √n. None with fewer than two values (the noise is unknown)."""
    if cv is None or n < 2:
        return None
    df = n - 1 if paired else 2 * (n - 1)
    t_alpha = float(scipy_stats.t.isf((1.0 - confidence) / 2.0, df))
    t_beta = float(scipy_stats.t.ppf(power, df))
    return (t_alpha + t_beta) * cv * (math.sqrt(1.0 / n) if paired else math.sqrt(2.0 / n))


def pair_mde(cv_a: float | None, n_a: int, cv_b: float | None, n_b: int) -> float | None:
    """The resolution of comparing two cells of different noise and repeats: the root mean square of each side's
    half of :func:`mde` (each side contributes cv²/n)."""
    if cv_a is None or cv_b is None or n_a < 2 or n_b < 2:
        return None
    var = cv_a**2 / n_a + cv_b**2 / n_b
    df = n_a + n_b - 2
    t_alpha = float(scipy_stats.t.isf((1.0 - CONFIDENCE) / 2.0, df))
    t_beta = float(scipy_stats.t.ppf(POWER, df))
    return (t_alpha + t_beta) * math.sqrt(var)


# --------------------------------------------------------------------------------------------- one quantity
@dataclass(frozen=True)
class Estimate:
    """A median over repeats with its 95 % t interval (lo/hi None with fewer than two values)."""

    median: float | None
    lo: float | None
    hi: float | None
    n: int

    @property
    def half_width(self) -> float | None:
        """Relative half-width of the interval: (hi − lo) / 2 / median."""
        if self.lo is None or self.hi is None or not self.median:
            return None
        return (self.hi - self.lo) / 2.0 / abs(self.median)

    @property
    def ci(self) -> list[float] | None:
        return None if self.lo is None or self.hi is None else [self.lo, self.hi]

    def text(self, fmt: str = ",.0f", unit: str = "") -> str:
        """ "61,800 [59,900, 63,700]" or "61,800 (1 repeat: no interval)"."""
        if self.median is None:
            return "–"
        s = f"{self.median:{fmt}}{unit}"
        if self.lo is None or self.hi is None:
            return s + f" ({self.n} repeat{'s' if self.n != 1 else ''}: no interval)"
        return s + f" [{self.lo:{fmt}}, {self.hi:{fmt}}]"


def estimate(values: Iterable[float | None], confidence: float = CONFIDENCE) -> Estimate:
    v = clean(values)
    if not v:
        return Estimate(None, None, None, 0)
    med = statistics.median(v)
    if len(v) < 2:
        return Estimate(med, None, None, len(v))
    mean, sd = statistics.fmean(v), statistics.stdev(v)
    half = t_quantile(confidence, len(v) - 1) * sd / math.sqrt(len(v))
    return Estimate(med, mean - half, mean + half, len(v))


# ------------------------------------------------------------------------------------------------ two sides
@dataclass(frozen=True)
class Ratio:
    """A ÷ B: median(A) / median(B) with the 95 % interval of the ratio (None where the noise is unknown)."""

    ratio: float | None
    lo: float | None
    hi: float | None

    @property
    def ci(self) -> list[float] | None:
        return None if self.lo is None or self.hi is None else [self.lo, self.hi]

    @property
    def change(self) -> float | None:
        return None if self.ratio is None else self.ratio - 1.0

    @property
    def beyond_noise(self) -> bool | None:
        """True: the interval excludes 1; False: it holds 1; None: the noise is unknown (or no data)."""
        if self.lo is None or self.hi is None:
            return None
        return self.lo > 1.0 or self.hi < 1.0

    def text(self) -> str:
        """ "+12.3 % [+8.1 %, +16.6 %]" (the change, with its interval)."""
        if self.ratio is None:
            return "–"
        s = _pct(self.ratio - 1.0)
        return s + (f" [{_pct(self.lo - 1.0)}, {_pct(self.hi - 1.0)}]" if self.lo is not None and self.hi else "")

    def times(self) -> str:
        """ "321× [290×, 355×]" (for large ratios: the headline)."""
        if self.ratio is None:
            return "–"
        s = _times(self.ratio)
        return s + (f" [{_times(self.lo)}, {_times(self.hi)}]" if self.lo is not None and self.hi else "")


def _pct(v: float) -> str:
    return f"{v * 100:+.1f} %"


def _times(r: float) -> str:
    return f"{r:,.2f}×" if r < 10 else f"{r:,.0f}×" if r >= 100 else f"{r:,.1f}×"


def ratio(a: Iterable[float | None], b: Iterable[float | None], confidence: float = CONFIDENCE) -> Ratio:
    """median(a) / median(b) and its interval (Welch on the log scale; see the module's docstring)."""
    va, vb = clean(a), clean(b)
    ma, mb = (statistics.median(va) if va else None), (statistics.median(vb) if vb else None)
    if ma is None or not mb:
        return Ratio(None, None, None)
    point = ma / mb
    if len(va) < 2 or len(vb) < 2 or min(va) <= 0 or min(vb) <= 0:
        return Ratio(point, None, None)
    xa, xb = statistics.fmean(va), statistics.fmean(vb)
    ra = statistics.variance(va) / (len(va) * xa * xa)  # relative variance of each mean
    rb = statistics.variance(vb) / (len(vb) * xb * xb)
    centre = math.log(xa / xb)
    if ra + rb == 0:
        return Ratio(point, math.exp(centre), math.exp(centre))
    df = (ra + rb) ** 2 / ((ra * ra / (len(va) - 1) if ra else 0.0) + (rb * rb / (len(vb) - 1) if rb else 0.0))
    half = t_quantile(confidence, df) * math.sqrt(ra + rb)
    return Ratio(point, math.exp(centre - half), math.exp(centre + half))


@dataclass
class Diff:
    """B against A for one metric, from per-repeat values: the ratio B ÷ A and the noise rule."""

    a: list[float]
    b: list[float]
    median_a: float | None
    median_b: float | None
    r: Ratio
    p: float | None  # Welch's two-sided p (informative; None with fewer than two values on a side)

    @property
    def ratio(self) -> float | None:
        return self.r.ratio

    @property
    def change(self) -> float | None:
        return self.r.change

    @property
    def significant(self) -> bool | None:
        """Beyond noise (the ratio's interval excludes 1); None: noise unknown (a single repeat) or no data."""
        return self.r.beyond_noise

    def noise_text(self) -> str:
        if self.r.ratio is None:
            return "no data"
        if self.significant is None:
            return "noise unknown (1 repeat)"
        ci = f"[{_pct(self.r.lo - 1.0)}, {_pct(self.r.hi - 1.0)}]" if self.r.lo is not None and self.r.hi else ""
        return f"beyond noise ({ci})" if self.significant else f"within noise ({ci})"


def diff(a: Sequence[float | None], b: Sequence[float | None]) -> Diff:
    va, vb = clean(a), clean(b)
    p = welch_p(va, vb) if len(va) >= 2 and len(vb) >= 2 else None
    return Diff(va, vb, median(va), median(vb), ratio(vb, va), p)


def beats(a: str, b: str, d: Ratio, *, lower_is_better: bool = False, what: str = "") -> str:
    """The noise rule in words, the better side named first: "A beats B by x % [lo, hi]", "A and B are within noise
    (x % [lo, hi])" or, with one repeat, "A leads B by x % (one repeat: noise unknown)". ``d`` is A's figure ÷ B's;
    higher is better unless ``lower_is_better``."""
    if d.ratio is None or d.ratio <= 0:
        return f"{a} vs {b}: no data"
    a_better = (d.ratio < 1.0) if lower_is_better else (d.ratio >= 1.0)
    win, lose = (a, b) if a_better else (b, a)
    # the winner's figure ÷ the loser's (÷ the other way round when lower is better), so the margin is ≥ 0
    flip = lower_is_better == a_better
    point = 1.0 / d.ratio if flip else d.ratio
    lo = hi = None
    if d.lo is not None and d.hi is not None and d.lo > 0:
        lo, hi = (1.0 / d.hi, 1.0 / d.lo) if flip else (d.lo, d.hi)
    on = f" on {what}" if what else ""
    if lo is None or hi is None:
        return f"{win} leads {lose}{on} by {_pct(point - 1.0).lstrip('+')} (one repeat: noise unknown)"
    interval = f"[{_pct(lo - 1.0)}, {_pct(hi - 1.0)}]"
    if d.beyond_noise:
        return f"{win} beats {lose}{on} by {_pct(point - 1.0).lstrip('+')} {interval}"
    return f"{a} and {b} are within noise{on} ({a} ÷ {b}: {d.text()})"


def within(r: Ratio, bound: float) -> str:
    """A target on a ratio's change (on ÷ off − 1 within ±bound): 'pass' when the whole interval lies inside,
    'fail' when it lies wholly outside, 'cannot_tell' when it straddles a bound (or the noise is unknown)."""
    if r.ratio is None:
        return "cannot_tell"
    if r.lo is None or r.hi is None:
        return "cannot_tell"
    lo, hi = r.lo - 1.0, r.hi - 1.0
    if -bound <= lo and hi <= bound:
        return "pass"
    if hi < -bound or lo > bound:
        return "fail"
    return "cannot_tell"


def at_least(r: Ratio | Estimate, bound: float) -> str:
    """A target "≥ bound" judged on an interval: pass when lo ≥ bound, fail when hi < bound, else cannot_tell.
    A single repeat (no interval) is judged on its point value."""
    point = r.ratio if isinstance(r, Ratio) else r.median
    if point is None:
        return "cannot_tell"
    if r.lo is None or r.hi is None:
        return "pass" if point >= bound else "fail"
    if r.lo >= bound:
        return "pass"
    if r.hi < bound:
        return "fail"
    return "cannot_tell"


def at_most(r: Estimate, bound: float) -> str:
    """A target "≤ bound" judged on an interval (see ``at_least``)."""
    if r.median is None:
        return "cannot_tell"
    if r.lo is None or r.hi is None:
        return "pass" if r.median <= bound else "fail"
    if r.hi <= bound:
        return "pass"
    if r.lo > bound:
        return "fail"
    return "cannot_tell"


def pooled_ratio(ratios: Iterable[float | None], confidence: float = CONFIDENCE) -> Ratio:
    """Several paired ratios (each unit its own control: a cell's sampled ÷ unsampled median) pooled on the log
    scale: the point is exp(median of the ln ratios), the interval ``estimate``'s Student's t over them,
    exponentiated (df = pairs − 1; one pair: no interval)."""
    logs = [math.log(r) for r in clean(ratios) if r > 0]
    e = estimate(logs, confidence)
    if e.median is None:
        return Ratio(None, None, None)
    lo = math.exp(e.lo) if e.lo is not None else None
    hi = math.exp(e.hi) if e.hi is not None else None
    return Ratio(math.exp(e.median), lo, hi)
