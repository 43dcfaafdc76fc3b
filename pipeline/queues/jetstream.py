from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import nats
import nats.errors
import nats.js.errors
import redis.asyncio as aioredis
from nats.aio.client import Client as NATS
from nats.js.api import AckPolicy, ConsumerConfig, RetentionPolicy, StorageType, StreamConfig

from pipeline.endpoints import LOCAL_NATS_URL
from pipeline.queues.base import BROKER_URLS, Ack, Progress, Queue, decode, encode, retrying
from pipeline.rows import Row

log = logging.getLogger("telemetry_bench.queue")
T = TypeVar("T")
# what a request meets while the server restarts (nats.errors.TimeoutError is a TimeoutError, caught apart)
_GONE: tuple[type[Exception], ...] = (
    nats.errors.ConnectionClosedError,
    nats.errors.NoRespondersError,
    nats.errors.ConnectionReconnectingError,
    nats.errors.StaleConnectionError,
    nats.js.errors.ServiceUnavailableError,
)

_ACK_LOST: tuple[type[Exception], ...] = (TimeoutError, *_GONE)


async def _retrying(request: Callable[[], Awaitable[T]]) -> T:
    """``request()``, retried while the server is gone (``pipeline.queues.base.retrying``)."""
    return await retrying(request, _ACK_LOST, "NATS")


def stream_name(key: str) -> str:
    """The JetStream stream (and subject) of the queue at ``key``: names allow letters, digits, ``-`` and ``_``."""
    return re.sub(r"[^A-Za-z0-9_-]", "_", key)


def _url(settings: Any = None) -> str:
    return getattr(settings, "nats_url", None) or BROKER_URLS.get("nats") or LOCAL_NATS_URL


async def _on_error(exc: Exception) -> None:
    """A connection error (the broker down or restarting: the client reconnects): one line, not nats-py's traceback."""
    log.warning("nats: %s", exc or type(exc).__name__)


async def _connect(url: str) -> NATS:
    # through a dropped connection or a broker restart: reconnects for about a minute (as the Redis client retries)
    return await nats.connect(url, connect_timeout=5, error_cb=_on_error, max_reconnect_attempts=120,
                              reconnect_time_wait=0.5)  # fmt: skip


