"""The experiment runner (scheduling only): every cell of a matrix as real processes, timed repeats in rounds until
each cell's interval is tight enough, then a profiled repeat per cell.

    telemetry-bench run --matrix default [--repeats N] [--profile cprofile|yappi|none] [--out reports]

**Rounds.** Each round runs one repeat of every cell that still needs one (interleaved: slow drift of the machine —
caches, WAL, checkpoints, clocks — spreads over every cell instead of biasing whichever runs later; odd rounds in
reverse order, ABBA, so neighbouring cells alternate which runs first; with ``interleave = false``, cell by cell). A
cell needs another repeat until ``experiments.analysis.summary.stop_reason`` says why not: its minimum repeats taken
and its throughput interval's half-width ≤ its target, or its cap, or the run's time budget.

**Window sizing.** A cell's first repeat is its pilot: if its measured window spans fewer than ``min_commits``
commits, the window is lengthened for the cell's later repeats (``measure.window_length``: 1.25 × min_commits × the
median commit interval, at most ``max_measure_s``), and that first repeat is kept as a pilot (``pilot: true``), not
counted. ``results.json`` is rewritten after every repeat. Profiled repeats are separate from timed ones: a
profiler changes what it measures.
"""

from __future__ import annotations

import contextlib
import logging
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from experiments.analysis import planning, sampling_cost, usl
from experiments.analysis.headline import headline_of
from experiments.analysis.summary import run_resolution, stop_reason, summarize
from experiments.analysis.targets import TARGET_SETS
from experiments.measure import sampler
from experiments.measure import window as measure
from experiments.plan.matrix import Cell, Matrix
from experiments.present import console as console_mod
from experiments.present.report import build_index, build_report
from experiments.results import metadata
from experiments.results.model import (
    Ceilings,
    CellResult,
    Load,
    Profile,
    Repeat,
    Results,
    Scaling,
    StopReason,
    Target,
    best,
    counted,
)
from experiments.results.storage import ROOT
from experiments.run import capacity_runs, memory_profile, whatif_runs
from experiments.run import ceilings as ceilings_mod
from experiments.run.context import RunContext
from experiments.run.repeat import cell_config
from harness.lifeline import drop_keys, raise_if_cancelled
from harness.services import Services, redact_dsn, versions
from pipeline import db

log = logging.getLogger("telemetry_bench.runner")

PROFILE_SUFFIXES = {"cprofile": ".prof", "yappi_pstat": ".yappi.pstat", "yappi_callgrind": ".callgrind",
                    "yappi_text": ".yappi.txt"}  # fmt: skip


def round_order(active: list[Cell], round_no: int) -> list[Cell]:
    """The cells of round ``round_no`` in play order: the matrix's order in even rounds, reversed in odd ones (ABBA).
    Two neighbouring cells (histograms on and off) then run A B, B A, A B, …: each round's pair is back to back, and
    a drift of the machine that is linear over two rounds cancels in their paired ratio (``targets.paired``) instead
    of always favouring the cell that runs second."""
    return active if round_no % 2 == 0 else active[::-1]


def run_order(cells: list[Cell], repeats: Callable[[Cell], int], interleave: bool) -> list[tuple[Cell, int]]:
    """(cell, repeat index) of a fixed plan, in run order. Interleaved: one repeat of each cell per round, in ABBA
    order (``round_order``). Otherwise cell by cell. (The runner plays the same order round by round, adding rounds
    as needed.)"""
    if not interleave:
        return [(c, i) for c in cells for i in range(repeats(c))]
    rounds = max((repeats(c) for c in cells), default=0)
    return [(c, i) for i in range(rounds) for c in round_order([c for c in cells if i < repeats(c)], i)]


