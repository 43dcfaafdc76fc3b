from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import aio_pika
import aio_pika.exceptions
import aiormq.exceptions
import redis.asyncio as aioredis

from pipeline.endpoints import LOCAL_AMQP_URL
from pipeline.queues.base import BROKER_URLS, Ack, Progress, Queue, decode, encode, retrying
from pipeline.rows import Row

QUEUE_TYPE = "quorum"  # docs/brokers.md: why quorum and not classic or stream


log = logging.getLogger("telemetry_bench.queue")
T = TypeVar("T")
_GONE: tuple[type[Exception], ...] = (aio_pika.exceptions.AMQPError, ConnectionError, TimeoutError, RuntimeError)


async def _retrying(request: Callable[[], Awaitable[T]]) -> T:
    """``request()``, retried while the broker is gone (``pipeline.queues.base.retrying``)."""
    return await retrying(request, _GONE, "RabbitMQ")


def _url(settings: Any = None) -> str:
    return getattr(settings, "amqp_url", None) or BROKER_URLS.get("rabbitmq") or LOCAL_AMQP_URL


def _arguments() -> dict[str, Any]:
    return {"x-queue-type": QUEUE_TYPE}


class RabbitMQQueue(Queue):
    """RabbitMQ: a durable quorum queue per queue key (named as the key), persistent messages published with
    publisher confirms (``put`` returns once the broker has them on disk), a consumer per writer with ``prefetch``
    unacknowledged deliveries at most, and a manual ack after the commit.

    Ingest's resume position is written to Redis after the confirms, as for ``jetstream``: an ingest killed in
    between publishes those readings again (duplicates for ``dedupe``, never a loss); one Redis round trip per put.
    A writer that dies (its connection closes) has its unacknowledged deliveries requeued at once and delivered to
    another consumer, marked redelivered: at least once, exactly once in the table with ``dedupe``.
    """

    name = "rabbitmq"
    broker = "rabbitmq"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._conn: Any = None
        self._channel: Any = None
        self._queue: Any = None
        self._buffer: asyncio.Queue[Any] | None = None
        self._tag: str | None = None

    async def setup(self) -> None:
        self._conn = await aio_pika.connect_robust(_url(self.settings), timeout=5)
        self._channel = await self._conn.channel(publisher_confirms=True)
        await self._channel.set_qos(prefetch_count=int(self.knob("prefetch")))
        self._queue = await self._channel.declare_queue(self.key, durable=True, arguments=_arguments())

    async def put(self, rows: list[Row], progress: Progress | None = None, *, wait: bool = True) -> int:
        payloads = encode(rows, self.entry)
        self._note_entry_size(len(rows), len(payloads))
        publish = self._channel.default_exchange.publish
        persistent = aio_pika.DeliveryMode.PERSISTENT
        await _retrying(
            lambda: asyncio.gather(
                *(publish(aio_pika.Message(p, delivery_mode=persistent), self.key) for p in payloads)
            )
        )
        if progress is not None:  # after the confirms: a crash in between repeats, never skips
            await self.r.hset(progress[0], mapping=progress[1])  # type: ignore[arg-type]
        if not wait:
            return len(payloads)
        length = await self.length()
        await self.wait_below_cap(length)
        return length

    async def get(self, max_rows: int, timeout: float) -> tuple[list[Row], Ack]:
        if self._buffer is None:
            self._buffer = asyncio.Queue()
            self._tag = await self._queue.consume(self._buffer.put)
        count = max(1, int(max_rows / max(1.0, self._rows_per_entry)))
        try:
            msgs = [await asyncio.wait_for(self._buffer.get(), max(timeout, 0.001))]
        except TimeoutError:
            return [], None
        while len(msgs) < count and not self._buffer.empty():
            msgs.append(self._buffer.get_nowait())
        rows = [row for m in msgs for row in decode(m.body)]
        self._note_entry_size(len(rows), len(msgs))
        return rows, msgs

    async def ack(self, token: Ack) -> None:
        if not token:
            return
        try:
            await asyncio.gather(*(m.ack() for m in token))
        except _GONE as exc:  # delivered on a channel that closed (a broker restart): requeued, redelivered (dedupe)
            log.warning("acks of %d entries lost (%s): they are redelivered", len(token), type(exc).__name__)

    async def length(self) -> int:
        """Messages ready (not yet delivered): RabbitMQ does not count the delivered, unacknowledged ones here."""
        declared = await _retrying(self._queue.declare)  # as set up (a robust channel's passive declare is cached)
        return int(declared.message_count or 0)

    async def close(self) -> None:
        """Cancel the consumer (its unacknowledged deliveries go back to the queue) and close the connection."""
        if self._tag is not None and self._queue is not None:
            with contextlib.suppress(Exception):  # the broker went away: closing the connection is enough
                await self._queue.cancel(self._tag)
        conn, self._conn, self._channel, self._queue, self._buffer, self._tag = self._conn, None, None, None, None, None
        if conn is not None:
            await conn.close()

    # observers: on a connection of their own, to the broker this process was told about
    @classmethod
    async def _counts(cls, key: str) -> tuple[int, int] | None:
        conn = await aio_pika.connect(_url(), timeout=5)
        try:
            channel = await conn.channel()
            try:
                declared = await channel.declare_queue(key, passive=True)
            except (aio_pika.exceptions.ChannelClosed, aiormq.exceptions.ChannelNotFoundEntity):
                return None
            result = declared.declaration_result
            return int(result.message_count or 0), int(result.consumer_count or 0)
        finally:
            await conn.close()

    @classmethod
    async def depth(cls, client: aioredis.Redis, key: str) -> int:
        counts = await cls._counts(key)
        return counts[0] if counts else 0

    @classmethod
    async def summary(cls, client: aioredis.Redis, key: str) -> dict[str, str]:
        """Ready messages and consumers (delivered, unacknowledged ones are not counted by AMQP's declare)."""
        counts = await cls._counts(key)
        if counts is None:
            return {}
        return {f"amqp:{key}": f"{QUEUE_TYPE} queue of {counts[0]} ready ({counts[1]} consumers)"}

    @classmethod
    async def held(cls, client: aioredis.Redis, key: str) -> list[Row] | None:
        """Every message the queue holds, taken one by one (``basic.get``, unacknowledged) and given back when the
        connection closes: requeued, marked redelivered. Deliveries a live consumer holds are not seen (AMQP shows
        them to no one else): called when the run's writers are gone, there are none."""
        conn = await aio_pika.connect(_url(), timeout=5)
        rows: list[Row] = []
        try:
            channel = await conn.channel()
            try:
                queue = await channel.declare_queue(key, passive=True)
            except (aio_pika.exceptions.ChannelClosed, aiormq.exceptions.ChannelNotFoundEntity):
                return []
            while (msg := await queue.get(no_ack=False, fail=False)) is not None:
                rows.extend(decode(msg.body))
            return rows
        finally:
            await conn.close()  # every message taken goes back

    @classmethod
    async def drop(cls, client: aioredis.Redis, key: str, url: str | None = None) -> None:
        conn = await aio_pika.connect(url or _url(), timeout=5)
        try:
            channel = await conn.channel()
            with contextlib.suppress(aio_pika.exceptions.ChannelClosed, aiormq.exceptions.ChannelNotFoundEntity):
                await channel.queue_delete(key)
        finally:
            await conn.close()
