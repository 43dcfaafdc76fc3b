"""Ingest stage (the seed's processing node, its stream-reading half): gRPC stream → decoder → queue.

    python -m pipeline.ingest --generator 127.0.0.1:50051 --decoder direct --queue stream --rate 2000 --count 10000

It asks the generator for the run's stream (``--rpc batched``: the parameters travel in the request; ``--rpc seed``:
the seed's parameterless RPC), decodes every message, and puts the rows on the queue — and, in the split topology
with ``--forward-from ingest``, on the forwarder's queue too. It exits 0 when the stream ends, or on SIGTERM.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import AsyncGenerator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import grpc

from pipeline import delay, metrics
from pipeline.config import IngestSettings, StreamMixin
from pipeline.decoders import DECODERS, Decoder
from pipeline.proto import GRPC_OPTIONS, pb2, pb2_grpc
from pipeline.queues.base import Queue
from pipeline.rows import Row
from pipeline.runtime import StageError, stage_main, stop_event
from pipeline.wiring import make_queue, open_redis

log = logging.getLogger("telemetry_bench.ingest")

CONNECT_TIMEOUT_S = 60.0
PROGRESS_SUFFIX = ":progress"
# No BDP probing: HTTP/2 flow control then keeps the default 64 KiB window instead of growing it to megabytes,
# which otherwise lets ~70,000 readings sit in transport buffers, unseen by every queue and counter (measured).
# Throughput is the same either way on loopback; in-flight is bounded by our own buffers, where it is measured.
#
# Reconnect backoff 0.1 s growing to 1 s (gRPC's default: 1 s growing ×1.6 to 120 s). Ingest starts before the
# generator and waits for it in channel_ready(): with the default schedule its tries fall at about 1, 2.6, 5.2 s
# and 9.3 s, so a generator up after 3 s was found after 5 s, seconds of nothing at the start of every run.
CHANNEL_OPTIONS = [
    *GRPC_OPTIONS,
    ("grpc.http2.bdp_probe", 0),
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 1000),
]


RECONNECT_FOR_S = 60.0  # a dropped stream is retried (jittered exponential backoff) for this long
PERMANENT = {grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.UNIMPLEMENTED, grpc.StatusCode.UNAUTHENTICATED,
             grpc.StatusCode.PERMISSION_DENIED}  # fmt: skip


@dataclass
class Resume:
    """Where the stream continues after a drop: the next reading index to queue and the schedule's origin."""

    next_index: int = 0
    t0_ns: int = 0


def stream_request(s: StreamMixin, resume: Resume) -> Any:
    return pb2.StreamRequest(
        rate=s.rate, max_rate=s.max_rate, sensors=s.sensors, count=s.count, duration_s=s.duration, seed=s.seed,
        readings_per_message=s.readings_per_message, start_index=resume.next_index, t0_ns=resume.t0_ns,
    )  # fmt: skip


def backoff(attempt: int) -> float:
    """Jittered exponential backoff: 0.1 s doubling to 5 s, each drawn in [half, full]."""
    full = min(5.0, 0.1 * 2**attempt)
    return random.uniform(full / 2, full)


async def stream_rows(s: StreamMixin, decoder: Decoder, resume: Resume) -> AsyncGenerator[list[Row], None]:
    """Rows of each stream message, decoded. Waits (up to CONNECT_TIMEOUT_S) for the generator to come up; when
    the batched stream drops, reconnects with backoff and resumes at ``resume`` (kept up to date by the caller
    once rows are queued): no gap, no repeat. The seed's RPC has no parameters, so it cannot resume."""
    dict_hist = metrics.data_dictionarize_seconds()
    transport = metrics.ingest_transport_seconds()
    errors = metrics.errors().labels("ingest", "decode")
    drops = metrics.errors().labels("ingest", "stream_dropped")
    problems: list[str] = []
    decode_delay = delay.make(s.delay_ingest_us, s.delay_kind)
    attempt, down_since = 0, None
    while True:
        async with grpc.aio.insecure_channel(s.generator, options=CHANNEL_OPTIONS) as channel:
            wait = (
                CONNECT_TIMEOUT_S if down_since is None else max(1.0, RECONNECT_FOR_S - (time.monotonic() - down_since))
            )
            try:
                await asyncio.wait_for(channel.channel_ready(), wait)
            except TimeoutError:
                raise StageError(f"generator at {s.generator} did not answer within {wait:.0f} s") from None
            stub = pb2_grpc.TelemetryServiceStub(channel)
            call = (
                stub.GetTelemetryStream(pb2.TelemetryRequest())
                if s.rpc == "seed"
                else stub.StreamBatches(stream_request(s, resume))
            )
            try:
                async for message in call:
                    now = time.time_ns()
                    t = time.perf_counter()
                    readings = [message] if s.rpc == "seed" else message.readings
                    rows = decoder.decode_many(readings, now, problems)
                    if decode_delay is not None:
                        await decode_delay(len(readings))
                    dict_hist.observe(time.perf_counter() - t)
                    if readings:
                        transport.observe((now - readings[0].sent_ns) / 1e9)
                        if not resume.t0_ns and not resume.next_index and (s.rate > 0 or s.max_rate):
                            resume.t0_ns = readings[0].intended_ns  # reading 0 is intended at the origin
                    if problems:
                        errors.inc(len(problems))
                        log.warning("skipped %d undecodable readings: %s", len(problems), problems[0])
                        problems.clear()
                    attempt, down_since = 0, None
                    if rows:
                        yield rows
                return
            except grpc.aio.AioRpcError as exc:
                if s.rpc == "seed" or exc.code() in PERMANENT:
                    raise StageError(f"stream from {s.generator} failed: {exc.code().name}: {exc.details()}") from None
                drops.inc()
                down_since = down_since or time.monotonic()
                if time.monotonic() - down_since > RECONNECT_FOR_S:
                    raise StageError(f"stream from {s.generator} lost for {RECONNECT_FOR_S:.0f} s: giving up") from None
                log.warning("stream dropped (%s: %s); resuming at reading %d", exc.code().name, exc.details(),
                            resume.next_index)  # fmt: skip
        await asyncio.sleep(backoff(attempt))
        attempt += 1


