"""Injects one fault into a running pipeline at its time and watches for the affected path to move again. What the
fault does is its kind's (``harness.faults.base.FaultKind``, one file each in ``harness/faults/kinds/``); this is
the clock around it, the same for every kind: when it is due, the hold of a timed kind, the recovery, chaos's
parts."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

from harness.faults.base import KINDS, Fault, Pipeline
from harness.process import PipelineError

log = logging.getLogger("telemetry_bench.orchestrator")


class Injection:
    """Injects one fault into a running pipeline at its time, and watches for the affected path to move again."""

    def __init__(self, fault: Fault) -> None:
        self.fault = fault
        self.kind = KINDS[fault.kind](fault)
        self._base = 0  # the affected path's progress when the fault hit
        self._undo: asyncio.Task[None] | None = None  # a timed fault, held until it is undone
        self._flowing_ns: int | None = None  # when the first reading was seen in the table
        self.parts = [Injection(part) for part in fault.parts]  # chaos: one injection per fault, overlaps allowed

    @property
    def backend_hook(self) -> bool:
        """Whether the backend must start with its fault hook (``--fault-hook``): a kind that uses it is to come."""
        return self.kind.backend_hook or any(part.backend_hook for part in self.parts)

    @property
    def broadcast_best_effort(self) -> bool:
        """Whether the accounting can't promise the broadcasts (a kind that kills the backend is to come)."""
        return self.kind.broadcast_best_effort or any(part.broadcast_best_effort for part in self.parts)

    def due(self, started_ns: int) -> bool:
        """Whether to inject now: ``at_s`` after the first reading reached the table (a fault that strikes the
        backend: was forwarded), not after the generator's start (``started_ns``, unused): a stream's start-up time
        varies, its flow is what the fault must hit."""
        f, flowing = self.fault, self._flowing_ns
        if self.parts:
            return any(part.due(started_ns) for part in self.parts)
        return (
            f.injected_at_ns is None and not f.note and flowing is not None and time.time_ns() - flowing >= f.at_s * 1e9
        )

    @property
    def settled(self) -> bool:
        """Injected (and, a timed fault, undone), or not injected for a stated reason: the run may end."""
        if self.parts:
            return all(part.settled for part in self.parts)
        return (self.fault.injected_at_ns is not None and (self._undo is None or self._undo.done())) or bool(
            self.fault.note
        )

    async def inject(self, p: Pipeline, snap: dict[str, Any]) -> None:
        f = self.fault
        if self.parts:  # chaos: every part that is due (the others at their own moments)
            for part in self.parts:
                if part.due(0):
                    await part.inject(p, snap)
            self._chaos_times()
            return
        f.injected_at_ns = time.time_ns()
        self._base = self.kind.progress(p, snap)
        log.warning("fault: %s", f.kind)
        if self.kind.hold_s is None:
            await self.kind.strike(p)
        else:
            self._undo = asyncio.create_task(self._timed(p, self.kind.hold_s))

    async def _timed(self, p: Pipeline, hold_s: float) -> None:
        """A timed fault, struck, held for its time and undone (whatever happens); undone, the path may move again."""
        try:
            await self.kind.strike(p)
            await asyncio.sleep(hold_s)
        finally:
            await self.kind.undo(p)
        self.fault.restarted_at_ns = time.time_ns()

    def _chaos_times(self) -> None:
        """Chaos: injected at its first fault; recovered when every injected fault's path moved again."""
        f, parts = self.fault, [part.fault for part in self.parts]
        injected = [x.injected_at_ns for x in parts if x.injected_at_ns is not None]
        f.injected_at_ns = min(injected) if injected else None
        if all(x.resumed_at_ns is not None or x.note for x in parts) and injected:
            f.resumed_at_ns = max(x.resumed_at_ns or 0 for x in parts)
        f.note = "; ".join(f"{x.kind} {x.note}" for x in parts if x.note) if not injected else ""
        f.detail = "; ".join(
            f"{x.kind} at {x.at_s:g} s: {x.detail or 'done'}"
            + ("" if x.resumed_at_ns is not None else " (its path not seen moving again: recovery unknown)")
            for x in parts
            if x.injected
        )

    async def watch(self, p: Pipeline, snap: dict[str, Any]) -> None:
        """At every poll: note when the affected path moves again after the fault (its recovery)."""
        f = self.fault
        if self.parts:
            for part in self.parts:
                await part.watch(p, snap)
            self._chaos_times()
            return
        if self._undo is not None and self._undo.done() and not self._undo.cancelled() and self._undo.exception():
            exc = self._undo.exception()
            raise PipelineError(f"fault {f.kind}: {type(exc).__name__}: {exc}")
        # the flow the fault must hit: the backend's, forwarding (it may run ahead of, or behind, the commits)
        if self._flowing_ns is None and int(snap[self.kind.flow]) > 0:
            self._flowing_ns = time.time_ns()
        if f.injected_at_ns is None and not f.note and int(snap["streams_completed"]) >= 1:
            f.note = f"not injected: the stream ended before {f.at_s:g} s of flow"
        if f.injected_at_ns is None or f.resumed_at_ns is not None:
            return
        if f.restarted_at_ns is None:
            if self.kind.took_effect(p, snap):
                f.restarted_at_ns = time.time_ns()
                self._base = self.kind.progress(p, snap)
            return
        if self.kind.progress(p, snap) > self._base:
            f.resumed_at_ns = time.time_ns()

    @contextlib.asynccontextmanager
    async def around_run(self, p: Pipeline) -> AsyncIterator[None]:
        """What the fault needs around the whole run (its kind's ``around_run``: its own Redis, its own PostgreSQL
        role, …); and a timed fault undone (SIGCONT, logins allowed, lock released) whatever happens."""
        async with contextlib.AsyncExitStack() as stack:
            for part in self.parts:
                await stack.enter_async_context(part.around_run(p))
            await stack.enter_async_context(self.kind.around_run(p))
            try:
                yield
            finally:
                if self._undo is not None:
                    with contextlib.suppress(Exception):
                        await self._undo  # the run ended early: still undo the fault
