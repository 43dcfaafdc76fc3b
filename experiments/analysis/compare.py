"""Is a difference beyond the repeats' noise? Per-cell comparison of two runs (``telemetry-bench compare A B``).

The rule is ``experiments.analysis.stats``'s, the one the report and the console use: B differs from A *beyond noise*
when the 95 % interval of B ÷ A (Welch on the log scale) excludes 1. With a single repeat on either side the noise is
unknown: the change is reported as such, and ``--fail-above`` then judges on the ratio alone (as asv does without
statistics).

``telemetry-bench compare RUN_A RUN_B`` matches cells by id and compares, per cell, the throughput (readings/s,
higher is better) and the exact p99 latency (lower is better) of B against A, from the timed repeats. It prints a
table and writes it as Markdown to ``compare-<A>-vs-<B>.md`` beside B's run directory (``reports/`` by default;
``--out`` overrides). With ``--fail-above PCT`` it exits 1 when a cell regressed by more than PCT %: throughput
lower beyond noise (any cell), p99 latency higher beyond noise (open-loop cells, whose throughput is pinned to the
offered rate; a closed-loop cell's latency is never compared), or an accounting failure in B that A did not have.

For every cell whose throughput changed beyond noise and whose repeats were sampled in both runs (matrix key
``sampling``), the Markdown adds, per stage, the functions whose share of self samples changed most
(``experiments.sampling.diff`` over each cell's merged samples): a regression comes with its likely cause.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from experiments.analysis import stacks, stats
from experiments.results.model import Results, failed, loop_of, p99s, throughputs
from experiments.results.storage import ROOT
from harness.plan import PipelineConfig

PROFILE_CHANGES = 8  # functions listed per stage

CONFIDENCE = 0.95


# ------------------------------------------------------------------------------------------------- statistics
# the rule lives in experiments.analysis.stats; these names stay importable from here
CONFIDENCE = stats.CONFIDENCE
Diff = stats.Diff
diff = stats.diff
t_two_sided_p = stats.t_two_sided_p


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
    # stage → the functions whose share of samples changed most (throughput changed beyond noise, both sampled)
    profile_changes: dict[str, list[stacks.Change]] = field(default_factory=dict)

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


def compare(a: Results, b: Results, fail_above: float | None = None, roots: list[Path] | None = None) -> Comparison:
    """Per cell (matched by id, in B's order then A's leftovers): throughput and p99 latency, B against A, and
    the sampled profiles' changes where throughput changed beyond noise (files resolved under ``roots``, default
    the repository)."""
    roots = roots or [ROOT]
    by_a = {c.id: c for c in a.cells}
    by_b = {c.id: c for c in b.cells}
    order = [c.id for c in b.cells] + [c.id for c in a.cells if c.id not in by_b]
    out: list[CellChange] = []
    for cid in order:
        ca, cb = by_a.get(cid), by_b.get(cid)
        ch = CellChange(cid, ca is not None, cb is not None)
        if ca is not None and cb is not None:
            ch.open_loop = loop_of(cb.params) == "open" and loop_of(ca.params) == "open"
            ch.throughput = diff(throughputs(ca), throughputs(cb))
            ch.p99 = diff(p99s(ca), p99s(cb))
            ch.failed_a, ch.failed_b = failed(ca), failed(cb)
            skip = {"duration", "count"}
            ch.params_differ = sorted(
                k
                for k in PipelineConfig.model_fields
                if k not in skip and getattr(ca.params, k) != getattr(cb.params, k)
            )
            if fail_above is not None:
                ch.regressions = _regressions(ch, fail_above / 100.0)
            if ch.throughput.significant:
                sa, sb = stacks.cell_stacks(ca, roots), stacks.cell_stacks(cb, roots)
                ch.profile_changes = {s: stacks.diff(sa[s], sb[s], PROFILE_CHANGES) for s in sb if s in sa}
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
        f"Beyond noise: the {CONFIDENCE:.0%} interval of B ÷ A (Welch's t on the log scale, in brackets) excludes "
        "no change. Open-loop cells (throughput pinned to the offered rate) are judged on p99 latency; closed-loop "
        "cells' latency is not compared.",
        "",
        *_table(header, rows, right={1, 2, 3, 5, 6, 7}),
        "",
    ]
    changed = [c for c in cmp.cells if c.throughput is not None and c.throughput.significant]
    for c in changed:
        assert c.throughput is not None
        lines.append(f"- {c.cell}: " + stats.beats("B", "A", c.throughput.r, what="throughput"))
    if changed:
        lines.append("")
    lines += _profile_changes(cmp)
    if cmp.fail_above is not None:
        regs = cmp.regressions
        if regs:
            lines.append(f"**{len(regs)} regression(s) larger than {cmp.fail_above:g} %:** "
                         + "; ".join(f"{c.cell} ({', '.join(c.regressions)})" for c in regs))  # fmt: skip
        else:
            lines.append(f"No regression larger than {cmp.fail_above:g} %.")
        lines.append("")
    return "\n".join(lines)


def _profile_changes(cmp: Comparison) -> list[str]:
    """Per cell that changed beyond noise, per stage: the functions whose share of self samples moved most."""
    cells = [c for c in cmp.cells if c.profile_changes]
    if not cells:
        return []
    lines = ["## Where the time moved (sampled profiles, share of self samples A → B)", ""]
    for c in cells:
        lines += [f"### {c.cell}", ""]
        for stage, changes in c.profile_changes.items():
            rows = [[f"`{ch.function}`", f"{ch.before:.1%}", f"{ch.after:.1%}", f"{ch.delta * 100:+.1f} pt",
                     "idle wait" if ch.idle else ""] for ch in changes]  # fmt: skip
            lines += [f"{stage}:", "", *_table(["function", "A", "B", "change", ""], rows, right={1, 2, 3}), ""]
    return lines


def default_output(run_b_dir: Path, run_a: str, run_b: str) -> Path:
    """``compare-<A>-vs-<B>.md`` in the reports directory holding B."""
    return run_b_dir.parent / f"compare-{run_a}-vs-{run_b}.md"
