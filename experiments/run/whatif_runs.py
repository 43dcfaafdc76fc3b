"""The what-if experiment (issue 20): slow each stage of a cell on purpose and measure what the pipeline loses.

    telemetry-bench whatif --matrix perf --cell histograms-on      (or the matrix key whatif_cells = ["…"])

**Plan.** Two undelayed pilot repeats measure each stage's own time per reading (CPU µs per committed reading of the
stage's processes, sampled by the resource monitor: the writer's database write counts the writers and PostgreSQL,
the queue put Redis). Then, for each stage the cell runs, its delay knob (``delay_<stage>_us``, kind ``spin`` by
default: slower code holding the CPU) is set to each fraction of that time (+10/25/50 % by default), ``repeats``
times each, in a random order (seeded), with an undelayed repeat after every ``BASELINE_EVERY`` delayed ones and one
at the end; every real variant that makes a stage faster (``faster_variants``) runs interleaved too. Every repeat is
an ordinary repeat of the cell (``run_repeat``), uncounted in the cell's own figures. The time it will take is said
before it starts (and again once the pilots measured a repeat's length) and recorded (``planned_s``, ``took_s``).
The analysis is ``experiments/analysis/whatif.py``; the record ``results.json`` → ``whatif.<cell>``. The response
is throughput at max rate, p99 for an open-loop cell that keeps up with its offered rate, and throughput again for
one that does not (its pilots committed < ``KEPT_UP`` of the rate: the seed's cell, overloaded by design).

A Coz-style virtual speed-up (delaying every other stage in proportion) is not run: the prediction comes from the
sensitivities, and is checked against the real variant where there is one.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import random
import statistics
import time
from pathlib import Path
from typing import Any

from experiments.analysis import stats
from experiments.analysis import whatif as analysis
from experiments.analysis.summary import summarize
from experiments.measure import window as measure
from experiments.plan.matrix import Cell, Matrix
from experiments.results.model import CellResult, Repeat, WhatIf, WhatIfPrediction, WhatIfRun
from experiments.run.context import RunContext
from experiments.run.repeat import cell_config
from harness.plan import PipelineConfig

FRACTIONS = (0.1, 0.25, 0.5)  # of each stage's own time per reading
REPEATS = 2  # per stage and amount
BASELINE_EVERY = 3  # an undelayed repeat after every this many delayed ones
PILOTS = 2  # undelayed repeats first: the stages' times per reading
VARIANT_REPEATS = 3
OVERHEAD_S = 6.0  # start-up, drain and stop of one repeat, until the pilots measured it
K = 0.2  # the speed-up the sentence speaks of
KEPT_UP = 0.9  # an open-loop cell committing less than this share of its offered rate falls behind: throughput it is

# the processes whose CPU is a stage's time per reading (a name matches itself and "<name>-<n>")
PROCESSES = {
    "generator": ("generator",),
    "ingest": ("ingest",),
    "queue": ("redis",),
    "writer": ("writer", "postgresql"),
    "forwarder": ("forwarder",),
    "backend": ("backend",),
    "node": ("node",),
}


def knob(stage: str) -> str:
    return f"delay_{stage}_us"


def stages_of(params: PipelineConfig) -> list[str]:
    """The stages the cell runs whose delay knob exists."""
    if params.topology == "node":
        names = ["generator", "node", "writer"]
    else:
        names = ["generator", "ingest", "queue", "writer"]
        if params.forwarding:
            names.append("forwarder")
    if params.forwarding:
        names.append("backend")
    return [s for s in names if knob(s) in PipelineConfig.model_fields]


def cpu_us_per_reading(rep: Repeat) -> dict[str, float]:
    """Stage → CPU µs per committed reading of its processes over the repeat."""
    n = rep.accounting.committed
    if not n:
        return {}
    out = {}
    for stage, procs in PROCESSES.items():
        names = [k for k in rep.resources if any(k == p or k.startswith(p + "-") for p in procs)]
        if names:
            out[stage] = sum(rep.resources[k].cpu_s for k in names) / n * 1e6
    return out


@dataclasses.dataclass(frozen=True)
class Variant:
    """A real variant of the cell that makes one stage faster."""

    stage: str  # the stage it speeds up
    update: dict[str, Any]  # the knobs it changes

    @property
    def label(self) -> str:
        """The run's stage name of its repeats: ``variant:sink=copy_binary``."""
        return analysis.VARIANT + ":" + ",".join(f"{k}={v}" for k, v in self.update.items())


