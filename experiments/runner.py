"""The experiment runner: every cell of a matrix as real processes, timed repeats, then a profiled repeat.

    telemetry-bench run --matrix default [--repeats N] [--profile cprofile|yappi|none] [--out reports]

Per repeat: a fresh table and queue, the stages started by the orchestrator, the generator run for
warmup + measured window + tail (open loop at the cell's rate, or max rate with bounded in-flight), a clean stop,
then the accounting, the window's throughput, exact latencies from the table, Prometheus histograms, resources,
queue growth, PostgreSQL deltas and a bottleneck verdict. ``results.json`` is rewritten after every repeat.
Profiled repeats are separate from timed ones: a profiler changes what it measures.
"""

from __future__ import annotations

import collections
import functools
import logging
import statistics
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from experiments import ceilings as ceilings_mod
from experiments import measure, metadata
from experiments.matrix import Cell, Matrix
from experiments.report import build_index, build_report
from experiments.results import Ceilings, CellResult, Latency, Profile, Repeat, Results, Summary, Target
from harness.orchestrator import Fault, Orchestrator
from harness.services import Services, redact_dsn, versions
from pipeline.wiring import FORWARD_SUFFIX

log = logging.getLogger("telemetry_bench.runner")

SCHEMA = "bench"
QUEUE_KEY = "bench:queue"
UNSTABLE_CV = 0.10
ROOT = Path(__file__).resolve().parent.parent


def cell_config(cell: Cell, m: Matrix) -> Any:
    """The cell's PipelineConfig, with a generation time of warmup + window + tail unless it sets count/duration."""
    cfg = cell.params
    if not cfg.count and not cfg.duration:
        cfg = cfg.model_copy(update={"duration": m.warmup_s + m.measure_s + m.tail_s})
    return cfg


async def run_repeat(
    cell: Cell,
    m: Matrix,
    services: Services,
    workdir: Path,
    index: int,
    on_progress: Callable[[dict[str, Any]], None] | None = None,
    python_prefix: Callable[[str], list[str]] | None = None,
) -> tuple[dict[str, Any], Orchestrator]:
    cfg = cell_config(cell, m)
    monitor = measure.ResourceMonitor(QUEUE_KEY)
    fault = Fault(cell.fault, cell.fault_at_s) if cell.fault else None
    orch = Orchestrator(
        cfg,
        services,
        workdir,
        schema=SCHEMA,
        queue_key=QUEUE_KEY,
        monitor=monitor,
        on_progress=on_progress,
        python_prefix=python_prefix,
        fault=fault,
    )
    before = measure.pg_stats(services.pg_dsn, SCHEMA)  # WAL position and checkpoints (the table is recreated)
    t0 = time.time()
    try:
        result = await orch.run()
    finally:
        await monitor.close()
    duration = time.time() - t0
    acct = result.accounting
    after = measure.pg_stats(services.pg_dsn, SCHEMA)
    window = measure.measure_window(services.pg_dsn, SCHEMA, m.warmup_s, m.measure_s)
    bounds = measure.intended_bounds(services.pg_dsn, SCHEMA)
    lat: dict[str, dict[str, Any]] = {"intended": {"n": 0}, "sent": {"n": 0}}
    e2e: dict[str, Any] = {"n": 0}
    e2e_rate = None
    if bounds:
        since = bounds[0] + round(m.warmup_s * 1e9)
        until = since + round(m.measure_s * 1e9)
        lat = measure.latencies(services.pg_dsn, SCHEMA, since, until)
        if orch.probes:
            p = orch.probes[0]
            e2e, e2e_rate = measure.end_to_end(p.arrivals, p.intended, p.latencies, window, since, until)
    win = (window.start_ns / 1e9, window.end_ns / 1e9) if window else None
    resources = monitor.resources(win)
    growth = {
        "writer_queue": monitor.queue_growth(QUEUE_KEY, win),
        "forward_queue": monitor.queue_growth(QUEUE_KEY + FORWARD_SUFFIX, win),
    }
    buckets, prom_q, prom_sums = measure.prometheus_data(orch)
    throughput = window.throughput if window else None
    verdict = measure.bottleneck(
        cfg,
        resources,
        growth,
        throughput,
        window.seconds if window else None,
        prom_q,
        prom_sums,
        (result.stream_ended_ns - result.started_ns) / 1e9,
    )
    failures, expected = result.failures, []
    if cell.expect_loss:  # the design loses readings by construction: report, don't fail
        expected = [f for f in failures if "lost" in f or "duplicated" in f]
        failures = [f for f in failures if f not in expected]
    repeat = {
        "index": index,
        "ok": not failures,
        "failures": failures,
        "expected_failures": expected,
        "fault": result.fault.as_dict() if result.fault else None,
        "throughput_rps": throughput,
        "window_s": window.seconds if window else None,
        "window_complete": bool(window and window.complete),
        "latency_ms": lat["intended"],
        "latency_sent_ms": lat["sent"],
        "e2e_latency_ms": e2e,
        "e2e_throughput_rps": e2e_rate,
        "accounting": acct.as_dict(),
        "resources": resources,
        "queue_len": {k: [[round(a, 3), b] for a, b in v] for k, v in monitor.queue_series.items()},
        "pg": measure.pg_deltas(before, after, acct.committed),
        "prometheus": buckets,
        "prometheus_quantiles_ms": prom_q,
        "duration_s": duration,
        "drain_s": (result.drained_ns - result.stream_ended_ns) / 1e9,
        "bottleneck": verdict,
    }
    return repeat, orch