def redact_argv(argv: list[str]) -> list[str]:
    """The command line with every password in a DSN/URL argument (``--pg-dsn URL`` or ``--pg-dsn=URL``) masked."""
    out = []
    for arg in argv:
        flag, eq, value = arg.partition("=")
        out.append(f"{flag}={redact_dsn(value)}" if arg.startswith("--") and eq else redact_dsn(arg))
    return out


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
        memory_profile: str | None = None,
        cluster: str | None = None,
    ) -> None:
        self.cluster = cluster  # a Ray cluster's address: the stages run on its hosts (the matrix's [placement])
        self.memory_profile = memory_profile  # None: no; "": the overload cell or the most growth; else a cell id
        self.repeats_override = repeats
        self.repeats = repeats or m.repeats
        self.profile = profile
        self.run_id = metadata.run_id()
        self.report: Path | None = None
        self.started = time.monotonic()
        self.stopped: dict[str, StopReason] = {}
        self.stop_detail: dict[str, str] = {}  # cell id → why the round plan stopped it (planning.plan)
        self.stage_passes: list[dict[str, float]] = []  # each stage alone, a pass per round (stage_ceilings)
        self._loads: dict[str, Load] = {}  # cell id → what its rate_of offered (results.json: the cell's load)
        results = Results(
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
                "max_repeats": m.max_repeats,
                "ci_target": m.ci_target,
                "profile": profile,
                "warmup_s": m.warmup_s,
                "measure_s": m.measure_s,
                "tail_s": m.tail_s,
                "argv": redact_argv(argv or sys.argv),
            },
        )
        # what the run shares with its capacity searches and memory run (and its own rounds): repeats come from it
        self.ctx = RunContext.for_run(self.run_id, m, services, results, out, profiles, console or Console(stderr=True))

    # the run's shared parts, read through its context
    @property
    def m(self) -> Matrix:
        return self.ctx.m

    @property
    def results(self) -> Results:
        return self.ctx.results

    @property
    def console(self) -> Console:
        return self.ctx.console

    @property
    def dir(self) -> Path:  # reports/<run>
        return self.ctx.dir

    def save(self) -> None:
        self.ctx.save()

    # ------------------------------------------------------------------------------------------ per-cell policy
    def min_repeats(self, cell: Cell) -> int:
        return self.repeats_override or cell.repeats or self.m.repeats

    def max_repeats(self, cell: Cell) -> int:
        if self.repeats_override:  # --repeats N: exactly N
            return self.repeats_override
        cap = cell.max_repeats or self.m.max_repeats or 3 * self.min_repeats(cell)
        return max(cap, self.min_repeats(cell))

    def ci_target(self, cell: Cell) -> float:
        return self.ctx.ci_target(cell)

    def _sizable(self, cell: Cell) -> bool:
        """Whether the cell's window can be lengthened: it runs for warm-up + window + tail (no count/duration)."""
        return self.m.min_commits > 0 and not cell.params.count and not cell.params.duration and not cell.fault

    def _stop(self, cell: Cell, cr: CellResult) -> StopReason | None:
        if cell.id in self.stopped:
            return self.stopped[cell.id]
        budget = self.m.budget_s
        reason = stop_reason(
            cr,
            min_repeats=self.min_repeats(cell),
            max_repeats=self.max_repeats(cell),
            ci_target=self.ci_target(cell),
            fixed=bool(cell.fault),
            over_budget=budget is not None and time.monotonic() - self.started > budget,
        )
        if reason is not None:
            self.stopped[cell.id] = reason
        return reason

    # --------------------------------------------------------------------------------------------------- the run
    async def run(self) -> Results:
        self.dir.mkdir(parents=True, exist_ok=True)
        self.save()
        target = f"interval half-width ≤ {self.m.ci_target:.0%}" if self.m.ci_target else "no interval target"
        self.console.print(
            f"run {self.run_id}: matrix {self.m.name!r}, {len(self.m.cells)} cells × ≥ {self.repeats} repeats "
            f"({target}), profile {self.profile} → {self.ctx.results_path}"
        )
        if self.cluster:  # the stages run on the cluster's hosts (harness.cluster); the clocks measured once here
            from harness.cluster.placement import Placement

            self.ctx.placement = Placement(self.cluster, self.m.placement).connect()
            self.ctx.say(f"cluster {self.cluster}: hosts {self.ctx.placement.hosts}, placement {self.m.placement}")
        self.console.print("measuring this machine's ceilings (binary COPY, Redis push/pop, decode)…")
        c = await ceilings_mod.measure(self.ctx.services.pg_dsn, self.ctx.services.redis_url, self.ctx.schema)
        self.results.ceilings = Ceilings(**c)
        self.save()
        self.console.print(
            f"ceilings: binary COPY {c['copy_binary_rps']:,.0f} rows/s · Redis push/pop "
            f"{c['redis_pushpop_rps']:,.0f}/s · direct decode {c['decode_direct_rps']:,.0f}/s"
        )
        await capacity_runs.stage_pass(self.ctx, self.stage_passes)  # each stage alone, again between rounds
        total = sum(self.min_repeats(c) + (0 if self.profile == "none" or not c.profile else 1) for c in self.m.cells)
        progress = Progress(
            SpinnerColumn(),
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=self.console,
        )
        try:
            with progress:
                overall = progress.add_task("all cells", total=total)
                task = progress.add_task("", total=None)
                # cells offered a fraction of another's measured rate run after the others; a fault cell's load is a
                # share of its pilot's capacity when the matrix searches it (capacity_cells): searched in between
                first, then = [c for c in self.m.cells if c.rate_of is None], [c for c in self.m.cells if c.rate_of]
                await self._run_phase(first, progress, overall, task)
                if loads := {c.rate_of for c in then if c.fault and c.rate_of in self.m.capacity_cells}:
                    await capacity_runs.capacities(self.ctx, only={r for r in loads if r is not None})
                await self._run_phase(then, progress, overall, task)
            await capacity_runs.capacities(self.ctx)
            await whatif_runs.run_cells(self.ctx)  # the matrix's whatif_cells: each stage slowed on purpose (issue 20)
            if self.memory_profile is not None:
                self.results.memory_profile = await memory_profile.run(self.ctx, self.memory_profile or None)
                if problem := self.results.memory_profile.get("problem"):
                    self.console.print(f"memory profile: {problem}", style="yellow", markup=False)
                self.save()
        finally:
            if self.ctx.placement is not None:
                self.ctx.placement.close()
            drop_keys(self.ctx.services.redis_url, self.ctx.queue_key)
            self.ctx.services.brokers.drop_queues(self.ctx.queue_key)  # jetstream/rabbitmq: their streams, queues
            with contextlib.suppress(Exception):  # the database may be what failed; the next run reaps it then
                db.drop_schema(self.ctx.services.pg_dsn, self.ctx.schema)
        capacity_runs.bind(self.results)
        # the cost as the run ends (exclusions were applied after each sampled repeat, before the capacity searches)
        self.results.sampling_cost = sampling_cost.cost_record(self.results)
        self.results.finished = datetime.now(UTC).isoformat()
        self.results.failed_cells = [c.id for c in self.results.cells if c.summary and c.summary.failed]
        self.results.headline = headline_of(self.results)
        self.results.resolution = run_resolution(self.results)
        scaled = usl.scaling_of(self.results)  # a scaling comparison: its USL fit
        self.results.scaling = Scaling.model_validate(scaled) if scaled else None
        if self.m.targets:
            self.results.targets = [Target(**t) for t in TARGET_SETS[self.m.targets](self.results)]
        self.save()
        self.report = build_report(self.dir)
        build_index(self.dir.parent)
        return self.results

    def _resolve_rate(self, cell: Cell) -> None:
        """A cell offered a fraction of an earlier cell's measured throughput (open loop)."""
        if cell.rate_of is None:
            return
        if cell.rate_of.startswith("group:"):  # the group's best cell so far
            ref = best(self.results.cells, cell.rate_of.removeprefix("group:"))
        else:
            ref = self.results.cell(cell.rate_of)
        tp = ref.summary.throughput_rps if ref and ref.summary else None
        if not tp or ref is None:
            raise RuntimeError(f"cell {cell.id}: rate_of {cell.rate_of!r} has no measured throughput")
        basis: Literal["capacity", "throughput"] = "throughput"
        cap = (ref.summary.capacity or {}).get("rps") if ref.summary else None
        if cell.fault and cap:  # the highest rate it sustains under the SLO, not its closed-loop throughput
            basis, tp = "capacity", float(cap)
        cell.params = cell.params.model_copy(update={"rate": round(cell.rate_fraction * tp), "max_rate": False})
        self._loads[cell.id] = Load(of=ref.id, basis=basis, reference_rps=round(tp, 1), fraction=cell.rate_fraction,
                                    offered_rps=cell.params.rate)  # fmt: skip

    def _summarize(self, cell: Cell, cr: CellResult, reason: StopReason | None) -> None:
        capacity = cr.summary.capacity if cr.summary else None  # searched already (a fault cell's load): kept
        cr.summary = summarize(cr, self.results.ceiling_rps, self.ci_target(cell), reason or "running")
        cr.summary.capacity = capacity
        need = planning.need_of(cr, priority=False, target=self.ci_target(cell), cap=self.max_repeats(cell),
                                overhead=1.0)  # fmt: skip
        cr.summary.repeats_needed = need.needed
        cr.summary.stop_detail = self.stop_detail.get(cell.id) or (
            planning.short_of(need) if cr.summary.unstable else None
        )

    def _size_window(self, cell: Cell, rep: Repeat) -> None:
        """After a cell's first repeat: lengthen its window if it spanned too few commits (that repeat → pilot)."""
        if cell.id in self.ctx.measure_s or not self._sizable(cell):
            self.ctx.measure_s.setdefault(cell.id, self.m.measure_s)
            return
        self.ctx.measure_s[cell.id] = self.m.measure_s
        if rep.window_s is None or rep.window_commits >= self.m.min_commits:  # no window, or enough commits
            return
        # no two commits after warm-up: at most one commit per window, so as long as allowed
        gap = rep.commit_gap_s or self.m.measure_s
        needed = measure.window_length(gap, self.m.measure_s, self.m.min_commits, self.m.max_measure_s)
        if needed > self.m.measure_s and self.max_repeats(cell) > 1:
            self.ctx.measure_s[cell.id] = needed
            rep.pilot = True
            self.console.print(
                f"{cell.id}: {rep.window_commits} commits in the {self.m.measure_s:g} s window "
                f"(< {self.m.min_commits}): "
                f"that repeat was its pilot; the window is now {needed:.1f} s"
            )

    async def _one(self, cell: Cell, cr: CellResult, progress: Progress, overall: Any, task: Any) -> None:
        raise_if_cancelled()  # a stop signal an await swallowed still stops the run before another repeat
        i = len(cr.repeats)
        last = {"t": time.monotonic(), "n": 0, "rate": 0.0}
        label = f"{cell.id} · repeat {i + 1}"

        def on_progress(snap: dict[str, Any]) -> None:
            now = time.monotonic()
            if now - last["t"] >= 0.5:
                last["rate"] = (snap["committed"] - last["n"]) / (now - last["t"])
                last["t"], last["n"] = now, snap["committed"]
            progress.update(
                task, description=f"{label} · {snap['committed']:,} committed · {last['rate']:,.0f} readings/s"
            )

        position = next((k for k, c in enumerate(self.m.cells) if c is cell), 0)
        sample = sampler.sampled(self.m.sampling, i, position, single=self.max_repeats(cell) == 1)
        rep = await self.ctx.repeat(cell, "timed", index=i, on_progress=on_progress, sample=sample)
        cr.repeats.append(rep)
        if i == 0:
            self._size_window(cell, rep)
        self._summarize(cell, cr, None)
        if rep.sampled is not None:
            self._sampling_cost()
        self.save()
        progress.advance(overall)
        if not rep.ok:
            for f in rep.failures:
                self.console.print(f"[red]FAILED[/red] {cell.id} repeat {i + 1}: {f}", markup=True)

    async def _run_phase(self, cells: list[Cell], progress: Progress, overall: Any, task: Any) -> None:
        results: dict[str, CellResult] = {}
        for cell in cells:
            self._resolve_rate(cell)
            results[cell.id] = CellResult(
                id=cell.id, title=cell.title, groups=cell.groups, varied=cell.varied,
                params=cell_config(cell, self.m).model_dump(), repeats=[], load=self._loads.get(cell.id),
            )  # fmt: skip
            self.results.cells.append(results[cell.id])
        if self.m.interleave:
            round_no = 0
            while active := [c for c in cells if self._stop(c, results[c.id]) is None]:
                began, repeats_s = time.monotonic(), 0.0
                for cell in round_order(active, round_no):  # one round: a repeat of every cell that still needs one
                    await self._one(cell, results[cell.id], progress, overall, task)
                    self._grow(progress, overall, cell, results[cell.id])
                    repeats_s += results[cell.id].repeats[-1].duration_s or 0.0
                await capacity_runs.stage_pass(self.ctx, self.stage_passes)
                round_no += 1
                # a round's wall time ÷ its repeats' (≥ 1: the stage passes, scrapes and saves between them)
                self._plan(active, results, max(1.0, (time.monotonic() - began) / repeats_s) if repeats_s else 1.0)
        else:
            for cell in cells:
                while self._stop(cell, results[cell.id]) is None:
                    await self._one(cell, results[cell.id], progress, overall, task)
                    self._grow(progress, overall, cell, results[cell.id])
        for cell in cells:
            cr = results[cell.id]
            cr.params = cell_config(cell, self.m, self.ctx.measure_s.get(cell.id))
            self._summarize(cell, cr, self.stopped.get(cell.id, "no_data"))
            self.save()
            if self.profile != "none" and cell.profile:
                cr.profile = await self._profiled(cell, task, progress)
                self.save()
                progress.advance(overall)
            if cr.summary is not None:
                self.console.print(console_mod.cell_line(cr), markup=True, highlight=False)

    def _plan(self, cells: list[Cell], results: dict[str, CellResult], overhead: float) -> None:
        """After a round: the budget left goes to the cells the targets read first (``planning.plan``); the other
        cells that would not fit stop now, with the reason stated."""
        if self.m.budget_s is None:
            return
        prio = planning.target_cells(self.results, TARGET_SETS.get(self.m.targets or ""))
        needs = [
            planning.need_of(
                results[c.id],
                priority=c.id in prio,
                target=self.ci_target(c),
                cap=self.max_repeats(c),
                overhead=overhead,
            )
            for c in cells
            if self._stop(c, results[c.id]) is None and len(counted(results[c.id])) >= self.min_repeats(c)
        ]
        remaining = self.m.budget_s - (time.monotonic() - self.started)
        for cid, cut in planning.plan(needs, remaining).items():
            self.stopped[cid], self.stop_detail[cid] = cut.reason, cut.detail
            self.console.print(f"{cid}: no further round ({cut.reason}): {cut.detail}", markup=False)

    def _sampling_cost(self) -> None:
        """Re-measure the run's sampling cost; with ``sampling = "one"`` a cost shown beyond 2 % excludes every
        sampled repeat from its cell's figures (``sampling_cost.apply_cost``), and the cells are summarized again."""
        _, changed = sampling_cost.apply_cost(self.results)
        self.results.sampling_cost = sampling_cost.cost_record(self.results)
        if not changed:
            return
        cells = {c.id: c for c in self.m.cells}
        for cr in self.results.cells:
            if (cell := cells.get(cr.id)) is not None and cr.repeats:
                self._summarize(cell, cr, self.stopped.get(cr.id))

    def _grow(self, progress: Progress, overall: Any, cell: Cell, cr: CellResult) -> None:
        """An extra repeat (beyond the plan) or a pilot adds one to the progress bar's total."""
        if len(counted(cr)) > self.min_repeats(cell) or (cr.repeats and cr.repeats[-1].pilot):
            total = progress.tasks[overall].total or 0
            progress.update(overall, total=total + 1)

    async def _profiled(self, cell: Cell, task: Any, progress: Progress) -> Profile:
        out = self.ctx.profile_dir / cell.id

        def prefix(stage: str) -> list[str]:
            return ["-m", "experiments.run.profile_stage", "--profiler", self.profile, "--out", str(out / stage)]

        def on_progress(snap: dict[str, Any]) -> None:
            progress.update(task, description=f"{cell.id} · profiled ({self.profile}) · {snap['committed']:,}")

        rep = await self.ctx.repeat(cell, "profiled", on_progress=on_progress, python_prefix=prefix)
        files: dict[str, dict[str, str]] = {}
        for kind, suffix in PROFILE_SUFFIXES.items():  # what each stage's profiler wrote: <stage><suffix>
            for path in sorted(out.glob(f"*{suffix}")):
                stored = path.relative_to(ROOT) if path.is_relative_to(ROOT) else path
                files.setdefault(path.name.removesuffix(suffix), {})[kind] = str(stored)
        return Profile(profiler=self.profile, files=files, failures=rep.failures)

    def print_summary(self) -> None:
        console_mod.print_summary(self.console, self.results, self.m.name, self.ctx.results_path, self.report)
