"""The backend's end of the ``pubsub`` forwarder: subscribed to the run's Redis channel (``--pubsub-channel``,
``--redis-url``), each message — a JSON array of readings, the body ``/telem_data/batch`` takes — is counted as
received and broadcast exactly as a POST's readings are (``hub.publish``; the seed behaviour's awaited sends, one
reading at a time). Subscribed before the backend answers its health check (in the app's start-up), so a forwarder
started after it publishes to a listener. At most once: what is published while it is not subscribed is gone."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

import orjson
import redis.asyncio as aioredis

from pipeline import metrics
from pipeline.backend.guard import Guard
from pipeline.backend.hub import Hub

log = logging.getLogger("telemetry_bench.backend")


class Subscriber:
    def __init__(self, redis_url: str, channel: str, hub: Hub, guard: Guard, *, awaited: bool) -> None:
        self.redis_url, self.channel, self.hub, self.guard, self.awaited = redis_url, channel, hub, guard, awaited
        self.task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self.client = aioredis.Redis.from_url(self.redis_url)
        self.pubsub = self.client.pubsub(ignore_subscribe_messages=True)
        await self.pubsub.subscribe(self.channel)
        self.task = asyncio.create_task(self._listen())
        log.info("backend: subscribed to %s", self.channel)

    async def _listen(self) -> None:
        errors = metrics.errors().labels("backend", "bad_pubsub_message")
        async for message in self.pubsub.listen():
            try:
                readings: list[dict[str, Any]] = orjson.loads(message["data"])
            except orjson.JSONDecodeError:
                errors.inc()
                continue
            if self.guard.delay is not None:
                await self.guard.delay(len(readings))
            metrics.count("received", len(readings))
            if self.awaited:
                for r in readings:
                    await self.hub.send_awaited(orjson.dumps(r).decode())
            else:
                self.hub.publish(readings)

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self.task
        with contextlib.suppress(Exception):
            await self.pubsub.aclose()
            await self.client.aclose()
