from __future__ import annotations

import asyncio
import logging
import time
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable
from typing import Any, Literal, TypeVar

import orjson
import redis.asyncio as aioredis

from pipeline.rows import Row, dict_to_row, row_to_dict

T = TypeVar("T")
BROKER_RETRY_S = 60.0  # how long a broker request retries through a dropped connection or a broker restart


async def retrying(request: Callable[[], Awaitable[T]], gone: tuple[type[Exception], ...], broker: str) -> T:
    """``request()``, again with backoff (50 ms doubling to 1 s) while the broker is gone (``gone``), for up to
    ``BROKER_RETRY_S`` (the broker variants' publishes, declares and stream requests). A publish repeated after a lost
    acknowledgement stores the entry twice: redelivered rows, which ``dedupe`` makes harmless."""
    deadline, delay = time.monotonic() + BROKER_RETRY_S, 0.05
    while True:
        try:
            return await request()
        except gone as exc:
            if time.monotonic() > deadline:
                raise
            logging.getLogger("telemetry_bench.queue").warning(
                "%s request failed (%s): retrying", broker, type(exc).__name__
            )
            await asyncio.sleep(delay)
            delay = min(delay * 2, 1.0)


Ack = Any  # a variant's acknowledgement token, opaque to callers
Progress = tuple[str, dict[str, int]]  # (hash key, fields) written atomically with a put
Entry = Literal["reading", "batch"]

# broker → the URL this process's observers use (the harness sets it when it finds the broker; stages are given
# theirs as a knob): what the classmethods (depth, summary, held, drop) of a broker variant connect to
BROKER_URLS: dict[str, str] = {}


def encode(rows: list[Row], entry: Entry) -> list[bytes]:
    """JSON payloads: per reading, the seed's flat object (plus timing keys); per batch, an array of arrays."""
    if entry == "reading":
        return [orjson.dumps(row_to_dict(row)) for row in rows]
    return [orjson.dumps(rows)]


def decode(payload: bytes | str) -> list[Row]:
    obj = orjson.loads(payload)
    if isinstance(obj, dict):
        return [dict_to_row(obj)]
    return [tuple(r) for r in obj]


class Queue(ABC):
    """A Redis-backed queue of rows. ``cap`` bounds the readings it holds: ``put`` waits while it is full."""

    name: str
    broker: str | None = None  # a broker besides Redis the variant needs ("nats", "rabbitmq"): harness.services

    def knob(self, name: str) -> Any:
        """Knob ``name`` from the stage's settings, else its catalogue default (a queue built outside a stage)."""
        from pipeline.knobs import KNOBS

        value = getattr(self.settings, name, None)
        return KNOBS[name].default if value is None else value

    def __init__(
        self,
        client: aioredis.Redis,
        key: str,
        *,
        entry: Entry = "reading",
        cap: int = 1_000_000,
        group: str = "writers",
        consumer: str = "writer-1",
        settings: Any = None,
    ) -> None:
        self.r, self.key, self.entry, self.cap = client, key, entry, cap
        self.group, self.consumer = group, consumer
        self.settings = settings  # the stage's settings: a broker variant's URL and knobs (None: their defaults)
        self._rows_per_entry = 1.0  # running estimate, for cap and read counts with batch entries

    async def setup(self) -> None:
        """Create what the variant needs (consumer group, ...). Idempotent."""

    @abstractmethod
    async def put(self, rows: list[Row], progress: Progress | None = None, *, wait: bool = True) -> int:
        """Append rows; returns the queue's length in entries (the seed's redis_queue_len). ``progress``
        (key, fields) is written in the same transaction: what a restarted producer resumes from. Then, with
        ``wait``, waits while the queue is over its cap (``wait_below_cap``: backpressure)."""

    @abstractmethod
    async def get(self, max_rows: int, timeout: float) -> tuple[list[Row], Ack]:
        """Up to about ``max_rows`` rows (whole entries), waiting up to ``timeout`` s; ([], None) if none came."""

    async def ack(self, token: Ack) -> None:
        """The rows of ``token`` are committed: the queue may forget them."""

    async def close(self) -> None:
        """Close what the variant opened besides the Redis client (a broker connection)."""

    @classmethod
    async def drop(cls, client: aioredis.Redis, key: str, url: str | None = None) -> None:
        """Delete what the variant keeps for the queue at ``key`` outside Redis (a broker's stream or queue, on the
        broker at ``url``, default: this process's); the harness deletes the Redis keys under the run's prefix."""

    @abstractmethod
    async def length(self) -> int:
        """Entries not yet acknowledged (list: not yet popped)."""

    # what an observer (the harness) reads, with no consumer of its own: by key, on any client
    @classmethod
    @abstractmethod
    async def depth(cls, client: aioredis.Redis, key: str) -> int:
        """Entries waiting in the queue at ``key`` (sampled over a run: its growth says a consumer falls behind)."""

    @classmethod
    @abstractmethod
    async def summary(cls, client: aioredis.Redis, key: str) -> dict[str, str]:
        """Every Redis key this variant keeps for the queue at ``key`` → its contents in one line (length, pending
        entries); keys that don't exist are left out. What a Redis restart must bring back unchanged."""

    @classmethod
    async def held(cls, client: aioredis.Redis, key: str) -> list[Row] | None:
        """Every reading the queue at ``key`` still holds — waiting, or taken by a writer and not acknowledged:
        what writers started on it would commit (``live`` says so when a run stops). None: the variant can't say."""
        return None

    def _note_entry_size(self, n_rows: int, n_entries: int) -> None:
        if n_entries:
            self._rows_per_entry = 0.9 * self._rows_per_entry + 0.1 * (n_rows / n_entries)

    def cap_entries(self) -> int:
        return max(1, int(self.cap / max(1.0, self._rows_per_entry)))

    async def wait_below_cap(self, length: int) -> None:
        """Backpressure: while the queue holds more than ``cap`` readings, the producer waits."""
        limit = self.cap_entries()
        delay = 0.001
        while length > limit:
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.05)
            length = await self.length()
