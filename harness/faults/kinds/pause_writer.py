"""``pause_writer``: a writer stopped (SIGSTOP) past the stream's claim timeout, so another writer claims what it
held, then continued (SIGCONT): two writers have believed they owned the same entries; dedupe makes the second
commit harmless. Recovered when the paused writer runs again (its metrics answer): it may have nothing left to
commit, since the other writer claimed what it held and the stream may be over, so its commits can't be the sign."""

import asyncio
import contextlib
import signal
import time
from typing import Any

import httpx

from harness.faults.base import FaultKind, Pipeline
from harness.process import PipelineError, Stage
from pipeline.queues.stream import StreamQueue

PAUSE_S = StreamQueue.claim_idle_s + 2.0  # past the claim timeout, so another writer claims its entries
PAUSED = "writer-1"


class PauseWriter(FaultKind):
    name = "pause_writer"
    hold_s = PAUSE_S
    stopped: Stage | None = None
    held = 0

    def progress(self, p: Pipeline, snap: dict[str, Any]) -> int:
        return p.total([PAUSED], "committed")  # the paused writer's own commits

    async def strike(self, p: Pipeline) -> None:
        stage = p.stages.get(PAUSED)
        if stage is None or "writer-2" not in p.stages:
            raise PipelineError(
                f"fault {self.fault.kind}: needs writers {PAUSED} and writer-2 (set workers = 2, topology split)"
            )
        stage.signal(signal.SIGSTOP)
        self.stopped = stage
        self.held = await _pending(p) if p.cfg.queue == "stream" else 0

    async def undo(self, p: Pipeline) -> None:
        stage, f = self.stopped, self.fault
        if stage is None:
            return
        try:
            left = await _pending(p) if p.cfg.queue == "stream" else 0  # what no other writer claimed meanwhile
        finally:
            stage.signal(signal.SIGCONT)
        await _answers_again(stage.metrics_url)
        if f.resumed_at_ns is None:
            f.resumed_at_ns = time.time_ns()
        f.detail = f"{PAUSED} paused (SIGSTOP) {PAUSE_S:g} s, past the {StreamQueue.claim_idle_s:g} s claim timeout"
        if p.cfg.queue == "stream":
            f.detail += (
                f", holding {self.held} pending stream entries, {self.held - left} of them claimed by another writer"
            )


async def _answers_again(url: str | None, timeout_s: float = 30.0) -> None:
    """Wait until a resumed stage's ``/metrics`` answers (at most ``timeout_s``)."""
    if not url:
        return
    deadline = time.monotonic() + timeout_s
    async with httpx.AsyncClient(timeout=1.0) as http:
        while time.monotonic() < deadline:
            with contextlib.suppress(httpx.HTTPError):
                if (await http.get(url)).status_code == 200:
                    return
            await asyncio.sleep(0.05)


async def _pending(p: Pipeline) -> int:
    """How many stream entries the paused writer has read and not acknowledged (another writer will claim them;
    "writers" is the consumer group every writer joins, ``pipeline.queues.base``)."""
    import redis.asyncio as aioredis

    client = aioredis.Redis.from_url(p.services.redis_url, socket_timeout=5)
    try:
        entries = await client.xpending_range(
            p.queue_key, "writers", min="-", max="+", count=100_000, consumername=PAUSED
        )
        return len(entries)
    finally:
        await client.aclose()
