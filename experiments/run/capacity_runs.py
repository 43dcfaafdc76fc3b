"""The run's capacity work: stage ceilings between rounds, the capacity searches after them, and each cell's
binding ceiling. (Scheduling stays in ``runner``; the decisions in ``capacity`` and ``stage_ceilings``; what a run
shares comes from its ``RunContext``.)"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses

from experiments.plan.matrix import Cell
from experiments.results.model import Results
from experiments.run import stage_ceilings
from experiments.run.capacity import Probe, find_capacity
from experiments.run.context import RunContext
from harness.services import ServiceError
from pipeline.queues import QUEUES

CAPACITY_PROBES = 7  # probes per configuration: a bracket, then bisection to CAPACITY_TOLERANCE
CAPACITY_TOLERANCE = 0.15


def _writers(ctx: RunContext) -> int:
    return max((c.params.workers for c in ctx.m.cells), default=1)


async def stage_pass(ctx: RunContext, passes: list[dict[str, float]]) -> None:
    """One pass of every stage alone (``stage_ceilings.one_pass``) with the settings of the matrix's chosen cell,
    appended to ``passes`` (the run's passes so far); ``ceilings.stages`` summarizes them all."""
    if not ctx.m.stage_ceilings or ctx.results.ceilings is None:
        return
    cell = ctx.cell(ctx.m.stage_ceilings)
    for broker in sorted({q.broker for q in QUEUES.values() if q.broker}):  # each broker alone: found first
        with contextlib.suppress(ServiceError):  # none answers: that queue's ceiling is left out
            await asyncio.to_thread(ctx.services.broker_url, broker)
    try:
        got = await stage_ceilings.one_pass(cell.params, ctx.services.pg_dsn, ctx.services.redis_url, ctx.schema,
                                            f"{ctx.queue_key}:ceiling", _writers(ctx),
                                            forwarding=[c.params for c in ctx.m.cells])  # fmt: skip
    except Exception as exc:  # a ceiling that can't be measured is said, never invented
        ctx.say(f"stage ceilings: a pass failed: {exc}", style="yellow")
        return
    passes.append(got)
    ctx.results.ceilings.stages = stage_ceilings.summarize(passes, _writers(ctx))
    ctx.results.ceilings.stages_cell = cell.id
    ctx.save()
    ctx.say("stages alone: " + " · ".join(f"{k} {v:,.0f}/s" for k, v in got.items()))


def bind(res: Results) -> None:
    """Each cell's binding ceiling and the fraction of it reached."""
    stages = res.ceilings.stages if res.ceilings else {}
    for cr in res.cells:
        s = cr.summary
        if s is None or not stages:
            continue
        s.binding_ceiling = stage_ceilings.binding_ceiling(
            stages, s.throughput_rps, s.bottleneck.stage if s.bottleneck else None, cr.params.workers,
            forwarding=cr.params.forwarding, forward=stage_ceilings.forward_key(cr.params),
        )  # fmt: skip


async def capacities(ctx: RunContext, only: set[str] | None = None) -> None:
    """For each of the matrix's ``capacity_cells`` (of ``only``, when given) not searched yet: the highest offered
    rate it sustains under the SLO."""
    for cid in ctx.m.capacity_cells:
        if only is not None and cid not in only:
            continue
        cell = ctx.cell(cid)
        cr = ctx.results.cell(cid)
        if cr is not None and cr.summary is not None and cr.summary.capacity is not None:
            continue  # searched before the cells that offer a share of it (a fault cell's load)
        if cr is None or cr.summary is None or not cr.summary.throughput_rps:
            ctx.say(f"capacity {cid}: no measured throughput to start from: skipped", style="yellow")
            continue
        # start at half the measured (closed-loop, or offered) throughput: the search brackets from there
        start = 0.5 * cr.summary.throughput_rps
        probes = 0

        async def probe(rate: float, cell: Cell = cell, cid: str = cid) -> Probe:
            nonlocal probes
            params = cell.params.model_copy(update={"rate": round(rate, 1), "max_rate": False})
            rep = await ctx.repeat(dataclasses.replace(cell, params=params, fault=None), "capacity", index=probes)
            probes += 1
            reason = rep.bottleneck.reason if rep.bottleneck else ""
            p = Probe(rate, rep.throughput_rps or 0.0, rep.latency_ms.p99, queue_grew="queue grows" in reason,
                      unsent=rep.accounting.unsent)  # fmt: skip
            why = "; ".join(p.failures(ctx.m.slo_ms)) or "sustained"
            ctx.say(f"capacity {cid}: {rate:,.0f}/s offered → {p.achieved:,.0f}/s committed, p99 "
                    f"{p.p99_ms or 0:,.0f} ms: {why}")  # fmt: skip
            return p

        cap = await find_capacity(probe, start, slo_ms=ctx.m.slo_ms, tolerance=CAPACITY_TOLERANCE,
                                  max_probes=CAPACITY_PROBES)  # fmt: skip
        cr.summary.capacity = cap.as_dict()
        ctx.save()
        found = f"{cap.rps:,.0f} readings/s at p99 {cap.p99_ms:,.0f} ms" if cap.rps and cap.p99_ms else "none found"
        ctx.say(f"capacity {cid} (p99 ≤ {ctx.m.slo_ms:,.0f} ms): {found} ({cap.stop_reason})")
