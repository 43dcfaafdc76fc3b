"""``pubsub``: the seed's other idea — each batch published on a Redis pub/sub channel; the backend subscribes and
broadcasts to its websocket clients. No HTTP hop, no response: **at most once**. A batch published while no backend
is subscribed (PUBLISH answers 0 receivers: a backend down or restarting) is gone, and counted as failed
(``telemetry_errors_total{stage="forwarder", kind="post_failed"}``), never as forwarded."""

from __future__ import annotations

import time

import orjson
import redis.asyncio as aioredis

from pipeline import metrics
from pipeline.forwarders.base import Forwarder
from pipeline.rows import Row, row_to_dict
from pipeline.runtime import StageError


class PubSubForwarder(Forwarder):
    """PUBLISH of ``batch`` readings per message (a JSON array, the body ``/telem_data/batch`` takes) on the run's
    channel; ``forwarded`` counts the readings some subscriber received."""

    name = "pubsub"
    via_pubsub = True

    async def start(self) -> None:
        if not self.redis_url or not self.channel:
            raise StageError("the pubsub forwarder needs --redis-url and --pubsub-channel (the run's channel)")
        self.client = aioredis.Redis.from_url(self.redis_url)

    async def send(self, rows: list[Row]) -> None:
        hist = metrics.forward_request_seconds()
        size = max(1, self.batch)
        for i in range(0, len(rows), size):
            chunk = rows[i : i + size]
            t = time.perf_counter()
            heard = await self.client.publish(str(self.channel), orjson.dumps([row_to_dict(r) for r in chunk]))
            hist.observe(time.perf_counter() - t)
            if heard:
                self.forwarded.inc(len(chunk))
            else:  # nobody subscribed: the batch is gone (at most once)
                self.failed.inc(len(chunk))

    async def close(self) -> None:
        await self.client.aclose()
