"""The harness's websocket client of the backend (a viewer): what it received, and when."""

from __future__ import annotations

import asyncio
import contextlib
import time

import orjson
import websockets

from harness.process import READY_TIMEOUT_S, PipelineError


class WsProbe:
    """A websocket client of the backend: counts the readings it receives and, per reading, when it arrived and
    how long after its intended time (end-to-end latency to a viewer, exact, from the same clock)."""

    def __init__(self, url: str, keep: int = 2_000_000) -> None:
        self.url, self.received, self.keep, self.reconnects = url, 0, keep, 0
        self.task: asyncio.Task[None] | None = None
        self.connected = asyncio.Event()
        self.arrivals: list[int] = []  # receive time, ns since the epoch, per reading (up to ``keep``)
        self.latencies: list[int] = []  # receive time - intended_ns, per reading (same order)
        self.intended: list[int] = []

    async def _run(self) -> None:
        attempt = 0
        while True:  # reconnect after the backend restarts (a fault cell): what it broadcast meanwhile is missed
            try:
                await self._receive()
                return
            except (OSError, websockets.exceptions.WebSocketException):
                if not self.connected.is_set() and attempt == 0:
                    raise
                self.reconnects += 1
                await asyncio.sleep(min(2.0, 0.05 * 2**attempt))
                attempt += 1

    async def _receive(self) -> None:
        async with websockets.connect(self.url, max_size=None) as ws:
            self.connected.set()
            async for message in ws:
                now = time.time_ns()
                obj = orjson.loads(message)
                readings = obj if isinstance(obj, list) else [obj]
                self.received += len(readings)
                if len(self.arrivals) < self.keep:
                    for r in readings:
                        intended = r.get("intended_ns")
                        if intended:
                            self.arrivals.append(now)
                            self.intended.append(intended)
                            self.latencies.append(now - intended)

    async def start(self) -> None:
        task = self.task = asyncio.create_task(self._run())
        done, _ = await asyncio.wait(
            {task, asyncio.ensure_future(self.connected.wait())}, timeout=READY_TIMEOUT_S,
            return_when=asyncio.FIRST_COMPLETED,
        )  # fmt: skip
        if task in done:
            task.result()  # raises the connection error
        if not self.connected.is_set():
            raise PipelineError(f"websocket {self.url.partition('&token=')[0]} did not connect")

    async def stop(self) -> None:
        if self.task:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self.task