def faster_variants(params: PipelineConfig) -> list[Variant]:
    """Every real variant that makes one stage of the cell faster: binary COPY for another sink, direct field reads
    for MessageToDict, async POSTs for blocking ones, twice the writers when none of those applies."""
    node = params.topology == "node"
    out = []
    if params.sink != "copy_binary":
        out.append(Variant("writer", {"sink": "copy_binary"}))
    if params.decoder == "dict":
        out.append(Variant("node" if node else "ingest", {"decoder": "direct"}))
    if params.forwarder == "sync":
        out.append(Variant("node" if node else "forwarder", {"forwarder": "async"}))
    if not out and not node and params.workers < 4:
        out.append(Variant("writer", {"workers": params.workers * 2}))
    return out


def schedule(stages: list[str], fractions: tuple[float, ...], repeats: int, seed: int,
             variants: list[Variant] | None = None) -> list[tuple[str, float]]:  # fmt: skip
    """The run order after the (undelayed) pilots: every (stage, fraction) ``repeats`` times and the variant's
    repeats, shuffled with ``seed``, an undelayed repeat after every ``BASELINE_EVERY`` of them and at the end."""
    arms = [(s, f) for s in stages for f in fractions for _ in range(repeats)]
    arms += [(v.label, 0.0) for v in variants or [] for _ in range(VARIANT_REPEATS)]
    random.Random(seed).shuffle(arms)
    out: list[tuple[str, float]] = []
    for i, arm in enumerate(arms):
        if i and i % BASELINE_EVERY == 0:
            out.append((analysis.BASELINE, 0.0))
        out.append(arm)
    out.append((analysis.BASELINE, 0.0))
    return out


def planned(n: int, warmup_s: float, measure_s: float, tail_s: float, per_repeat_s: float | None = None) -> float:
    """Seconds for ``n`` repeats: each its generation time plus start-up and drain (or as the pilots measured)."""
    return n * (per_repeat_s or warmup_s + measure_s + tail_s + OVERHEAD_S)


def _minutes(s: float) -> str:
    return f"{s / 60:.1f} min" if s >= 90 else f"{s:.0f} s"


def command(matrix: str, cell: str) -> str:
    """The copy-paste command that runs the what-if of a cell."""
    return f"telemetry-bench whatif --matrix {matrix} --cell {cell}"


def describe(m: Matrix, cell: Cell, fractions: tuple[float, ...], repeats: int, stages: list[str], seed: int,
             fast: list[Variant], measure_s: float | None = None) -> tuple[str, float]:  # fmt: skip
    """What the experiment will run and how long it should take, in one line (said before it starts)."""
    order = schedule(stages, fractions, repeats, seed, fast)
    total = PILOTS + len(order)
    secs = planned(total, m.warmup_s, measure_s or m.measure_s, m.tail_s)
    text = (
        f"what-if {cell.id}: {PILOTS} undelayed pilots, then {len(stages)} stages ({', '.join(stages)}) × "
        f"{len(fractions)} amounts ({', '.join(f'+{f * 100:g} %' for f in fractions)} of each stage's time) × "
        f"{repeats}, "
        f"{sum(1 for s, _ in order if s == analysis.BASELINE)} undelayed"
        + "".join(f", {VARIANT_REPEATS} of the variant {v.label.removeprefix('variant:')}" for v in fast)
        + f" = {total} repeats of ≈ {m.warmup_s + (measure_s or m.measure_s) + m.tail_s + OVERHEAD_S:.0f} s: "
        f"about {_minutes(secs)} (a pilot longer than {m.measure_s:g} s of window lengthens it)"
    )
    return text, secs


