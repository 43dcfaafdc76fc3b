"""Is a difference beyond the repeats' noise? Per-cell comparison of two runs (``telemetry-bench compare A B``).

The rule, used both here and by the HTML report (``experiments/report.py``) to name a comparison's winner:

    Two sets of per-repeat values differ *beyond noise* when each has at least two repeats, their min–max ranges
    do not overlap, and Welch's two-sample t-test rejects "same mean" at 95 % (two-sided p < 0.05, the test
    pyperf's ``compare_to`` applies). With a single repeat on either side the noise is unknown: the change is
    reported as such, and ``--fail-above`` then judges on the ratio alone (as asv does without statistics).

``telemetry-bench compare RUN_A RUN_B`` matches cells by id and compares, per cell, the throughput (readings/s,
higher is better) and the exact p99 latency (lower is better) of B against A, from the timed repeats. It prints a
table and writes it as Markdown to ``compare-<A>-vs-<B>.md`` beside B's run directory (``reports/`` by default;
``--out`` overrides). With ``--fail-above PCT`` it exits 1 when a cell regressed by more than PCT %: throughput
lower beyond noise (any cell), p99 latency higher beyond noise (open-loop cells, whose throughput is pinned to the
offered rate), or an accounting failure in B that A did not have.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from experiments.results import CellResult, Results

CONFIDENCE = 0.95


# ------------------------------------------------------------------------------------------------- statistics
def _betacf(a: float, b: float, x: float) -> float:
    """Continued fraction of the regularized incomplete beta function (modified Lentz)."""
    tiny = 1e-300
    qab, qap, qam = a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 300):
        m2 = 2 * m
        aa = m * (b - m) * x / ((qam + m2) * (a + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c
        c = c if abs(c) > tiny else tiny
        h *= d * c
        aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c
        c = c if abs(c) > tiny else tiny
        delta = d * c
        h *= delta
        if abs(delta - 1.0) < 1e-12:
            break
    return h


def _betainc(a: float, b: float, x: float) -> float:
    """I_x(a, b), the regularized incomplete beta function."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    front = math.exp(math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x))
    if x < (a + 1.0) / (a + b + 2.0):
        return front * _betacf(a, b, x) / a
    return 1.0 - front * _betacf(b, a, 1.0 - x) / b


def t_two_sided_p(t: float, df: float) -> float:
    """P(|T| ≥ |t|) for Student's t with ``df`` degrees of freedom."""
    if math.isinf(t):
        return 0.0
    if df <= 0 or math.isnan(t):
        return math.nan
    return _betainc(df / 2.0, 0.5, df / (df + t * t))


def welch(a: Sequence[float], b: Sequence[float]) -> tuple[float, float, float]:
    """(t, degrees of freedom, two-sided p) of Welch's t-test; needs two values on each side."""
    ma, mb = statistics.fmean(a), statistics.fmean(b)
    va, vb = statistics.variance(a) / len(a), statistics.variance(b) / len(b)
    if va + vb == 0:  # no spread at all: equal means are the same, different ones are different
        return (0.0, math.inf, 1.0) if ma == mb else (math.inf, math.inf, 0.0)
    t = (mb - ma) / math.sqrt(va + vb)
    df = (va + vb) ** 2 / ((va * va / (len(a) - 1) if va else 0.0) + (vb * vb / (len(b) - 1) if vb else 0.0))
    return t, df, t_two_sided_p(t, df)


@dataclass
class Diff:
    """B against A for one metric, from per-repeat values."""

    a: list[float]
    b: list[float]
    median_a: float | None
    median_b: float | None
    ratio: float | None  # median(B) / median(A)
    p: float | None  # Welch's two-sided p (None: fewer than two values on a side)
    overlap: bool | None  # the min–max ranges overlap
    significant: bool | None  # beyond noise; None: noise unknown (a single repeat on a side) or no data

    @property
    def change(self) -> float | None:
        return None if self.ratio is None else self.ratio - 1.0

    def noise_text(self) -> str:
        if self.ratio is None:
            return "no data"
        if self.significant is None:
            return "noise unknown (1 repeat)"
        if self.significant:
            return (
                f"beyond noise (p={self.p:.3f})" if self.p is not None and self.p >= 0.001 else "beyond noise (p<0.001)"
            )
        why = "ranges overlap" if self.overlap else f"p={self.p:.2f}"
        return f"within noise ({why})"


