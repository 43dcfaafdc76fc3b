"""One timed repeat of a cell: a fresh table and queue, the stages started by the orchestrator, the generator run
for warm-up + measured window + tail, a clean stop, then what the repeat measured (``experiments.measure.window``)."""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, assert_never

from experiments.measure import sampler as sampling
from experiments.measure import verdict
from experiments.measure import window as measure
from experiments.measure.monitor import ResourceMonitor, cpu_between
from experiments.plan.matrix import Cell, Matrix
from experiments.present import flamegraph
from experiments.results.model import Repeat, RepeatKind
from experiments.results.storage import ROOT
from harness.accounting import RunResult
from harness.orchestrator import Orchestrator
from harness.plan import PipelineConfig
from harness.services import Services
from pipeline.wiring import FORWARD_SUFFIX

if TYPE_CHECKING:  # imports ray: only a cluster run loads it
    from harness.cluster.placement import Placement

SCHEMA = "bench"  # a repeat run on its own (tests); a run uses its own, RunContext.schema
QUEUE_KEY = "bench:queue"  # a run uses its own, bench:<run id>:queue (runs sharing a Redis never mix their keys)


def cell_config(cell: Cell, m: Matrix, measure_s: float | None = None) -> PipelineConfig:
    """The cell's PipelineConfig, with a generation time of warmup + window + tail unless it sets count/duration."""
    cfg = cell.params
    if not cfg.count and not cfg.duration:
        cfg = cfg.model_copy(update={"duration": m.warmup_s + (measure_s or m.measure_s) + m.tail_s})
    return cfg


