"""Generator stage: a gRPC server (grpc.aio) streaming simulated sensor readings.

Each subscriber gets its own stream (``pipeline.stream``): a producer task fills a bounded per-subscriber buffer on
an open-loop schedule and the RPC handler sends from it, stamping each message's ``sent_ns`` as it hands it to
gRPC. When the subscriber is slow the buffer fills, the producer waits, and readings leave late: their
``intended_ns`` stays on the schedule, so that lateness is measured (publish delay = sent − intended), never hidden
(no coordinated omission). Time spent in the buffer is measured too.

    python -m pipeline.generator --port 50051 --metrics-port 8004
"""

from __future__ import annotations

import asyncio
import logging
import signal
import time
from collections.abc import AsyncIterator
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from pipeline import delay, metrics
from pipeline.config import GeneratorSettings
from pipeline.proto import GRPC_OPTIONS, pb2, pb2_grpc
from pipeline.runtime import StageError, stage_main, stop_event
from pipeline.stream import StreamParams, fast_path_fits, produce, produce_encoded

log = logging.getLogger("telemetry_bench.generator")


def _unsent(
    producer: asyncio.Task[None], buf: asyncio.Queue[tuple[Any, int] | None], item: tuple[Any, int] | None
) -> bool:
    """A stopped stream ends at once, however far its subscriber lags (a slow subscriber would otherwise outlast
    the server's grace and see its stream cancelled): ``item`` and what is still buffered were never handed to gRPC,
    so never generated; they count as unsent, like readings a slow subscriber kept the schedule from sending."""
    producer.cancel()
    n = 0
    while item is not None:
        batch = item[0]
        n += len(batch.readings) if isinstance(batch, pb2.TelemetryBatch) else batch.count
        try:
            item = buf.get_nowait()
        except asyncio.QueueEmpty:
            break
    if n:
        metrics.readings().labels("unsent").inc(n)
        log.info("stopped: %d buffered readings never sent (unsent)", n)
    return True


