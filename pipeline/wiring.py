"""Builds a stage's parts from its settings: connections (with one-line errors) and variants by name.

PostgreSQL (psycopg, the sinks) and the forwarders (httpx, requests) are imported by the function that needs them:
every stage imports this module, and ingest, say, needs neither — a stage's start-up (imports are most of it) stays
as short as its own work allows.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import redis.asyncio as aioredis
import redis.exceptions
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialWithJitterBackoff

from pipeline import delay
from pipeline.config import ForwarderMixin, QueueMixin, ServicesMixin, WriterMixin
from pipeline.endpoints import LOCAL_PG_DSN, LOCAL_REDIS_URL, redact_dsn
from pipeline.queues import QUEUES, Queue
from pipeline.runtime import StageError

if TYPE_CHECKING:
    import psycopg

    from pipeline.forwarders import Forwarder
    from pipeline.sinks import Sink

STAGE = "telemetry_stage"  # the writer's per-session staging table when writes are idempotent (dedupe)

FORWARD_SUFFIX = ":forward"


async def open_pg(settings: ServicesMixin) -> psycopg.AsyncConnection[Any]:
    import psycopg

    from pipeline import db

    dsn = settings.pg_dsn or LOCAL_PG_DSN
    try:
        return await db.connect(dsn, settings.db_schema)
    except psycopg.Error as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise StageError(f"PostgreSQL unreachable at {redact_dsn(dsn)}: {reason}") from None


async def open_redis(settings: ServicesMixin) -> aioredis.Redis:
    url = settings.redis_url or LOCAL_REDIS_URL
    # every command retries through a dropped connection or a Redis restart (jittered backoff, about a minute);
    # a retried transaction may apply twice: the stream and list entries it adds are then redelivered rows, which
    # idempotent writes (dedupe) make harmless. A Redis at its maxmemory refuses writes (OOM) until memory is freed
    # (the writers drain the queue) or the limit raised: retried the same way, not fatal
    retry = Retry(ExponentialWithJitterBackoff(base=0.05, cap=2.0), retries=40)
    retry_on = [redis.exceptions.ConnectionError, TimeoutError, redis.exceptions.OutOfMemoryError]
    client = aioredis.Redis.from_url(url, socket_connect_timeout=5, retry=retry, retry_on_error=retry_on)
    try:
        await client.ping()
    except (redis.exceptions.RedisError, OSError) as exc:
        await client.aclose()
        raise StageError(f"Redis unreachable at {redact_dsn(url)}: {exc}") from None
    return client


async def make_queue(
    settings: QueueMixin, client: aioredis.Redis, *, forward: bool = False, consumer: str = "writer-1"
) -> Queue:
    """The writer queue, or (``forward``) the forwarder's queue beside it, of the configured variant."""
    key = settings.queue_key + (FORWARD_SUFFIX if forward else "")
    queue = QUEUES[settings.queue](
        client,
        key,
        entry=settings.queue_entry,
        cap=settings.queue_cap,
        group="forwarders" if forward else "writers",
        consumer=consumer,
        settings=settings,
    )
    await queue.setup()
    return queue


def make_sink(settings: WriterMixin) -> Sink:
    """The configured sink, writing into telemetry_data, or into the staging table when ``dedupe`` is on."""
    from pipeline.sinks import SINKS
    from pipeline.sinks.base import TABLE_NAME

    return SINKS[settings.sink](STAGE if settings.dedupe else TABLE_NAME)


async def make_forwarder(settings: ForwarderMixin, redis_url: str | None = None) -> Forwarder:
    from pipeline.forwarders import FORWARDERS

    fwd = FORWARDERS[settings.forwarder](
        settings.backend_url, batch=settings.forward_batch, concurrency=settings.concurrency, token=settings.api_token,
        redis_url=redis_url, channel=settings.pubsub_channel,
    )  # fmt: skip
    fwd.delay = delay.make(settings.delay_forwarder_us, settings.delay_kind)
    await fwd.start()
    return fwd
