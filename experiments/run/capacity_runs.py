"""The runner's capacity work: stage ceilings between rounds, the capacity searches after them, and each cell's
binding ceiling. (Scheduling stays in ``runner``; the decisions in ``capacity`` and ``stage_ceilings``.)"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from typing import TYPE_CHECKING

from experiments.plan.matrix import Cell
from experiments.results.model import Repeat
from experiments.run import stage_ceilings
from experiments.run.capacity import Probe, find_capacity
from experiments.run.repeat import run_repeat
from harness.services import ServiceError
from pipeline.queues import QUEUES

if TYPE_CHECKING:
    from experiments.run.runner import Runner

CAPACITY_PROBES = 7  # probes per configuration: a bracket, then bisection to CAPACITY_TOLERANCE
CAPACITY_TOLERANCE = 0.15


def _writers(r: Runner) -> int:
    return max((c.params.workers for c in r.m.cells), default=1)


async def stage_pass(r: Runner) -> None:
    """One pass of every stage alone (``stage_ceilings.one_pass``) with the settings of the matrix's chosen cell."""
    if not r.m.stage_ceilings or r.results.ceilings is None:
        return
    cell = next(c for c in r.m.cells if c.id == r.m.stage_ceilings)
    for broker in sorted({q.broker for q in QUEUES.values() if q.broker}):  # each broker alone: found first
        with contextlib.suppress(ServiceError):  # none answers: that queue's ceiling is left out
            await asyncio.to_thread(r.services.broker_url, broker)
    try:
        got = await stage_ceilings.one_pass(cell.params, r.services.pg_dsn, r.services.redis_url, r.schema,
                                            f"{r.queue_key}:ceiling", _writers(r))  # fmt: skip
    except Exception as exc:  # a ceiling that can't be measured is said, never invented
        r.console.print(f"stage ceilings: a pass failed: {exc}", style="yellow", markup=False)
        return
    r.stage_passes.append(got)
    r.results.ceilings.stages = stage_ceilings.summarize(r.stage_passes, _writers(r))
    r.results.ceilings.stages_cell = cell.id
    r.save()
    r.console.print(
        "stages alone: " + " · ".join(f"{k} {v:,.0f}/s" for k, v in got.items()), markup=False, highlight=False
    )


def bind(r: Runner) -> None:
    """Each cell's binding ceiling and the fraction of it reached."""
    stages = r.results.ceilings.stages if r.results.ceilings else {}
    for cr in r.results.cells:
        s = cr.summary
        if s is None or not stages:
            continue
        s.binding_ceiling = stage_ceilings.binding_ceiling(
            stages, s.throughput_rps, s.bottleneck.stage if s.bottleneck else None, cr.params.workers,
            forwarding=cr.params.forwarding,
        )  # fmt: skip


async def capacities(r: Runner) -> None:
    """For each of the matrix's ``capacity_cells``: the highest offered rate it sustains under the SLO."""
    for cid in r.m.capacity_cells:
        cell = next(c for c in r.m.cells if c.id == cid)
        cr = r.results.cell(cid)
        if cr is None or cr.summary is None or not cr.summary.throughput_rps:
            r.console.print(f"capacity {cid}: no measured throughput to start from: skipped", style="yellow")
            continue
        # start at half the measured (closed-loop, or offered) throughput: the search brackets from there
        start = 0.5 * cr.summary.throughput_rps
        probes = 0

        async def probe(rate: float, cell: Cell = cell, cid: str = cid) -> Probe:
            nonlocal probes
            probes += 1
            params = cell.params.model_copy(update={"rate": round(rate, 1), "max_rate": False})
            c = dataclasses.replace(cell, params=params, fault=None)
            workdir = r.dir / "logs" / cid / f"capacity-{probes}"
            rep_dict, _, _ = await run_repeat(c, r.m, r.services, workdir, -100 - probes,
                                              measure_s=r.measure_s.get(cid), queue_key=r.queue_key,
                                              schema=r.schema)  # fmt: skip
            rep = Repeat(**rep_dict)
            reason = rep.bottleneck.reason if rep.bottleneck else ""
            p = Probe(rate, rep.throughput_rps or 0.0, rep.latency_ms.p99, queue_grew="queue grows" in reason,
                      unsent=rep.accounting.unsent)  # fmt: skip
            why = "; ".join(p.failures(r.m.slo_ms)) or "sustained"
            r.console.print(f"capacity {cid}: {rate:,.0f}/s offered → {p.achieved:,.0f}/s committed, p99 "
                            f"{p.p99_ms or 0:,.0f} ms: {why}", markup=False, highlight=False)  # fmt: skip
            return p

        cap = await find_capacity(probe, start, slo_ms=r.m.slo_ms, tolerance=CAPACITY_TOLERANCE,
                                  max_probes=CAPACITY_PROBES)  # fmt: skip
        cr.summary.capacity = cap.as_dict()
        r.save()
        found = f"{cap.rps:,.0f} readings/s at p99 {cap.p99_ms:,.0f} ms" if cap.rps and cap.p99_ms else "none found"
        r.console.print(f"capacity {cid} (p99 ≤ {r.m.slo_ms:,.0f} ms): {found} ({cap.stop_reason})")