def diff(a: Sequence[float | None], b: Sequence[float | None]) -> Diff:
    """Compare two sets of per-repeat values with the rule in this module's docstring."""
    va = [float(x) for x in a if x is not None and not math.isnan(x)]
    vb = [float(x) for x in b if x is not None and not math.isnan(x)]
    ma = statistics.median(va) if va else None
    mb = statistics.median(vb) if vb else None
    ratio = mb / ma if ma and mb is not None else None
    if not va or not vb:
        return Diff(va, vb, ma, mb, ratio, None, None, None)
    overlap = max(va) >= min(vb) and max(vb) >= min(va)
    if len(va) < 2 or len(vb) < 2:
        return Diff(va, vb, ma, mb, ratio, None, overlap, None)
    _, _, p = welch(va, vb)
    significant = (not overlap) and p < 1.0 - CONFIDENCE
    return Diff(va, vb, ma, mb, ratio, p, overlap, significant)


def throughputs(cell: CellResult) -> list[float]:
    return [r.throughput_rps for r in cell.repeats if r.throughput_rps is not None]


def p99s(cell: CellResult) -> list[float]:
    return [r.latency_ms.p99 for r in cell.repeats if r.latency_ms.p99 is not None]


# ---------------------------------------------------------------------------------------------- run vs run
@dataclass
class CellChange:
    cell: str
    in_a: bool
    in_b: bool
    open_loop: bool = False
    throughput: Diff | None = None
    p99: Diff | None = None
    failed_a: bool = False
    failed_b: bool = False
    params_differ: list[str] = field(default_factory=list)
    regressions: list[str] = field(default_factory=list)  # filled by ``compare`` when a threshold is given

    def verdict(self) -> str:
        if not self.in_a:
            return "only in B"
        if not self.in_b:
            return "only in A"
        if self.failed_b and not self.failed_a:
            return "FAILED in B (accounting)"
        d = self.p99 if self.open_loop and self._tp_flat() else self.throughput
        if d is None or d.ratio is None:
            return "no data"
        better = d.ratio > 1 if d is self.throughput else d.ratio < 1
        what = "faster" if d is self.throughput else "lower latency"
        worse = "slower" if d is self.throughput else "higher latency"
        if d.significant is None:
            return f"{what if better else worse}? (noise unknown)"
        if not d.significant:
            return "no change (within noise)"
        return what if better else worse

    def _tp_flat(self) -> bool:
        return self.throughput is None or not self.throughput.significant


@dataclass
class Comparison:
    run_a: str
    run_b: str
    cells: list[CellChange]
    fail_above: float | None = None

    @property
    def regressions(self) -> list[CellChange]:
        return [c for c in self.cells if c.regressions]


def _cell_failed(c: CellResult) -> bool:
    return bool(c.summary.failed) if c.summary else any(not r.ok for r in c.repeats)


def compare(a: Results, b: Results, fail_above: float | None = None) -> Comparison:
    """Per cell (matched by id, in B's order then A's leftovers): throughput and p99 latency, B against A."""
    by_a = {c.id: c for c in a.cells}
    by_b = {c.id: c for c in b.cells}
    order = [c.id for c in b.cells] + [c.id for c in a.cells if c.id not in by_b]
    out: list[CellChange] = []
    for cid in order:
        ca, cb = by_a.get(cid), by_b.get(cid)
        ch = CellChange(cid, ca is not None, cb is not None)
        if ca is not None and cb is not None:
            ch.open_loop = not cb.params.get("max_rate", True)
            ch.throughput = diff(throughputs(ca), throughputs(cb))
            ch.p99 = diff(p99s(ca), p99s(cb))
            ch.failed_a, ch.failed_b = _cell_failed(ca), _cell_failed(cb)
            skip = {"duration", "count"}
            ch.params_differ = sorted(
                k for k in set(ca.params) | set(cb.params) if k not in skip and ca.params.get(k) != cb.params.get(k)
            )
            if fail_above is not None:
                ch.regressions = _regressions(ch, fail_above / 100.0)
        out.append(ch)
    return Comparison(a.run_id, b.run_id, out, fail_above)


