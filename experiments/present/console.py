"""What a run prints: a line per cell as it finishes, and the tables at the end (cells with their intervals and
loops, faults, each comparison's winner sentence with its interval, the headline ratios to the seed, targets)."""

from __future__ import annotations

from pathlib import Path

from rich.console import Console
from rich.table import Table

from experiments.analysis import stats
from experiments.analysis.fmt import load_words
from experiments.analysis.winners import group_view, plain
from experiments.results.model import CellResult, RatioCI, Results


def _ci(v: list[float] | None) -> str:
    return f"[{v[0]:,.0f}, {v[1]:,.0f}]" if v else "–"


def _hw(v: float | None) -> str:
    return f"±{v:.1%}" if v is not None else "–"


def cell_line(c: CellResult) -> str:
    """ "baseline: 121,000 readings/s [117,300, 124,800] ±3.1 % · 4 repeats (converged) · closed loop · p99 …"."""
    s = c.summary
    assert s is not None
    p99 = s.latency_ms.p99
    lat = "p99 –" if p99 is None else f"p99 {p99:,.1f} ms"
    lat += " (closed loop: not latency under load)" if s.loop == "closed" and p99 is not None else ""
    flag = " · [red]FAILED[/red]" if s.failed else " · [yellow]UNSTABLE[/yellow]" if s.unstable else ""
    return (
        f"{c.id}: {s.throughput_rps or 0:,.0f} readings/s {_ci(s.throughput_ci95)} {_hw(s.half_width)} · "
        f"{s.repeats_taken} repeats ({s.stop_reason}) · {s.loop} loop · "
        + lat
        + f" · lost {s.lost} · dup {s.duplicated} · bottleneck {s.bottleneck.stage if s.bottleneck else '?'}{flag}"
        + (f" ({s.stop_detail})" if s.stop_detail else "")
    )


def _faults(console: Console, res: Results) -> None:
    rows = [(c, r, r.fault) for c in res.cells for r in c.repeats if r.fault is not None]
    if not rows:
        return
    t = Table(title="faults: recovery and accounting per repeat", header_style="bold")
    for col in ("cell", "fault", "at s", "recovery s", "generated", "committed", "lost", "dup", "result"):
        t.add_column(col, justify="left" if col in ("cell", "fault", "result") else "right")
    for c, r, f in rows:
        a = r.accounting
        rec = f.recovery_s
        style: str | None
        if not f.injected:
            result, style = f.note or "not injected", "yellow"
        elif not r.ok:
            result, style = "FAILED", "red"
        else:
            result, style = ("expected loss (reported)", "yellow") if r.expected_failures else ("ok", None)
        t.add_row(
            c.id if r.kind == "timed" else f"{c.id} ({r.kind})",
            f.kind,
            f"{f.at_s:g}",
            f"{rec:.2f}" if rec is not None else "–",
            f"{a.generated:,}",
            f"{a.committed:,}",
            f"{a.lost:,}",
            f"{a.duplicated:,}",
            result,
            style=style,
        )
    console.print(t)


def _recovery(console: Console, res: Results) -> None:
    """Per fault kind and variant (a fault cell): its recovery time's distribution over the repeats."""
    cells = [c for c in res.cells if c.summary and c.summary.recovery]
    if not cells:
        return
    t = Table(title="faults: recovery time over the repeats (fault at random moments)", header_style="bold")
    for col in ("cell", "fault", "load", "injected", "recovered", "median s", "max s", "min s", "seed", "lost", "dup"):
        t.add_column(col, justify="left" if col in ("cell", "fault") else "right")
    for c in cells:
        s = c.summary
        assert s is not None and s.recovery is not None
        r = s.recovery

        def sec(v: float | None) -> str:
            return f"{v:.2f}" if v is not None else "–"

        t.add_row(
            c.id, r.kind, load_words(c.load, short=True), f"{r.injected}/{r.repeats}", str(r.recovered),
            sec(r.median_s), sec(r.max_s), sec(r.min_s), str(r.seed) if r.seed is not None else "fixed", str(s.lost),
            str(s.duplicated),
            style="red" if s.failed else None,
        )  # fmt: skip
    console.print(t)


def headline_lines(res: Results) -> list[str]:
    def one(name: str, r: RatioCI | None) -> str | None:
        if r is None:
            return None
        if r.ratio is None:
            return f"{name}: {r.numerator} (no seed cell in this run to divide by)"
        text = stats.Ratio(r.ratio, *(r.ci95 or (None, None))).times()
        return f"{name}: {text} — {r.numerator} ÷ {r.denominator} ({r.label})"

    out = [one("best full job vs seed", res.headline.full_job_vs_seed),
           one("best database-only vs seed", res.headline.db_only_vs_seed)]  # fmt: skip
    return [x for x in out if x]


