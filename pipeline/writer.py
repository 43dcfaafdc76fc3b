"""Writer stage: queue → batches → sink → PostgreSQL, one transaction per batch.

    python -m pipeline.writer --queue stream --sink copy_binary --batch-size 10000 --flush-interval 0.5

A batch is written when it reaches ``--batch-size`` rows or its first row has waited ``--flush-interval`` seconds,
whichever comes first; every transaction holds exactly ``--batch-size`` rows (the last of a flush fewer), even
when queue entries carry more. Queue entries are acknowledged only after all their rows are committed. On SIGTERM
the writer stops reading, writes and commits what it holds, acknowledges it, and exits 0. Run several with distinct
``--consumer`` names for N workers.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from operator import itemgetter
from typing import Any

import psycopg
from psycopg import sql
from tenacity import AsyncRetrying, retry_if_exception_type, stop_after_delay, wait_random_exponential

from pipeline import delay, metrics
from pipeline.config import WriterSettings
from pipeline.delay import Delay
from pipeline.queues import Ack, Queue
from pipeline.rows import COLUMNS, INTENDED, Row
from pipeline.runtime import StageError, stage_main, stop_event
from pipeline.sinks import Sink
from pipeline.wiring import STAGE, make_queue, make_sink, open_pg, open_redis

log = logging.getLogger("telemetry_bench.writer")

RowsHook = Callable[[list[Row]], Awaitable[None]]
_COLS = sql.SQL(", ").join(sql.Identifier(c) for c in COLUMNS)
CREATE_STAGE = sql.SQL(
    "CREATE TEMP TABLE IF NOT EXISTS {} ON COMMIT DELETE ROWS AS SELECT {} FROM telemetry_data WITH NO DATA"
).format(sql.Identifier(STAGE), _COLS)
MOVE_STAGED = sql.SQL(
    "INSERT INTO telemetry_data ({cols}) SELECT {cols} FROM {stage} ON CONFLICT (sensor_id, sequence_number) DO NOTHING"
).format(cols=_COLS, stage=sql.Identifier(STAGE))
STOP_CHECK_S = 0.2  # longest a blocking queue read may hold off a stop request
DB_RETRY_S = 120.0  # how long a batch is retried while PostgreSQL is unreachable


class Writer:
    def __init__(
        self,
        queue: Queue,
        sink: Sink,
        connect: Callable[[], Awaitable[psycopg.AsyncConnection[Any]]],
        *,
        batch_size: int,
        flush_interval: float,
        on_dequeued: RowsHook | None = None,
        on_committed: RowsHook | None = None,
        dedupe: bool = False,
        delay: Delay | None = None,
    ) -> None:
        self.queue, self.sink, self.connect = queue, sink, connect
        # dedupe: the sink writes into a per-session staging table (make_sink), the rows then move over in the same
        # transaction with duplicates skipped
        self.dedupe = dedupe
        self.delay = delay  # delay_writer_us: inside each transaction, before the sink writes (None: off)
        self._staged: object = None  # the connection the staging table was created on
        self.batch_size, self.flush_interval = batch_size, flush_interval
        self.on_dequeued, self.on_committed = on_dequeued, on_committed
        self.conn: psycopg.AsyncConnection[Any] | None = None
        self.buf: list[Row] = []
        self.tokens: list[Ack] = []
        self.first_at = 0.0
        self.dequeued = metrics.readings().labels("dequeued")
        self.committed = metrics.readings().labels("committed")

    async def run(self, stop: asyncio.Event) -> None:
        self.conn = await self.connect()
        try:
            while not stop.is_set():
                wait = self.flush_interval
                if self.buf:
                    wait = max(0.0, self.first_at + self.flush_interval - time.monotonic())
                rows, token = await self.queue.get(self.batch_size - len(self.buf), min(wait, STOP_CHECK_S))
                if rows:
                    self.dequeued.inc(len(rows))
                    if not self.buf:
                        self.first_at = time.monotonic()
                    self.buf.extend(rows)
                    self.tokens.append(token)
                    if self.on_dequeued is not None:
                        await self.on_dequeued(rows)
                if self.buf and (
                    len(self.buf) >= self.batch_size or time.monotonic() - self.first_at >= self.flush_interval
                ):
                    await self.flush()
            await self.flush()
        finally:
            if self.conn is not None:
                await self.conn.close()

    async def flush(self) -> None:
        if not self.buf:
            return
        rows, tokens = self.buf, self.tokens
        self.buf, self.tokens = [], []
        now = time.time_ns()
        # the seed's meaning: reading timestamp → just before the write, per reading
        metrics.observe_ages(metrics.latency_to_db_insert(), now, map(itemgetter(INTENDED), rows))
        # exactly batch_size rows per transaction, even when queue entries carry more
        for start in range(0, len(rows), self.batch_size):
            chunk = rows[start : start + self.batch_size]
            await self._commit(chunk)
            self.committed.inc(len(chunk))
            metrics.writer_batch_rows().observe(len(chunk))
            if self.on_committed is not None:
                await self.on_committed(chunk)
        for token in tokens:  # acknowledged only once every row of their entries is committed
            await self.queue.ack(token)

    async def _commit(self, rows: list[Row]) -> None:
        async for attempt in AsyncRetrying(
            retry=retry_if_exception_type((psycopg.OperationalError, StageError)),  # StageError: reconnect failed
            wait=wait_random_exponential(multiplier=0.1, max=5.0),
            stop=stop_after_delay(DB_RETRY_S),
            reraise=True,
        ):
            with attempt:
                if self.conn is None or self.conn.closed or self.conn.broken:
                    log.warning("reconnecting to PostgreSQL")
                    self.conn = await self.connect()
                if self.dedupe and self._staged is not self.conn:
                    await self.conn.execute(CREATE_STAGE)
                    self._staged = self.conn
                t = time.perf_counter()
                async with self.conn.transaction():
                    if self.delay is not None:
                        await self.delay(len(rows))
                    await self.sink.write(self.conn, rows)
                    if self.dedupe:
                        cur = await self.conn.execute(MOVE_STAGED)
                        skipped = len(rows) - cur.rowcount
                        if skipped:
                            metrics.errors().labels("writer", "duplicate_skipped").inc(skipped)
                metrics.db_insertion_seconds().observe(time.perf_counter() - t)


async def run(settings: WriterSettings) -> None:
    stop = stop_event()
    client = await open_redis(settings)
    queue = await make_queue(settings, client, consumer=settings.consumer)
    on_committed: RowsHook | None = None
    if settings.forward_from == "writer":
        fwd_queue = await make_queue(settings, client, forward=True)

        async def push(rows: list[Row]) -> None:
            await fwd_queue.put(rows)

        on_committed = push
    await open_pg(settings)  # fail fast, with one line, if PostgreSQL is unreachable
    writer = Writer(
        queue, make_sink(settings), lambda: open_pg(settings),
        batch_size=settings.batch_size, flush_interval=settings.flush_interval, on_committed=on_committed,
        dedupe=settings.dedupe, delay=delay.make(settings.delay_writer_us, settings.delay_kind),
    )  # fmt: skip
    port = metrics.serve(settings.metrics_port, settings.host)
    log.info("writer %s: metrics on :%d, %s → %s", settings.consumer, port, settings.queue, settings.sink)
    try:
        await writer.run(stop)
    finally:
        await client.aclose()


def main(argv: list[str] | None = None) -> int:
    return stage_main("writer", WriterSettings, run, argv)


if __name__ == "__main__":
    raise SystemExit(main())