def _regressions(ch: CellChange, limit: float) -> list[str]:
    found = []
    if ch.failed_b and not ch.failed_a:
        found.append("accounting failed in B")
    t = ch.throughput
    if t is not None and t.ratio is not None and t.significant is not False and t.ratio < 1.0 - limit:
        found.append(f"throughput {t.ratio - 1:+.1%}" + (" (noise unknown)" if t.significant is None else ""))
    p = ch.p99
    if ch.open_loop and p is not None and p.ratio is not None and p.significant is not False and p.ratio > 1 + limit:
        found.append(f"p99 latency {p.ratio - 1:+.1%}" + (" (noise unknown)" if p.significant is None else ""))
    return found


# -------------------------------------------------------------------------------------------------- output
def _num(v: float | None, fmt: str = ",.0f") -> str:
    return "–" if v is None else format(v, fmt)


def _pct(d: Diff | None) -> str:
    return "–" if d is None or d.change is None else f"{d.change:+.1%}"


def _table(header: list[str], rows: list[list[str]], right: set[int]) -> list[str]:
    widths = [max(len(header[i]), *(len(r[i]) for r in rows)) if rows else len(header[i]) for i in range(len(header))]

    def line(cells: list[str]) -> str:
        return (
            "| "
            + " | ".join(
                c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths, strict=True))
            )
            + " |"
        )

    sep = "|" + "|".join(("-" * (w + 1) + ":") if i in right else ("-" * (w + 2)) for i, w in enumerate(widths)) + "|"
    return [line(header), sep, *(line(r) for r in rows)]


def to_markdown(cmp: Comparison) -> str:
    header = ["cell", "A readings/s", "B readings/s", "B/A", "throughput", "A p99 ms", "B p99 ms", "p99 B/A",
              "p99", "verdict"]  # fmt: skip
    rows = []
    for c in cmp.cells:
        t, p = c.throughput, c.p99
        verdict = c.verdict() + (f" · REGRESSION: {', '.join(c.regressions)}" if c.regressions else "")
        if c.params_differ:
            verdict += f" · params differ: {', '.join(c.params_differ)}"
        rows.append([
            c.cell,
            _num(t.median_a if t else None), _num(t.median_b if t else None), _pct(t),
            t.noise_text() if t else "–",
            _num(p.median_a if p else None, ",.1f"), _num(p.median_b if p else None, ",.1f"), _pct(p),
            p.noise_text() if p else "–",
            verdict,
        ])  # fmt: skip
    lines = [
        f"# {cmp.run_b} vs {cmp.run_a}",
        "",
        f"A = `{cmp.run_a}`, B = `{cmp.run_b}`. Per cell, medians over the timed repeats; B/A as a change.",
        "Beyond noise: at least two repeats each, min–max ranges that do not overlap, and Welch's t-test "
        f"p < {1 - CONFIDENCE:.2f}. Open-loop cells (throughput pinned to the offered rate) are judged on p99 latency.",
        "",
        *_table(header, rows, right={1, 2, 3, 5, 6, 7}),
        "",
    ]
    if cmp.fail_above is not None:
        regs = cmp.regressions
        if regs:
            lines.append(f"**{len(regs)} regression(s) larger than {cmp.fail_above:g} %:** "
                         + "; ".join(f"{c.cell} ({', '.join(c.regressions)})" for c in regs))  # fmt: skip
        else:
            lines.append(f"No regression larger than {cmp.fail_above:g} %.")
        lines.append("")
    return "\n".join(lines)


def default_output(run_b_dir: Path, run_a: str, run_b: str) -> Path:
    """``compare-<A>-vs-<B>.md`` in the reports directory holding B."""
    return run_b_dir.parent / f"compare-{run_a}-vs-{run_b}.md"
