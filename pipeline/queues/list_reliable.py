from __future__ import annotations

from typing import Any

import redis.asyncio as aioredis

from pipeline.queues.base import Ack, decode
from pipeline.queues.list import ListQueue
from pipeline.rows import Row


class ReliableListQueue(ListQueue):
    """A list with the reliable-queue pattern: ``BLMOVE`` each entry into this consumer's processing list, and
    ``LREM`` it from there only after its rows are committed. On start, whatever the consumer's processing list
    still holds (it died mid-batch) goes back to the head of the queue. Puts and payloads as ``list``."""

    name = "list_reliable"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.processing = f"{self.key}:processing:{self.consumer}"

    async def setup(self) -> None:
        # back to the right end, where the next pop takes from: redelivered first, in their original order
        while await self.r.lmove(self.processing, self.key, "LEFT", "RIGHT") is not None:
            pass

    async def get(self, max_rows: int, timeout: float) -> tuple[list[Row], Ack]:
        # Redis takes a decimal timeout since 6.0; redis-py annotates it as int
        item = await self.r.blmove(self.key, self.processing, max(timeout, 0.001), "RIGHT", "LEFT")  # type: ignore[arg-type]
        if item is None:
            return [], None
        rows = decode(item)
        self._note_entry_size(len(rows), 1)
        return rows, item

    async def ack(self, token: Ack) -> None:
        if token is not None:
            await self.r.lrem(self.processing, -1, token)

    async def length(self) -> int:
        return int(await self.r.llen(self.key)) + int(await self.r.llen(self.processing))

    @classmethod
    async def held(cls, client: aioredis.Redis, key: str) -> list[Row] | None:
        """The queue and every consumer's processing list (a restarted writer puts its own back)."""
        rows = await super().held(client, key) or []
        async for k in client.scan_iter(match=f"{key}:processing:*"):
            rows += [row for payload in await client.lrange(k, 0, -1) for row in decode(payload)]
        return rows

    @classmethod
    async def summary(cls, client: aioredis.Redis, key: str) -> dict[str, str]:
        """The queue and every consumer's processing list (what it took and has not acknowledged)."""
        out = await super().summary(client, key)
        async for k in client.scan_iter(match=f"{key}:processing:*"):
            name = k.decode() if isinstance(k, bytes) else str(k)
            out[name] = f"list of {int(await client.llen(k))}"
        return dict(sorted(out.items()))