class TelemetryService(pb2_grpc.TelemetryServiceServicer):  # type: ignore[name-defined]
    def __init__(self, settings: GeneratorSettings) -> None:
        self.settings = settings
        self.stopping = asyncio.Event()  # set on SIGTERM: every stream ends cleanly
        self.drop_epoch = 0  # bumped on SIGUSR1: every open stream is aborted (UNAVAILABLE), as a dropped link would
        self.next_index = 0  # highest reading index sent + 1 over all streams: distinct readings generated
        self.send_delay = delay.make(settings.delay_generator_us, settings.delay_kind)  # per message, before the send

    def drop_streams(self) -> None:
        log.warning("dropping every open stream (SIGUSR1)")
        self.drop_epoch += 1

    async def _stream(
        self, params: StreamParams, context: grpc.aio.ServicerContext, builder: str = "protobuf"
    ) -> AsyncIterator[Any]:
        """The stream's messages, each stamped with its send time as it is handed to gRPC: TelemetryBatch messages
        (the reference path) or, with ``builder`` "numpy" where the fast path fits, their wire bytes."""
        maxsize = max(1, self.settings.buffer_readings // params.readings_per_message)
        buf: asyncio.Queue[tuple[Any, int] | None] = asyncio.Queue(maxsize=maxsize)
        fast = builder == "numpy" and fast_path_fits(params)
        # a resumed stream (its subscriber died, a new one asks from its saved position): what was sent before is
        # sent again whatever the time — those readings exist; only readings never generated may go unsent
        sent_before = self.next_index if params.start_index else 0
        producer = asyncio.create_task(
            (produce_encoded if fast else produce)(params, buf, self.stopping, sent_before=sent_before)
        )
        wait_hist = metrics.generator_buffer_wait_seconds()
        delay_hist = metrics.generator_publish_delay_seconds()
        generated = metrics.readings().labels("generated")
        distinct = metrics.generator_distinct()
        metrics.generator_streams().labels("started").inc()
        epoch = self.drop_epoch
        index = params.start_index
        stopped = False
        try:
            while True:
                item = await buf.get()
                if item is None:
                    break
                if self.stopping.is_set():  # stopped (SIGTERM): the stream ends now, what it buffered is never sent
                    stopped = _unsent(producer, buf, item)
                    break
                batch, enqueued = item
                now = time.time_ns()
                wait_hist.observe((now - enqueued) / 1e9)
                if isinstance(batch, pb2.TelemetryBatch):
                    readings = batch.readings
                    for r in readings:
                        r.sent_ns = now
                    count, last_intended, payload = len(readings), readings[-1].intended_ns, batch
                else:  # the fast path's encoder.Pending
                    count, last_intended = batch.count, batch.last_intended_ns
                    payload = batch.stamp_sent(now)
                # the message's last reading completed it: its wait is the lag behind the schedule, without the
                # time spent filling the message (that is batching, and shows in the per-reading latencies)
                delay_hist.observe((now - last_intended) / 1e9)
                if self.drop_epoch != epoch:
                    metrics.generator_streams().labels("dropped").inc()
                    await context.abort(grpc.StatusCode.UNAVAILABLE, "stream dropped (fault injection)")
                if self.send_delay is not None:
                    await self.send_delay(count)
                yield payload
                generated.inc(count)
                index += count
                if index > self.next_index:
                    self.next_index = index
                    distinct.set(index)
            if not stopped:
                await producer
            metrics.generator_streams().labels("completed").inc()
        finally:
            producer.cancel()

    async def StreamBatches(self, request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
        params = StreamParams.from_request(request, self.settings)
        try:
            params.validate()
        except ValueError as exc:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"invalid StreamRequest: {exc}")
        log.info("subscriber %s: %s", context.peer(), params)
        async for batch in self._stream(params, context, self.settings.builder):
            yield batch

    async def GetTelemetryStream(self, request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
        s = self.settings
        params = StreamParams(rate=s.rate, sensors=s.sensors, count=s.count, duration_s=s.duration, seed=s.seed,
                              sensor_offset=s.sensor_offset)  # fmt: skip
        log.info("seed subscriber %s: %s", context.peer(), params)
        async for batch in self._stream(params, context):
            for reading in batch.readings:
                yield reading


def _batch_bytes(batch: Any) -> bytes:
    """StreamBatches' serializer: the fast path's messages are already wire bytes."""
    return batch if isinstance(batch, bytes) else batch.SerializeToString()


def add_service(service: TelemetryService, server: grpc.aio.Server) -> None:
    """``pb2_grpc.add_TelemetryServiceServicer_to_server``, with StreamBatches' messages passed as bytes when the
    fast path built them (the same method names, request and response types: the wire contract is unchanged)."""
    handlers = {
        "GetTelemetryStream": grpc.unary_stream_rpc_method_handler(
            service.GetTelemetryStream,
            request_deserializer=pb2.TelemetryRequest.FromString,
            response_serializer=pb2.TelemetryResponse.SerializeToString,
        ),
        "StreamBatches": grpc.unary_stream_rpc_method_handler(
            service.StreamBatches,
            request_deserializer=pb2.StreamRequest.FromString,
            response_serializer=_batch_bytes,
        ),
    }
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("telemetry.TelemetryService", handlers),))
    server.add_registered_method_handlers("telemetry.TelemetryService", handlers)


async def serve(settings: GeneratorSettings) -> None:
    server = grpc.aio.server(options=GRPC_OPTIONS)
    service = TelemetryService(settings)
    add_service(service, server)
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    try:
        port = server.add_insecure_port(f"{settings.host}:{settings.port}")
    except RuntimeError:
        raise StageError(f"cannot listen on {settings.host}:{settings.port} (in use?); choose another --port") from None
    await server.start()
    metrics_port = metrics.serve(settings.metrics_port, settings.host)
    await health_servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    await health_servicer.set("telemetry.TelemetryService", health_pb2.HealthCheckResponse.SERVING)
    log.info("generator listening on %s:%d, metrics on :%d", settings.host, port, metrics_port)
    stop = stop_event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGUSR1, service.drop_streams)
    await stop.wait()
    service.stopping.set()  # streams send what they hold and end normally
    await health_servicer.enter_graceful_shutdown()
    await server.stop(grace=5.0)


def main(argv: list[str] | None = None) -> int:
    return stage_main("generator", GeneratorSettings, serve, argv)


if __name__ == "__main__":
    raise SystemExit(main())