class JetStreamQueue(Queue):
    """NATS JetStream: a file-backed work-queue stream per queue key, one durable pull consumer per group (every
    writer of the group fetches from it), explicit acknowledgement after the commit.

    ``put`` publishes and waits for each publish acknowledgement (the entry is on the server's disk), then writes
    ingest's resume position to Redis: not in one transaction as with the Redis variants, so an ingest killed
    between the two resumes from the earlier position and publishes those readings again (duplicates, which
    ``dedupe`` removes; never a loss). It costs one Redis round trip per put, after the publish acknowledgement.

    An entry taken by a writer that dies is redelivered after ``ack_wait`` (at most ``max_deliver`` times;
    ``max_ack_pending`` bounds what all writers hold). At least once: a writer slower than ``ack_wait`` gets its
    entries redelivered to another, and the server may still accept the first writer's late ack (nats-server
    issue 4786), so exactly once in the table needs ``dedupe``. Acknowledged entries leave the stream (work-queue
    retention), so its message count is the entries not yet acknowledged: what ``cap`` bounds.
    """

    name = "jetstream"
    broker = "nats"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.stream = stream_name(self.key)
        self.durable = stream_name(self.group)
        self._nc: NATS | None = None
        self._sub: Any = None

    async def _js(self) -> Any:
        if self._nc is None:
            self._nc = await _connect(_url(self.settings))
        return self._nc.jetstream()

    async def setup(self) -> None:
        js = await self._js()
        config = StreamConfig(
            name=self.stream,
            subjects=[self.stream],
            retention=RetentionPolicy.WORK_QUEUE,
            storage=StorageType.FILE,
        )
        try:
            await js.add_stream(config)
        except nats.js.errors.BadRequestError as exc:  # exists (with another config): keep it as it is
            if exc.err_code != 10058:
                raise

    async def _subscription(self) -> Any:
        if self._sub is None:
            js = await self._js()
            config = ConsumerConfig(
                durable_name=self.durable,
                ack_policy=AckPolicy.EXPLICIT,
                ack_wait=float(self.knob("ack_wait")),
                max_deliver=int(self.knob("max_deliver")),
                max_ack_pending=int(self.knob("max_ack_pending")),
            )
            self._sub = await js.pull_subscribe(self.stream, durable=self.durable, stream=self.stream, config=config)
        return self._sub

    async def put(self, rows: list[Row], progress: Progress | None = None, *, wait: bool = True) -> int:
        js = await self._js()
        payloads = encode(rows, self.entry)
        self._note_entry_size(len(rows), len(payloads))
        acks = await _retrying(
            lambda: asyncio.gather(*(js.publish(self.stream, p, stream=self.stream) for p in payloads))
        )
        if progress is not None:  # after the entries are stored: a crash in between repeats, never skips
            await self.r.hset(progress[0], mapping=progress[1])  # type: ignore[arg-type]
        length = int((await _retrying(lambda: js.stream_info(self.stream))).state.messages) if wait else len(acks)
        if wait:
            await self.wait_below_cap(length)
        return length

    async def get(self, max_rows: int, timeout: float) -> tuple[list[Row], Ack]:
        sub = await self._subscription()
        count = max(1, int(max_rows / max(1.0, self._rows_per_entry)))
        try:
            msgs = await sub.fetch(batch=count, timeout=max(timeout, 0.01))
        except TimeoutError:  # nats.errors.TimeoutError, or asyncio's from inside a batch fetch
            return [], None
        except _GONE:  # the server restarting: nothing this time (the client reconnects)
            await asyncio.sleep(min(timeout, 0.2))
            return [], None
        rows = [row for m in msgs for row in decode(m.data)]
        self._note_entry_size(len(rows), len(msgs))
        return rows, msgs

    async def ack(self, token: Ack) -> None:
        if not token:
            return
        try:
            await asyncio.gather(*(m.ack() for m in token))
            assert self._nc is not None
            await self._nc.flush()
        except _ACK_LOST as exc:  # the server restarting: redelivered after ack_wait (dedupe)
            log.warning("acks of %d entries not confirmed (%s): they may be redelivered", len(token), exc)

    async def length(self) -> int:
        js = await self._js()
        return int((await _retrying(lambda: js.stream_info(self.stream))).state.messages)

    async def close(self) -> None:
        nc, self._nc, self._sub = self._nc, None, None
        if nc is not None:
            await nc.close()

    # observers: on a connection of their own, to the broker this process was told about
    @classmethod
    async def _info(cls, key: str) -> Any:
        nc = await nats.connect(_url(), connect_timeout=5, error_cb=_on_error, max_reconnect_attempts=0)
        try:
            return await nc.jetstream().stream_info(stream_name(key))
        except nats.js.errors.NotFoundError:
            return None
        finally:
            await nc.close()

    @classmethod
    async def depth(cls, client: aioredis.Redis, key: str) -> int:
        info = await cls._info(key)
        return int(info.state.messages) if info is not None else 0

    @classmethod
    async def summary(cls, client: aioredis.Redis, key: str) -> dict[str, str]:
        """The stream's message count (entries not acknowledged) and each consumer's pending and redelivered."""
        nc = await nats.connect(_url(), connect_timeout=5, error_cb=_on_error, max_reconnect_attempts=0)
        try:
            js, name = nc.jetstream(), stream_name(key)
            try:
                info = await js.stream_info(name)
            except nats.js.errors.NotFoundError:
                return {}
            parts = [
                f"consumer {c.name} {c.num_ack_pending} pending {c.num_redelivered} redelivered"
                for c in await js.consumers_info(name)
            ]
            return {f"nats:{name}": f"stream of {info.state.messages} ({', '.join(parts) or 'no consumer'})"}
        finally:
            await nc.close()

    @classmethod
    async def held(cls, client: aioredis.Redis, key: str) -> list[Row] | None:
        """Every message of the stream: waiting, or taken and not acknowledged (acknowledged ones are removed)."""
        nc = await nats.connect(_url(), connect_timeout=5, error_cb=_on_error, max_reconnect_attempts=0)
        try:
            js, name = nc.jetstream(), stream_name(key)
            try:
                info = await js.stream_info(name)
            except nats.js.errors.NotFoundError:
                return []
            rows: list[Row] = []
            for seq in range(info.state.first_seq, info.state.last_seq + 1):
                try:
                    msg = await js.get_msg(name, seq)
                except nats.js.errors.NotFoundError:
                    continue
                rows.extend(decode(msg.data or b""))
            return rows
        finally:
            await nc.close()

    @classmethod
    async def drop(cls, client: aioredis.Redis, key: str, url: str | None = None) -> None:
        nc = await nats.connect(url or _url(), connect_timeout=5, error_cb=_on_error, max_reconnect_attempts=0)
        try:
            with contextlib.suppress(nats.js.errors.NotFoundError):
                await nc.jetstream().delete_stream(stream_name(key))  # its consumers go with it
        finally:
            await nc.close()