async def run_whatif(
    ctx: RunContext,
    cell: Cell,
    *,
    fractions: tuple[float, ...] = FRACTIONS,
    repeats: int = REPEATS,
    seed: int = 1,
    stages: list[str] | None = None,
    delay_kind: str = "spin",
    variant: bool = True,
    cell_result: CellResult | None = None,
) -> WhatIf:
    """Run the experiment on ``cell`` with the runner's services, schema and keys; the record goes to
    ``ctx.results.whatif[cell.id]`` (saved after every repeat). ``cell_result``: where the undelayed repeats also go
    as the cell's own repeats (the standalone command, whose run has no other)."""
    m = ctx.m
    params = cell.params
    metric = "throughput" if params.max_rate else "p99"
    chosen = stages or stages_of(params)
    missing = [s for s in chosen if knob(s) not in PipelineConfig.model_fields]
    if missing:
        have = ", ".join(s for s in PROCESSES if knob(s) in PipelineConfig.model_fields) or "none"
        raise ValueError(f"what-if: no delay knob for {', '.join(missing)}; stages with one: {have}")
    fast = faster_variants(params) if variant else []
    measure_s = ctx.measure_s.get(cell.id) or m.measure_s
    order = schedule(chosen, fractions, repeats, seed, fast)
    total = PILOTS + len(order)
    text, planned_s = describe(m, cell, fractions, repeats, chosen, seed, fast, measure_s)
    w = WhatIf(cell=cell.id, metric=metric, seed=seed, fractions=list(fractions), planned_s=planned_s,
               command=command(m.name, cell.id))  # fmt: skip
    ctx.console.print(text, markup=False, highlight=False)
    ctx.results.whatif[cell.id] = w
    t0 = time.monotonic()
    base_reps: list[Repeat] = []

    async def one(i: int, stage: str, fraction: float, delay_us: float, update: dict[str, Any]) -> Repeat:
        p = params.model_copy(update={**update, "delay_kind": delay_kind} if delay_us else update)
        c = dataclasses.replace(cell, params=p, fault=None)
        ctx.measure_s[cell.id] = measure_s
        rep = await ctx.repeat(c, "whatif", index=i, sample=False)
        w.runs.append(WhatIfRun(
            order=i, stage=stage, fraction=fraction, delay_us=delay_us, throughput_rps=rep.throughput_rps,
            p99_ms=rep.latency_ms.p99, ok=rep.ok, failures=rep.failures, duration_s=rep.duration_s,
            cpu_us_per_reading=cpu_us_per_reading(rep), verdict=rep.bottleneck.stage if rep.bottleneck else None,
        ))  # fmt: skip
        figure = f"{rep.throughput_rps or 0:,.0f} readings/s, p99 {rep.latency_ms.p99 or 0:,.0f} ms"
        what = "undelayed" if stage == analysis.BASELINE else stage if stage.startswith(analysis.VARIANT) else \
            f"{stage} +{fraction * 100:g} % ({delay_us:,.2f} µs/reading)"  # fmt: skip
        ctx.console.print(f"what-if {cell.id} {i + 1}/{total}: {what} → {figure}" + ("" if rep.ok else " FAILED"),
                        markup=False, highlight=False)  # fmt: skip
        if stage == analysis.BASELINE:
            base_reps.append(rep)
            if cell_result is not None:
                cell_result.repeats.append(rep.model_copy(update={"index": len(cell_result.repeats), "kind": "timed"}))
        _analyse(w, params, base_reps, fast, ctx)
        ctx.save()
        return rep

    for i in range(PILOTS):
        rep = await one(i, analysis.BASELINE, 0.0, 0.0, {})
        if i == 0 and ctx.m.min_commits and rep.window_commits < ctx.m.min_commits and rep.window_s:
            gap = rep.window_s / max(1, rep.window_commits)
            measure_s = measure.window_length(gap, m.measure_s, m.min_commits, m.max_measure_s)
    if not params.max_rate:  # open loop: p99 at the offered rate, unless the cell cannot keep up with it
        kept = stats.median(x.throughput_rps for x in w.runs if x.stage == analysis.BASELINE)
        if kept is not None and kept < KEPT_UP * params.rate:
            w.metric = "throughput"
            line = (f"what-if {cell.id}: it commits {kept:,.0f} of the {params.rate:,} readings/s offered (falls "
                    "behind): throughput is the response, not p99")  # fmt: skip
            ctx.console.print(line, markup=False, highlight=False)
    times: dict[str, float] = {}
    for s in chosen:
        vals = [t[s] for run in w.runs if run.stage == analysis.BASELINE and s in (t := run.cpu_us_per_reading)]
        if vals and statistics.median(vals) > 0:
            times[s] = statistics.median(vals)
        else:
            w.skipped[s] = "its time per reading was not measured (no CPU sampled for its processes)"
    w.stage_time_us = times
    per = statistics.median(x.duration_s for x in w.runs if x.duration_s) if w.runs else None
    left = planned(len(order), m.warmup_s, measure_s, m.tail_s, (per + 1.0) if per else None)
    ctx.console.print(f"what-if {cell.id}: stage times per reading " +
                    " · ".join(f"{s} {t:,.2f} µs" for s, t in times.items()) +
                    f"; {len(order)} repeats left, about {_minutes(left)}", markup=False, highlight=False)  # fmt: skip
    for j, (stage, fraction) in enumerate(order):
        if stage in w.skipped:
            continue
        if (v := next((v for v in fast if v.label == stage), None)) is not None:
            await one(PILOTS + j, stage, 0.0, 0.0, v.update)
        elif stage == analysis.BASELINE:
            await one(PILOTS + j, stage, 0.0, 0.0, {})
        else:
            us = fraction * times[stage]
            await one(PILOTS + j, stage, fraction, us, {knob(stage): us})
    w.took_s = time.monotonic() - t0
    _analyse(w, params, base_reps, fast, ctx)
    if cell_result is not None:
        cell_result.summary = summarize(cell_result, ctx.results.ceiling_rps, ctx.ci_target(cell), "fixed")
    cr = ctx.results.cell(cell.id)
    if cr is not None and cr.summary is not None:  # the verdict by experiment; the static one stays in its evidence
        cr.summary.bottleneck = analysis.bottleneck(w, cr.summary.bottleneck)
    ctx.save()
    ctx.console.print(f"what-if {cell.id}: bottleneck {w.bottleneck}; {w.sentence or w.what_binds} "
                    f"(took {_minutes(w.took_s)})", markup=False, highlight=False)  # fmt: skip
    return w