def run_order(cells: list[Cell], repeats: Callable[[Cell], int], interleave: bool) -> list[tuple[Cell, int]]:
    """(cell, repeat index) in run order. Interleaved: round-robin over the cells, one repeat each per round, so
    slow drift of the machine (caches, WAL, checkpoints, clocks) spreads over every cell instead of biasing the
    ones that happen to run later. Otherwise cell by cell."""
    if not interleave:
        return [(c, i) for c in cells for i in range(repeats(c))]
    rounds = max((repeats(c) for c in cells), default=0)
    return [(c, i) for i in range(rounds) for c in cells if i < repeats(c)]


def redact_argv(argv: list[str]) -> list[str]:
    """The command line with every password in a DSN/URL argument (``--pg-dsn URL`` or ``--pg-dsn=URL``) masked."""
    out = []
    for arg in argv:
        flag, eq, value = arg.partition("=")
        out.append(f"{flag}={redact_dsn(value)}" if arg.startswith("--") and eq else redact_dsn(arg))
    return out


def summarize(cell: CellResult, ceiling: float | None) -> Summary:
    reps = cell.repeats
    tps = [r.throughput_rps for r in reps if r.throughput_rps is not None]
    med, cv = measure.summarize_values(tps)

    def lat(attr: str) -> dict[str, Any]:
        out: dict[str, Any] = {"n": sum(getattr(r, attr).n for r in reps)}
        for p in ("p50", "p95", "p99"):
            vals = [getattr(getattr(r, attr), p) for r in reps if getattr(getattr(r, attr), p) is not None]
            out[p] = statistics.median(vals) if vals else None
        maxes = [getattr(r, attr).max for r in reps if getattr(r, attr).max is not None]
        out["max"] = max(maxes) if maxes else None
        return out

    cpu = []
    for r in reps:
        committed = r.accounting.get("committed") or 0
        if committed:
            cpu.append(sum(s.cpu_s for s in r.resources.values()) / committed)
    verdicts = [r.bottleneck for r in reps if r.bottleneck]
    bn = None
    if verdicts:  # the most frequent verdict over the repeats
        stage = collections.Counter(v.stage for v in verdicts).most_common(1)[0][0]
        bn = next(v for v in verdicts if v.stage == stage)

    def total(key: str) -> int:
        return sum(int(r.accounting.get(key, 0)) for r in reps)

    return Summary(
        throughput_rps=med,
        throughput_min_rps=min(tps) if tps else None,
        throughput_max_rps=max(tps) if tps else None,
        cv=cv,
        unstable=bool(cv is not None and cv > UNSTABLE_CV),
        fraction_of_ceiling=(med / ceiling) if med and ceiling else None,
        readings_generated=total("generated"),
        readings_committed=total("committed"),
        lost=total("lost"),
        duplicated=total("duplicated"),
        forwarded=total("forwarded"),
        broadcast=total("broadcast"),
        unsent=total("unsent"),
        latency_ms=Latency(**lat("latency_ms")),
        latency_sent_ms=Latency(**lat("latency_sent_ms")),
        e2e_latency_ms=Latency(**lat("e2e_latency_ms")),
        e2e_throughput_rps=measure.summarize_values([r.e2e_throughput_rps for r in reps if r.e2e_throughput_rps])[0],
        cpu_s_per_reading=statistics.median(cpu) if cpu else None,
        bottleneck=bn,
        failed=any(not r.ok for r in reps) or not reps,
    )