async def run_repeat(
    cell: Cell,
    m: Matrix,
    services: Services,
    workdir: Path,
    *,
    kind: RepeatKind = "timed",
    index: int = 0,
    on_progress: Callable[[dict[str, Any]], None] | None = None,
    python_prefix: Callable[[str], list[str]] | None = None,
    measure_s: float | None = None,
    queue_key: str = QUEUE_KEY,
    schema: str = SCHEMA,
    sample_dir: Path | None = None,
    sample: bool | None = None,
    placement: Placement | None = None,
) -> Repeat:
    """The ``index``-th repeat of ``kind`` of ``cell`` (a run asks for one through ``RunContext.repeat``).

    With ``sample_dir`` (the cell's ``profiles/<run>/<cell>/``) and ``sample`` (default: the matrix's ``sampling``
    choosing this repeat, ``sampling.sampled``; never for a kind other than timed), py-spy samples every stage
    during the stream at the matrix's ``sampling_hz`` (native frames with ``sampling_native``) into
    ``sample_dir/repeat-<n>/`` and the cell's merged views are rewritten."""
    measure_s = measure_s or m.measure_s
    cfg = cell_config(cell, m, measure_s)
    monitor = ResourceMonitor(queue_key)
    position = next((i for i, c in enumerate(m.cells) if c is cell), 0)
    sampler = None
    if sample is None:
        sample = kind == "timed" and sampling.sampled(m.sampling, index, position)
    if sample_dir is not None and sample:
        sampler = monitor.on_poll = sampling.StreamSampler(
            sample_dir / f"repeat-{index + 1}", m.sampling_hz, native=m.sampling_native
        )
    fault = cell.fault_for(cfg, _draw_index(kind, index))  # a fixed time, or drawn from the cell's seed
    orch = Orchestrator(
        cfg,
        services,
        workdir,
        schema=schema,
        queue_key=queue_key,
        monitor=monitor,
        on_progress=on_progress,
        python_prefix=python_prefix,
        fault=fault,
        placement=placement,
    )
    before = measure.pg_stats(services.pg_dsn, schema)  # WAL position and checkpoints (the table is recreated)
    t0 = time.time()
    try:
        result = await orch.run()
    finally:
        await monitor.close()
        sampled = _sampled(sampler, sample_dir) if sampler is not None and sample_dir is not None else None
    duration = time.time() - t0
    acct = result.accounting
    after = measure.pg_stats(services.pg_dsn, schema)
    window = measure.measure_window(services.pg_dsn, schema, m.warmup_s, measure_s, count=bool(cfg.count))
    bounds = measure.intended_bounds(services.pg_dsn, schema)
    lat: dict[str, dict[str, Any]] = {"intended": {"n": 0}, "sent": {"n": 0}}
    e2e: dict[str, Any] = {"n": 0}
    e2e_rate = None
    raw: dict[str, Any] = {}  # a cross-host run's latencies before its clock correction
    clocks = _clock_shifts(cfg, orch, placement, services.pg_dsn, schema) if placement is not None else None
    if bounds:
        since = bounds[0] + round(m.warmup_s * 1e9)
        until = since + round(measure_s * 1e9)
        shifts = [(g["sensor_ids"], g["shift_ns"]) for g in clocks["generators"].values()] if clocks else []
        lat = measure.latencies(services.pg_dsn, schema, since, until, shifts)
        raw = measure.latencies(services.pg_dsn, schema, since, until)["intended"] if shifts else {}
        if orch.probes:
            p = orch.probes[0]
            e2e, e2e_rate = measure.end_to_end(p.arrivals, p.intended, p.latencies, window, since, until)
    win = (window.start_ns / 1e9, window.end_ns / 1e9) if window and window.seconds > 0 else None
    resources = monitor.resources(win)
    if sampled is not None and sampler is not None and win is not None:
        sampled["cpu_s_window"] = cpu_between(sampler.cpu_series, *win)
    growth = {
        "writer_queue": monitor.queue_growth(queue_key, win),
        "forward_queue": monitor.queue_growth(queue_key + FORWARD_SUFFIX, win),
    }
    finals = orch.scrapes()
    buckets, prom_q, prom_sums = measure.prometheus_data(finals, monitor.histogram_series, win)
    throughput = window.throughput if window else None
    instrumentation_s = sum((sc.get("telemetry_instrumentation_seconds") for sc in finals.values()), 0.0)
    bottleneck = verdict.bottleneck(
        cfg,
        resources,
        growth,
        throughput,
        window.seconds if window else None,
        prom_q,
        prom_sums,
        (result.stream_ended_ns - result.started_ns) / 1e9,
        buckets,
    )
    failures, expected = result.failures, []
    if cell.expect_loss:  # the design loses readings by construction: report, don't fail
        expected = [f for f in failures if design_loss(f)]
        failures = [f for f in failures if f not in expected]
    repeat = {
        "kind": kind,
        "index": index,
        "ok": not failures,
        "failures": failures,
        "expected_failures": expected,
        "fault": result.fault.as_dict() if result.fault else None,
        "throughput_rps": throughput,
        "window_s": window.seconds if window else None,
        "window_complete": bool(window and window.complete),
        "window_commits": window.commits if window else 0,
        "measure_s": measure_s,
        "latency_ms": lat["intended"],
        "latency_sent_ms": lat["sent"],
        "e2e_latency_ms": e2e,
        "e2e_throughput_rps": e2e_rate,
        "accounting": acct.as_dict(),
        "resources": resources,
        # by role (writer queue, forward queue), whatever this run's key prefix
        "queue_len": {
            QUEUE_KEY + k.removeprefix(queue_key): [[round(a, 3), b] for a, b in v]
            for k, v in monitor.queue_series.items()
        },
        "pg": measure.pg_deltas(before, after, acct.committed),
        "prometheus": buckets,
        "prometheus_quantiles_ms": prom_q,
        "duration_s": duration,
        "drain_s": (result.drained_ns - result.stream_ended_ns) / 1e9,
        "phases_s": result.phases_s,
        "bottleneck": bottleneck,
        "sampled": sampled,
        # the histograms' own time, timed in place by every stage (pipeline.metrics.instrumentation_seconds)
        "instrumentation_s": instrumentation_s,
        "commit_gap_s": window.commit_gap_s if window else None,
        "cluster": _cluster(placement, orch, result, lat["intended"], raw, clocks) if placement is not None else None,
    }
    return Repeat.model_validate(repeat)


def design_loss(failure: str) -> bool:
    """Is a failure line what a lossy design loses by construction (an ``expect_loss`` cell reports it, never
    fails on it): readings lost or duplicated, or — at most once, the pubsub forwarder — not forwarded."""
    return "lost" in failure or "duplicated" in failure or bool(re.fullmatch(r"forwarded \d+ of \d+ readings", failure))