async def ingest_loop(
    s: StreamMixin,
    decoder: Decoder,
    put: Callable[[list[Row]], Awaitable[None]],
    stop: asyncio.Event,
    resume: Resume | None = None,
    room: Callable[[], Awaitable[None]] | None = None,
) -> None:
    """Read the stream until it ends or ``stop`` is set, handing each message's rows to ``put``; ``resume``
    advances once ``put`` returned (the rows are queued). ``put`` is never cut off halfway, so what it wrote, the
    saved position and the counters agree; then ``room`` (backpressure: the queue is over its cap) is awaited,
    and that wait ends early when ``stop`` is set."""
    resume = resume or Resume()
    ingested = metrics.readings().labels("ingested")
    rows_iter = stream_rows(s, decoder, resume)
    put_delay = delay.make(s.delay_queue_us, s.delay_kind)
    stopper = asyncio.ensure_future(stop.wait())
    try:
        while True:
            nxt = asyncio.ensure_future(anext(rows_iter))
            done, _ = await asyncio.wait({nxt, stopper}, return_when=asyncio.FIRST_COMPLETED)
            if nxt not in done:  # stop requested: stop taking input
                nxt.cancel()
                with contextlib.suppress(asyncio.CancelledError, StopAsyncIteration):
                    await nxt  # let the generator unwind before it is closed
                break
            try:
                rows = nxt.result()
            except StopAsyncIteration:
                break
            ingested.inc(len(rows))
            if put_delay is not None:
                await put_delay(len(rows))
            await put(rows)
            resume.next_index += len(rows)
            if room is not None:
                waiting = asyncio.ensure_future(room())  # may wait on the queue's cap: stay stoppable
                done, _ = await asyncio.wait({waiting, stopper}, return_when=asyncio.FIRST_COMPLETED)
                if waiting not in done:
                    waiting.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await waiting
                    break
                waiting.result()
    finally:
        stopper.cancel()
        await rows_iter.aclose()


async def run(settings: IngestSettings) -> None:
    stop = stop_event()
    client = await open_redis(settings)
    queue = await make_queue(settings, client)
    fwd_queue = await make_queue(settings, client, forward=True) if settings.forward_from == "ingest" else None
    decoder = DECODERS[settings.decoder]()
    queued = metrics.readings().labels("queued")
    qlen = metrics.redis_queue_len()

    # a restarted ingest resumes where the last one's queued readings end (written atomically with each put)
    progress_key = settings.progress_key or settings.queue_key + PROGRESS_SUFFIX
    saved = await client.hgetall(progress_key)
    resume = Resume(int(saved.get(b"next", 0)), int(saved.get(b"t0", 0)))
    if resume.next_index:
        log.info("ingest: resuming the stream at reading %d", resume.next_index)

    lengths: dict[Queue, int] = {}  # after the last put, for the backpressure wait

    async def put(rows: list[Row]) -> None:
        if fwd_queue is not None:  # first: the writer queue's progress says both are done
            lengths[fwd_queue] = await fwd_queue.put(rows, wait=False)
        progress = (progress_key, {"next": resume.next_index + len(rows), "t0": resume.t0_ns})
        lengths[queue] = await queue.put(rows, progress, wait=False)
        qlen.set(lengths[queue])
        queued.inc(len(rows))

    async def room() -> None:
        for q, length in lengths.items():
            await q.wait_below_cap(length)

    port = metrics.serve(settings.metrics_port, settings.host)
    log.info("ingest: metrics on :%d, stream from %s (%s rpc)", port, settings.generator, settings.rpc)
    try:
        await ingest_loop(settings, decoder, put, stop, resume, room)
    finally:
        await client.aclose()
    log.info("ingest: done")


def main(argv: list[str] | None = None) -> int:
    return stage_main("ingest", IngestSettings, run, argv)


if __name__ == "__main__":
    raise SystemExit(main())