class Runner:
    def __init__(
        self,
        m: Matrix,
        services: Services,
        *,
        repeats: int | None = None,
        profile: str = "cprofile",
        out: Path = ROOT / "reports",
        profiles: Path = ROOT / "profiles",
        console: Console | None = None,
        argv: list[str] | None = None,
    ) -> None:
        self.m, self.services = m, services
        self.repeats_override = repeats
        self.repeats = repeats or m.repeats
        self.profile = profile
        self.console = console or Console(stderr=True)
        self.run_id = metadata.run_id()
        self.dir = out / self.run_id
        self.profile_dir = profiles / self.run_id
        self.report: Path | None = None
        self.results = Results(
            run_id=self.run_id,
            created=datetime.now(UTC).isoformat(),
            git=metadata.git_commit(),
            machine=metadata.machine(),
            software=metadata.software(),
            services={
                "postgresql": {"source": services.pg_source, "dsn": redact_dsn(services.pg_dsn)},
                "redis": {"source": services.redis_source, "url": redact_dsn(services.redis_url)},
                "versions": versions(services),
            },
            matrix=m.as_dict(),
            settings={
                "repeats": self.repeats,
                "profile": profile,
                "warmup_s": m.warmup_s,
                "measure_s": m.measure_s,
                "tail_s": m.tail_s,
                "argv": redact_argv(argv or sys.argv),
            },
        )

    @property
    def results_path(self) -> Path:
        return self.dir / "results.json"

    def save(self) -> None:
        self.results.write(self.results_path)

    async def run(self) -> Results:
        self.dir.mkdir(parents=True, exist_ok=True)
        self.save()
        self.console.print(
            f"run {self.run_id}: matrix {self.m.name!r}, {len(self.m.cells)} cells × "
            f"{self.repeats} repeats, profile {self.profile} → {self.results_path}"
        )
        self.console.print("measuring this machine's ceilings (binary COPY, Redis push/pop, decode)…")
        c = await ceilings_mod.measure(self.services.pg_dsn, self.services.redis_url, SCHEMA)
        self.results.ceilings = Ceilings(**c)
        self.save()
        self.console.print(
            f"ceilings: binary COPY {c['copy_binary_rps']:,.0f} rows/s · Redis push/pop "
            f"{c['redis_pushpop_rps']:,.0f}/s · direct decode {c['decode_direct_rps']:,.0f}/s"
        )
        total = sum(self.cell_repeats(c) + (0 if self.profile == "none" or not c.profile else 1) for c in self.m.cells)
        progress = Progress(
            SpinnerColumn(),
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=self.console,
        )
        with progress:
            overall = progress.add_task("all cells", total=total)
            task = progress.add_task("", total=None)
            # cells offered a fraction of another's measured rate run after the others
            for phase in ([c for c in self.m.cells if c.rate_of is None], [c for c in self.m.cells if c.rate_of]):
                await self._run_phase(phase, progress, overall, task)
        self.results.finished = datetime.now(UTC).isoformat()
        self.results.failed_cells = [c.id for c in self.results.cells if c.summary and c.summary.failed]
        if self.m.targets:
            from experiments.targets import TARGET_SETS

            self.results.targets = [Target(**t) for t in TARGET_SETS[self.m.targets](self.results)]
        self.save()
        self.report = build_report(self.dir)
        build_index(self.dir.parent)
        return self.results

    def cell_repeats(self, cell: Cell) -> int:
        return self.repeats_override or cell.repeats or self.m.repeats

    def _resolve_rate(self, cell: Cell) -> None:
        """A cell offered a fraction of an earlier cell's measured throughput (open loop)."""
        if cell.rate_of is None:
            return
        if cell.rate_of.startswith("group:"):  # the group's best cell so far
            group = cell.rate_of.removeprefix("group:")
            members = [c for c in self.results.cells if group in c.groups and c.summary and not c.summary.failed]
            ref = max(members, key=lambda c: c.summary.throughput_rps or 0.0, default=None)  # type: ignore[union-attr]
        else:
            ref = next((c for c in self.results.cells if c.id == cell.rate_of), None)
        tp = ref.summary.throughput_rps if ref and ref.summary else None
        if not tp:
            raise RuntimeError(f"cell {cell.id}: rate_of {cell.rate_of!r} has no measured throughput")
        cell.params = cell.params.model_copy(update={"rate": round(cell.rate_fraction * tp), "max_rate": False})

    def _order(self, cells: list[Cell]) -> list[tuple[Cell, int]]:
        return run_order(cells, self.cell_repeats, self.m.interleave)

    async def _run_phase(self, cells: list[Cell], progress: Progress, overall: Any, task: Any) -> None:
        results: dict[str, CellResult] = {}
        for cell in cells:
            self._resolve_rate(cell)
            results[cell.id] = CellResult(
                id=cell.id, title=cell.title, groups=cell.groups, varied=cell.varied,
                params=cell_config(cell, self.m).model_dump(), repeats=[],
            )  # fmt: skip
            self.results.cells.append(results[cell.id])
        last = {"t": time.monotonic(), "n": 0, "rate": 0.0}

        def on_progress(snap: dict[str, Any], label: str) -> None:
            now = time.monotonic()
            if now - last["t"] >= 0.5:
                last["rate"] = (snap["committed"] - last["n"]) / (now - last["t"])
                last["t"], last["n"] = now, snap["committed"]
            progress.update(
                task, description=f"{label} · {snap['committed']:,} committed · {last['rate']:,.0f} readings/s"
            )

        def labelled(snap: dict[str, Any], label: str, cid: str) -> None:
            on_progress(snap, f"{cid} · {label}")

        for cell, i in self._order(cells):
            cr = results[cell.id]
            last.update(t=time.monotonic(), n=0, rate=0.0)
            workdir = self.dir / "logs" / cell.id / f"repeat-{i + 1}"
            label = f"{cell.id} · repeat {i + 1}/{self.cell_repeats(cell)}"
            rep, _ = await run_repeat(
                cell, self.m, self.services, workdir, i, functools.partial(on_progress, label=label)
            )
            cr.repeats.append(Repeat(**rep))
            cr.summary = self._summary(cr)
            self.save()
            progress.advance(overall)
            if not rep["ok"]:
                for f in rep["failures"]:
                    self.console.print(f"[red]FAILED[/red] {cell.id} repeat {i + 1}: {f}", markup=True)
        for cell in cells:
            cr = results[cell.id]
            if self.profile != "none" and cell.profile:
                cr.profile = await self._profiled(cell, functools.partial(labelled, cid=cell.id))
                self.save()
                progress.advance(overall)
            s = cr.summary
            if s is not None:
                self.console.print(
                    f"{cell.id}: {s.throughput_rps or 0:,.0f} readings/s (cv {(s.cv or 0):.1%}) · p99 "
                    f"{s.latency_ms.p99 or 0:,.1f} ms · lost {s.lost} · dup {s.duplicated} · bottleneck "
                    f"{s.bottleneck.stage if s.bottleneck else '?'}" + (" · [red]FAILED[/red]" if s.failed else "")
                )

    def _summary(self, cr: CellResult) -> Summary:
        ceiling = self.results.ceilings.copy_binary_rps if self.results.ceilings else None
        return summarize(cr, ceiling)

    async def _profiled(self, cell: Cell, on_progress: Callable[[dict[str, Any], str], None]) -> Profile:
        out = self.profile_dir / cell.id

        def prefix(stage: str) -> list[str]:
            return ["-m", "experiments.profile_stage", "--profiler", self.profile, "--out", str(out / stage)]

        workdir = self.dir / "logs" / cell.id / "profiled"
        rep, orch = await run_repeat(
            cell, self.m, self.services, workdir, -1, lambda s: on_progress(s, f"profiled ({self.profile})"), prefix
        )
        files: dict[str, dict[str, str]] = {}
        for stage in orch.stages:
            kinds = {
                "cprofile": ".prof",
                "yappi_pstat": ".yappi.pstat",
                "yappi_callgrind": ".callgrind",
                "yappi_text": ".yappi.txt",
            }
            for kind, suffix in kinds.items():
                path = out / f"{stage}{suffix}"
                if path.exists():
                    files.setdefault(stage, {})[kind] = str(
                        path.relative_to(ROOT) if path.is_relative_to(ROOT) else path
                    )
        return Profile(profiler=self.profile, files=files, failures=rep["failures"])

    def _print_faults(self) -> None:
        rows = [(c, r) for c in self.results.cells for r in c.repeats if r.fault]
        if not rows:
            return
        t = Table(title="faults: recovery and accounting per repeat", header_style="bold")
        for col in ("cell", "fault", "at s", "recovery s", "generated", "committed", "lost", "dup", "result"):
            t.add_column(col, justify="left" if col in ("cell", "fault", "result") else "right")
        for c, r in rows:
            f, a = r.fault, r.accounting
            if f is None:
                continue
            rec = f.recovery_s
            style: str | None
            if not f.injected:
                result, style = f.note or "not injected", "yellow"
            elif not r.ok:
                result, style = "FAILED", "red"
            else:
                result, style = ("expected loss (reported)", "yellow") if r.expected_failures else ("ok", None)
            t.add_row(
                c.id if r.index >= 0 else f"{c.id} (profiled)",
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
        self.console.print(t)

    def print_summary(self) -> None:
        if not self.console.is_terminal:  # a log file or CI: don't squeeze the table into 80 columns
            self.console.width = max(self.console.width, 160)
        t = Table(title=f"telemetry-bench · {self.m.name} · {self.run_id}", header_style="bold")
        for col in ("cell", "readings/s", "cv", "% ceiling", "p50 ms", "p99 ms", "lost", "dup", "bottleneck"):
            t.add_column(col, justify="left" if col in ("cell", "bottleneck") else "right")
        for c in self.results.cells:
            s = c.summary
            if s is None:
                continue
            style = "red" if s.failed else ("yellow" if s.unstable else None)
            t.add_row(
                c.id,
                f"{s.throughput_rps or 0:,.0f}",
                f"{s.cv:.1%}" if s.cv is not None else "–",
                f"{s.fraction_of_ceiling:.1%}" if s.fraction_of_ceiling else "–",
                f"{s.latency_ms.p50:,.1f}" if s.latency_ms.p50 is not None else "–",
                f"{s.latency_ms.p99:,.1f}" if s.latency_ms.p99 is not None else "–",
                str(s.lost),
                str(s.duplicated),
                s.bottleneck.stage if s.bottleneck else "–",
                style=style,
            )
        self.console.print(t)
        self._print_faults()
        for tg in self.results.targets:
            mark = {True: "[green]PASS[/green]", False: "[red]FAIL[/red]", None: "[yellow]n/a[/yellow]"}[tg.passed]
            self.console.print(f"{mark} {tg.name}: {tg.measured} (target {tg.target})")
        if self.results.failed_cells:
            self.console.print(
                f"[bold red]FAILED cells (lost/duplicated readings or a stage error): "
                f"{', '.join(self.results.failed_cells)}[/bold red]"
            )
        self.console.print(f"results: {self.results_path}")
        self.console.print(f"report:  {self.report}")
