"""Ingest stage (the seed's processing node, its stream-reading half): gRPC stream → decoder → queue.

    python -m pipeline.ingest --generator 127.0.0.1:50051 --decoder direct --queue stream --rate 2000 --count 10000

It asks the generator for the run's stream (``--rpc batched``: the parameters travel in the request; ``--rpc seed``:
the seed's parameterless RPC), decodes every message, and puts the rows on the queue — and, in the split topology
with ``--forward-from ingest``, on the forwarder's queue too. It exits 0 when the stream ends, or on SIGTERM.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncGenerator, Awaitable, Callable
from typing import Any

import grpc

from pipeline import metrics
from pipeline.config import IngestSettings, StreamMixin
from pipeline.decoders import DECODERS, Decoder
from pipeline.generator import GRPC_OPTIONS
from pipeline.proto import pb2, pb2_grpc
from pipeline.rows import Row
from pipeline.runtime import StageError, stage_main, stop_event
from pipeline.wiring import make_queue, open_redis

log = logging.getLogger("telemetry_bench.ingest")

CONNECT_TIMEOUT_S = 60.0
# No BDP probing: HTTP/2 flow control then keeps the default 64 KiB window instead of growing it to megabytes,
# which otherwise lets ~70,000 readings sit in transport buffers, unseen by every queue and counter (measured).
# Throughput is the same either way on loopback; in-flight is bounded by our own buffers, where it is measured.
CHANNEL_OPTIONS = [*GRPC_OPTIONS, ("grpc.http2.bdp_probe", 0)]


def stream_request(s: StreamMixin) -> Any:
    return pb2.StreamRequest(
        rate=s.rate, max_rate=s.max_rate, sensors=s.sensors, count=s.count, duration_s=s.duration, seed=s.seed,
        readings_per_message=s.readings_per_message,
    )  # fmt: skip


async def stream_rows(s: StreamMixin, decoder: Decoder) -> AsyncGenerator[list[Row], None]:
    """Rows of each stream message, decoded; waits (up to CONNECT_TIMEOUT_S) for the generator to come up."""
    async with grpc.aio.insecure_channel(s.generator, options=CHANNEL_OPTIONS) as channel:
        try:
            await asyncio.wait_for(channel.channel_ready(), CONNECT_TIMEOUT_S)
        except TimeoutError:
            raise StageError(f"generator at {s.generator} did not answer within {CONNECT_TIMEOUT_S:.0f} s") from None
        stub = pb2_grpc.TelemetryServiceStub(channel)
        dict_hist = metrics.data_dictionarize_seconds()
        transport = metrics.ingest_transport_seconds()
        errors = metrics.errors().labels("ingest", "decode")
        problems: list[str] = []
        call = (
            stub.GetTelemetryStream(pb2.TelemetryRequest())
            if s.rpc == "seed"
            else stub.StreamBatches(stream_request(s))
        )
        try:
            async for message in call:
                now = time.time_ns()
                t = time.perf_counter()
                readings = [message] if s.rpc == "seed" else message.readings
                rows = decoder.decode_many(readings, now, problems)
                dict_hist.observe(time.perf_counter() - t)
                if readings:
                    transport.observe((now - readings[0].sent_ns) / 1e9)
                if problems:
                    errors.inc(len(problems))
                    log.warning("skipped %d undecodable readings: %s", len(problems), problems[0])
                    problems.clear()
                if rows:
                    yield rows
        except grpc.aio.AioRpcError as exc:
            raise StageError(f"stream from {s.generator} failed: {exc.code().name}: {exc.details()}") from None


async def ingest_loop(
    s: StreamMixin, decoder: Decoder, put: Callable[[list[Row]], Awaitable[None]], stop: asyncio.Event
) -> None:
    """Read the stream until it ends or ``stop`` is set, handing each message's rows to ``put``."""
    ingested = metrics.readings().labels("ingested")
    rows_iter = stream_rows(s, decoder)
    stopper = asyncio.ensure_future(stop.wait())
    try:
        while True:
            nxt = asyncio.ensure_future(anext(rows_iter))
            done, _ = await asyncio.wait({nxt, stopper}, return_when=asyncio.FIRST_COMPLETED)
            if nxt not in done:  # stop requested: stop taking input
                nxt.cancel()
                break
            try:
                rows = nxt.result()
            except StopAsyncIteration:
                break
            ingested.inc(len(rows))
            await put(rows)
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

    async def put(rows: list[Row]) -> None:
        qlen.set(await queue.put(rows))
        queued.inc(len(rows))
        if fwd_queue is not None:
            await fwd_queue.put(rows)

    port = metrics.serve(settings.metrics_port, settings.host)
    log.info("ingest: metrics on :%d, stream from %s (%s rpc)", port, settings.generator, settings.rpc)
    try:
        await ingest_loop(settings, decoder, put, stop)
    finally:
        await client.aclose()
    log.info("ingest: done")


def main(argv: list[str] | None = None) -> int:
    return stage_main("ingest", IngestSettings, run, argv)


if __name__ == "__main__":
    raise SystemExit(main())
