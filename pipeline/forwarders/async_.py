from __future__ import annotations

import asyncio
import time

import httpx
from tenacity import AsyncRetrying

from pipeline import metrics
from pipeline.forwarders.base import Forwarder, Retryable, retry_policy
from pipeline.rows import Row


class AsyncForwarder(Forwarder):
    """``httpx.AsyncClient`` with keep-alive and at most ``concurrency`` POSTs in flight.

    ``send`` waits only when the in-flight bound is reached (backpressure, bounded memory).
    """

    name = "async"

    async def start(self) -> None:
        limits = httpx.Limits(max_connections=self.concurrency, max_keepalive_connections=self.concurrency)
        self.client = httpx.AsyncClient(limits=limits, timeout=10.0, headers=self.headers)
        self.slots = asyncio.Semaphore(self.concurrency)
        self.tasks: set[asyncio.Task[None]] = set()

    async def send(self, rows: list[Row]) -> None:
        for url, body, n in self.requests_for(rows):
            await self.slots.acquire()
            task = asyncio.create_task(self._post(url, body, n))
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)

    async def _post(self, url: str, body: bytes, n: int) -> None:
        hist = metrics.forward_request_seconds()
        try:
            async for attempt in AsyncRetrying(**retry_policy(httpx.TransportError)):
                with attempt:
                    t = time.perf_counter()
                    resp = await self.client.post(url, content=body)
                    hist.observe(time.perf_counter() - t)
                    self.settle(url, n, resp.status_code, resp.text)
        except (httpx.TransportError, Retryable) as exc:
            self.give_up(url, n, exc)
        finally:
            self.slots.release()

    async def close(self) -> None:
        if self.tasks:
            await asyncio.gather(*list(self.tasks), return_exceptions=True)
        await self.client.aclose()
