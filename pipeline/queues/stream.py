from __future__ import annotations

from typing import Any

import redis.exceptions

from pipeline.queues.base import Ack, Queue, decode, encode
from pipeline.rows import Row

FIELD = b"d"


class StreamQueue(Queue):
    """Redis Streams with a consumer group: ``XADD`` at ingest, ``XREADGROUP`` at the writer, and ``XACK`` +
    ``XDEL`` only after the rows are committed, so an entry read by a writer that dies stays pending (and the
    stream's length counts exactly the unacknowledged entries, which is what ``cap`` bounds)."""

    name = "stream"

    async def setup(self) -> None:
        try:
            await self.r.xgroup_create(self.key, self.group, id="0", mkstream=True)
        except redis.exceptions.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    async def put(self, rows: list[Row]) -> int:
        payloads = encode(rows, self.entry)
        self._note_entry_size(len(rows), len(payloads))
        async with self.r.pipeline(transaction=False) as pipe:
            for p in payloads:
                pipe.xadd(self.key, {FIELD: p})
            pipe.xlen(self.key)
            replies = await pipe.execute()
        length = int(replies[-1])
        await self.wait_below_cap(length)
        return length

    async def get(self, max_rows: int, timeout: float) -> tuple[list[Row], Ack]:
        count = max(1, int(max_rows / max(1.0, self._rows_per_entry)))
        reply: Any = await self.r.xreadgroup(
            self.group, self.consumer, {self.key: ">"}, count=count, block=max(1, int(timeout * 1000))
        )
        if not reply:
            return [], None
        ids, rows = [], []
        for _stream, entries in reply:
            for entry_id, fields in entries:
                ids.append(entry_id)
                rows.extend(decode(fields[FIELD]))
        self._note_entry_size(len(rows), len(ids))
        return rows, ids

    async def ack(self, token: Ack) -> None:
        if not token:
            return
        async with self.r.pipeline(transaction=True) as pipe:
            pipe.xack(self.key, self.group, *token)
            pipe.xdel(self.key, *token)
            await pipe.execute()

    async def length(self) -> int:
        return int(await self.r.xlen(self.key))