def _analyse(w: WhatIf, params: PipelineConfig, base: list[Repeat], fast: list[Variant], ctx: RunContext) -> None:
    """(Re)compute the record from the repeats so far: the static verdict, each variant's measured change, the fits."""
    verdicts = [x.bottleneck.stage for x in base if x.bottleneck]
    w.static_verdict = collections.Counter(verdicts).most_common(1)[0][0] if verdicts else None
    w.predictions = []
    attr = "throughput_rps" if w.metric == "throughput" else "p99_ms"
    undelayed = [run for run in w.runs if run.stage == analysis.BASELINE]
    for v in fast:
        runs = [run for run in w.runs if run.stage == v.label]
        if not runs:
            continue
        mb = stats.median(run.cpu_us_per_reading.get(v.stage) for run in undelayed)
        mv = stats.median(run.cpu_us_per_reading.get(v.stage) for run in runs)
        k = 1.0 - mv / mb if mb and mv is not None else None
        ratio = stats.ratio([getattr(x, attr) for x in runs if x.ok], [getattr(x, attr) for x in undelayed if x.ok])
        w.predictions.append(WhatIfPrediction(
            stage=v.stage, variant=v.update, k=k, predicted=None, predicted_ci95=None, measured=ratio.change,
            measured_ci95=[ratio.lo - 1, ratio.hi - 1] if ratio.lo is not None and ratio.hi is not None else None,
        ))  # fmt: skip
    ceilings = ctx.results.ceilings.stages if ctx.results.ceilings else {}
    caps: dict[str, float] = {}  # stage → its ceiling alone (writer_1 / writer_N: the larger; forward: forwarder)
    for name, c in ceilings.items():
        if isinstance(c, dict) and c.get("median"):
            st = {"forward": "forwarder"}.get(name.split("_")[0], name.split("_")[0])
            caps[st] = max(caps.get(st, 0.0), float(c["median"]))
    with contextlib.suppress(ValueError):  # too few repeats yet
        analysis.analyse(w, params, base, k=K, ceilings=caps or None)


async def run_cells(ctx: RunContext) -> None:
    """The matrix's ``whatif_cells``, after the timed rounds (the cells' own figures stay as they were)."""
    for cid in ctx.m.whatif_cells:
        cell = next(c for c in ctx.m.cells if c.id == cid)  # its rate resolved (rate_of), its window sized
        await run_whatif(ctx, cell)


async def standalone(ctx: RunContext, cell: Cell, **kw: Any) -> tuple[WhatIf, Path]:
    """``telemetry-bench whatif``: a run of its own holding the cell (its undelayed repeats) and the experiment."""
    from experiments.present.report import build_index, build_report
    from harness.lifeline import drop_keys
    from pipeline import db

    ctx.dir.mkdir(parents=True, exist_ok=True)
    cfg = cell_config(cell, ctx.m)
    cr = CellResult(id=cell.id, title=cell.title, groups=cell.groups, varied=cell.varied, params=cfg, repeats=[])
    ctx.results.cells.append(cr)
    ctx.save()
    try:
        w = await run_whatif(ctx, cell, cell_result=cr, **kw)
    finally:
        drop_keys(ctx.services.redis_url, ctx.queue_key)
        with contextlib.suppress(Exception):
            db.drop_schema(ctx.services.pg_dsn, ctx.schema)
    ctx.results.finished = time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime())
    ctx.save()
    report = build_report(ctx.dir)
    build_index(ctx.dir.parent)
    return w, report