MARK = {"pass": "[green]PASS[/green]", "fail": "[red]FAIL[/red]", "cannot_tell": "[yellow]CANNOT TELL[/yellow]"}


def sampling_cost_line(res: Results) -> str | None:
    """The run's py-spy cost as the console states it (None when the run sampled nothing)."""
    mode = res.matrix.get("sampling", "off")
    if mode == "off":
        return None
    c = res.sampling_cost
    how = (f"py-spy {res.matrix.get('sampling_hz', '?')} Hz, "
           f"{'native frames, pausing' if res.matrix.get('sampling_native') else 'Python frames, nonblocking'}, "
           f"sampling = {mode!r}")  # fmt: skip
    if not c:
        return f"sampling cost ({how}): not measured (no closed-loop cell with sampled and unsampled repeats)"
    status = MARK.get(c["status"], MARK["cannot_tell"])
    excluded = (" · the sampled repeats are excluded from their cells' intervals" if c.get("excluded")
                else " · the sampled repeats count in their cells' intervals" if mode == "one" else "")  # fmt: skip
    return f"{status} sampling cost ({how}): {c['text']} (target ≤ {c['bound'] * 100:g} %){excluded}"


def print_summary(console: Console, res: Results, name: str, results_path: Path, report: Path | None) -> None:
    if not console.is_terminal:  # a log file or CI: don't squeeze the table into 80 columns
        console.width = max(console.width, 180)
    t = Table(title=f"telemetry-bench · {name} · {res.run_id}", header_style="bold")
    for col in ("cell", "readings/s", "95 % interval", "±", "repeats", "stop", "loop", "% ceiling", "p50 ms",
                "p99 ms", "lost", "dup", "bottleneck"):  # fmt: skip
        t.add_column(col, justify="left" if col in ("cell", "stop", "loop", "bottleneck") else "right")
    for c in res.cells:
        s = c.summary
        if s is None:
            continue
        style = "red" if s.failed else ("yellow" if s.unstable else None)
        closed = s.loop == "closed"  # a closed loop's latency is not latency under load: shown in brackets
        t.add_row(
            c.id,
            f"{s.throughput_rps or 0:,.0f}",
            _ci(s.throughput_ci95),
            _hw(s.half_width),
            str(s.repeats_taken),
            s.stop_reason,
            s.loop,
            f"{s.fraction_of_ceiling:.1%}" if s.fraction_of_ceiling else "–",
            ("({:,.1f})" if closed else "{:,.1f}").format(s.latency_ms.p50) if s.latency_ms.p50 is not None else "–",
            ("({:,.1f})" if closed else "{:,.1f}").format(s.latency_ms.p99) if s.latency_ms.p99 is not None else "–",
            str(s.lost),
            str(s.duplicated),
            s.bottleneck.stage if s.bottleneck else "–",
            style=style,
        )
    console.print(t)
    target = res.matrix.get("ci_target")
    console.print(
        "median over repeats, 95 % interval: Student's t over repeats; ± = half-width ÷ median"
        + (f" (target ±{target:.0%})" if target else "")
        + "; latency in brackets: closed loop (max rate), not latency under load",
        highlight=False,
    )
    _faults(console, res)
    _recovery(console, res)
    by_id = {c.id: c for c in res.cells}
    for g in res.matrix.get("groups", []):
        view = group_view(g, by_id, res.ceiling_rps)
        console.print(f"[bold]{g.get('title', g.get('name'))}[/bold]: {plain(view['sentence'])}", highlight=False)
    for line in headline_lines(res):
        console.print(f"[bold]{line}[/bold]", highlight=False)
    if res.resolution:
        console.print(f"resolution: {res.resolution['text']}", highlight=False)
    if cost := sampling_cost_line(res):
        console.print(cost, highlight=False)
    for tg in res.targets:
        console.print(f"{MARK[tg.status]} {tg.name}: {tg.measured} (target {tg.target})", highlight=False)
    if res.failed_cells:
        console.print(
            f"[bold red]FAILED cells (lost/duplicated readings or a stage error): "
            f"{', '.join(res.failed_cells)}[/bold red]"
        )
    if line := time_spent(res):
        console.print(line, highlight=False)
    console.print(f"results: {results_path}")
    console.print(f"report:  {report}")


def time_spent(res: Results) -> str:
    """Where the repeats' wall time went (each repeat's ``phases_s``, summed): what to shorten to shorten a run."""
    totals: dict[str, float] = {}
    n = 0
    for c in res.cells:
        for r in c.repeats:
            if r.phases_s:
                n += 1
                for k, v in r.phases_s.items():
                    totals[k] = totals.get(k, 0.0) + v
    if not n:
        return ""
    whole = sum(totals.values())
    parts = " · ".join(f"{k} {v:,.0f} s ({v / whole:.0%})" for k, v in totals.items())
    return f"time in {n} repeats: {whole:,.0f} s — {parts}"
