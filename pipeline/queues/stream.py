from __future__ import annotations

import time
from typing import Any

import redis.asyncio as aioredis
import redis.exceptions

from pipeline.queues.base import Ack, Progress, Queue, decode, encode
from pipeline.rows import Row

FIELD = b"d"


class StreamQueue(Queue):
    """Redis Streams with a consumer group: ``XADD`` at ingest, ``XREADGROUP`` at the writer, and ``XACK`` +
    ``XDEL`` only after the rows are committed, so an entry read by a writer that dies stays pending (and the
    stream's length counts exactly the unacknowledged entries, which is what ``cap`` bounds).

    Recovery: a consumer first re-reads its own pending entries (a writer restarted under the same name), and every
    ``CLAIM_EVERY_S`` claims entries another consumer has left pending for ``claim_idle_s`` (``XAUTOCLAIM``: a
    writer that died for good). Redelivery is at least once; ``dedupe`` writes make it exactly once in the table.
    """

    name = "stream"
    CLAIM_EVERY_S = 1.0
    claim_idle_s = 10.0  # longer than any batch takes to commit, so a live writer's entries are never taken

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._own_pending_checked = False
        self._next_claim = 0.0

    async def setup(self) -> None:
        try:
            await self.r.xgroup_create(self.key, self.group, id="0", mkstream=True)
        except redis.exceptions.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    async def put(self, rows: list[Row], progress: Progress | None = None, *, wait: bool = True) -> int:
        payloads = encode(rows, self.entry)
        self._note_entry_size(len(rows), len(payloads))
        async with self.r.pipeline(transaction=progress is not None) as pipe:
            for p in payloads:
                pipe.xadd(self.key, {FIELD: p})
            if progress is not None:
                pipe.hset(progress[0], mapping=progress[1])  # type: ignore[arg-type]
            pipe.xlen(self.key)
            replies = await pipe.execute()
        length = int(replies[-1])
        if wait:
            await self.wait_below_cap(length)
        return length

    async def get(self, max_rows: int, timeout: float) -> tuple[list[Row], Ack]:
        count = max(1, int(max_rows / max(1.0, self._rows_per_entry)))
        if not self._own_pending_checked:  # entries this consumer read before a restart
            reply: Any = await self.r.xreadgroup(self.group, self.consumer, {self.key: "0"}, count=count)
            rows, ids = self._unpack(reply[0][1] if reply else [])
            if ids:
                return rows, ids
            self._own_pending_checked = True
        now = time.monotonic()
        if now >= self._next_claim:  # entries a dead consumer left pending
            self._next_claim = now + self.CLAIM_EVERY_S
            claimed: Any = await self.r.xautoclaim(
                self.key, self.group, self.consumer, int(self.claim_idle_s * 1000), "0-0", count=count
            )
            rows, ids = self._unpack(claimed[1])
            if ids:
                return rows, ids
        reply = await self.r.xreadgroup(
            self.group, self.consumer, {self.key: ">"}, count=count, block=max(1, int(timeout * 1000))
        )
        if not reply:
            return [], None
        return self._unpack(reply[0][1])

    def _unpack(self, entries: Any) -> tuple[list[Row], list[Any]]:
        ids, rows = [], []
        for entry_id, fields in entries:
            ids.append(entry_id)
            if fields:  # None: deleted after all (acknowledged by someone): nothing to write, just ack it
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

    @classmethod
    async def depth(cls, client: aioredis.Redis, key: str) -> int:
        return int(await client.xlen(key))

    @classmethod
    async def held(cls, client: aioredis.Redis, key: str) -> list[Row] | None:
        """Every entry of the stream: waiting, or pending with a consumer (acknowledged entries are deleted)."""
        entries: Any = await client.xrange(key, "-", "+")
        return [row for _id, fields in entries if fields for row in decode(fields[FIELD])]

    @classmethod
    async def summary(cls, client: aioredis.Redis, key: str) -> dict[str, str]:
        """The stream's length and each consumer group's pending (read, not acknowledged) entries."""
        if not await client.exists(key):
            return {}
        groups = await client.xinfo_groups(key)
        pending = ", ".join(f"group {_text(g['name'])} {g['pending']} pending" for g in groups)
        return {key: f"stream of {int(await client.xlen(key))} ({pending or 'no group'})"}


def _text(v: bytes | str) -> str:
    return v.decode() if isinstance(v, bytes) else v