def _draw_index(kind: RepeatKind, index: int) -> int:
    """The repeat number a fault time is drawn for: the timed repeat's own; the other kinds keep the numbers they
    drew with before kinds were named (−1 profiled, −2 memory, −101 − n capacity probe n), so a seed draws the
    same moments as it always did. (A new kind must be named here: mypy fails on a kind this match leaves out.)"""
    match kind:
        case "timed":
            return index
        case "profiled":
            return -1
        case "memory":
            return -2
        case "capacity":
            return -101 - index
        case "whatif":
            return -200 - index
        case _:
            assert_never(kind)


def _clock_shifts(
    cfg: PipelineConfig, orch: Orchestrator, placement: Placement, dsn: str, schema: str
) -> dict[str, Any]:
    """A cross-host run's clock correction: PostgreSQL's clock (``measure.db_clock``) and, per generator, its
    host, the ns its readings' latencies are shifted by — its host's offset minus PostgreSQL's (intended and sent
    are stamped by the generator's clock, ``inserted_at`` by PostgreSQL's, both measured against this process's)
    — that shift's uncertainty (the two ± round trip / 2 added) and its sensors (None: the only generator)."""
    from pipeline.sensors import make_sensors

    dbc = measure.db_clock(dsn, schema)
    gens: dict[str, dict[str, Any]] = {}
    streams = cfg.streams()
    for g, (name, _) in enumerate(streams):
        host = getattr(orch.stages.get(name), "host", None)
        c = placement.clock.get(host) if isinstance(host, str) else None
        if c is None:
            continue
        share = cfg.stream_share(g)
        ids = [x.sensor_id for x in make_sensors(int(share["sensors"]), 0, int(share["sensor_offset"]))]
        gens[name] = {"host": host, "shift_ns": int(c["offset_ns"] - dbc["offset_ns"]),
                      "uncertainty_ns": c["uncertainty_ns"] + dbc["uncertainty_ns"],
                      "sensor_ids": ids if len(streams) > 1 else None}  # fmt: skip
    return {"postgresql": dbc, "generators": gens}


def _cluster(
    placement: Placement,
    orch: Orchestrator,
    result: RunResult,
    lat: dict[str, Any],
    raw: dict[str, Any],
    clocks: dict[str, Any] | None,
) -> dict[str, Any]:
    """Per host and per stage figures of a cluster run, the clocks measured before it, and its latencies' clock
    correction (``latency_clock``: PostgreSQL's clock, each generator's shift and uncertainty, the latencies before
    the correction, and the generators whose shift is uncertain by more than ``UNCERTAINTY_SHARE`` of the median
    latency: flagged)."""
    from harness.cluster.placement import UNCERTAINTY_SHARE
    from harness.cluster.remote import RemoteStage

    placed = [st for st in orch.stages.values() if isinstance(st, RemoteStage)]
    p50 = lat.get("p50")
    stream_s = (result.stream_ended_ns - result.started_ns) / 1e9
    out = placement.figures(placed, stream_s, p50 * 1e6 if p50 else None)
    if clocks is not None:
        gens = {n: {k: v for k, v in g.items() if k != "sensor_ids"} for n, g in clocks["generators"].items()}
        uncertain = [n for n, g in gens.items() if p50 and g["uncertainty_ns"] > UNCERTAINTY_SHARE * p50 * 1e6]
        out["latency_clock"] = {
            "corrected": bool(gens), "postgresql": clocks["postgresql"], "generators": gens,
            "before_ms": {k: raw.get(k) for k in ("p50", "p99", "max")} if raw else None, "flagged": uncertain,
        }  # fmt: skip
        out["clock_flagged"] = sorted({*out["clock_flagged"], *uncertain})
    return out


def _stored(p: Path) -> str:
    """A path as results.json keeps it: relative to the repository when inside it."""
    return str(p.relative_to(ROOT) if p.is_relative_to(ROOT) else p)


def _sampled(sampler: sampling.StreamSampler, cell_dir: Path) -> dict[str, Any]:
    """Stop the repeat's py-spy samplers, rewrite the cell's merged views: the ``results.Sampled`` fields."""
    files, problem = sampler.finish()
    views = flamegraph.write_cell_views(cell_dir) if files else {}
    return {
        "rate_hz": sampler.rate_hz,
        "native": sampler.native,
        "files": {stage: _stored(p) for stage, p in files.items()},
        "views": {stage: {k: _stored(p) for k, p in v.items()} for stage, v in views.items()},
        "problem": problem,
        "cpu_s": sampler.cpu_s,
    }
