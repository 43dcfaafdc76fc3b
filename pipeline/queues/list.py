from __future__ import annotations

import redis.asyncio as aioredis

from pipeline.queues.base import Ack, Progress, Queue, decode, encode
from pipeline.rows import Row


class ListQueue(Queue):
    """The seed's queue: ``LPUSH`` at ingest, ``BRPOP`` one entry at a time at the writer.

    A popped entry is gone: if the writer dies before its batch commits, those readings are lost (the seed's
    behaviour, kept on purpose so the harness can show it).
    """

    name = "list"

    async def put(self, rows: list[Row], progress: Progress | None = None, *, wait: bool = True) -> int:
        payloads = encode(rows, self.entry)
        self._note_entry_size(len(rows), len(payloads))
        if progress is None:
            length = int(await self.r.lpush(self.key, *payloads))
        else:
            async with self.r.pipeline(transaction=True) as pipe:
                pipe.lpush(self.key, *payloads)
                pipe.hset(progress[0], mapping=progress[1])  # type: ignore[arg-type]
                length = int((await pipe.execute())[0])
        if wait:
            await self.wait_below_cap(length)
        return length

    async def get(self, max_rows: int, timeout: float) -> tuple[list[Row], Ack]:
        item = await self.r.brpop([self.key], timeout=max(timeout, 0.001))
        if item is None:
            return [], None
        rows = decode(item[1])
        self._note_entry_size(len(rows), 1)
        return rows, None

    async def length(self) -> int:
        return int(await self.r.llen(self.key))

    @classmethod
    async def depth(cls, client: aioredis.Redis, key: str) -> int:
        return int(await client.llen(key))

    @classmethod
    async def held(cls, client: aioredis.Redis, key: str) -> list[Row] | None:
        """What the list holds (a reading popped by a writer is no longer here: it lives or dies with it)."""
        return [row for payload in await client.lrange(key, 0, -1) for row in decode(payload)]

    @classmethod
    async def summary(cls, client: aioredis.Redis, key: str) -> dict[str, str]:
        n = int(await client.llen(key))
        return {key: f"list of {n}"} if n else {}
