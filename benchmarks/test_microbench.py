"""Micro-benchmarks (pytest-benchmark): the per-reading costs behind the matrix's comparisons, in one process.

    nox -s microbench        # saves to .benchmarks/ and compares with the previous save

Not part of the test suite (pytest's testpaths is tests/). Each benchmark sets ``extra_info["items"]`` so the
report can show the cost per reading. Groups: decode, protobuf, generator, queue payload, sink (10,000-row batch,
PostgreSQL).
"""

from __future__ import annotations

import asyncio
import pickle
import time
from collections.abc import Iterator
from typing import Any

import pytest

from harness.services import Services
from pipeline import db
from pipeline.decoders import DECODERS
from pipeline.encoder import Pending
from pipeline.proto import pb2
from pipeline.queues.base import decode as queue_decode
from pipeline.queues.base import encode as queue_encode
from pipeline.sinks import SINKS
from pipeline.stream import StreamParams, produce, produce_encoded


# ----------------------------------------------------------------------------------------------------- decode
@pytest.mark.benchmark(group="decode: 1,000 readings → rows")
@pytest.mark.parametrize("decoder", ["dict", "direct"])
def test_decode(benchmark: Any, decoder: str, messages: list[Any]) -> None:
    d = DECODERS[decoder]()
    benchmark.extra_info["items"] = len(messages)
    rows = benchmark(d.decode_many, messages, 1)
    assert len(rows) == len(messages)


# --------------------------------------------------------------------------------------------------- protobuf
@pytest.mark.benchmark(group="protobuf: TelemetryBatch of 100 readings")
def test_protobuf_encode(benchmark: Any, batches: list[Any]) -> None:
    batch = batches[0]
    benchmark.extra_info["items"] = len(batch.readings)
    data = benchmark(batch.SerializeToString)
    assert len(data) > 1000


@pytest.mark.benchmark(group="protobuf: TelemetryBatch of 100 readings")
def test_protobuf_decode(benchmark: Any, batches: list[Any]) -> None:
    data = batches[0].SerializeToString()
    benchmark.extra_info["items"] = len(batches[0].readings)

    def parse() -> Any:
        msg = pb2.TelemetryBatch()
        msg.ParseFromString(data)
        return msg

    assert len(benchmark(parse).readings) == 100


@pytest.mark.benchmark(group="protobuf: TelemetryBatch of 100 readings")
def test_protobuf_build(benchmark: Any, batches: list[Any]) -> None:
    """What the generator pays per message: copy 100 readings into a new batch and serialize it."""
    readings = list(batches[0].readings)
    benchmark.extra_info["items"] = len(readings)

    def build() -> bytes:
        msg = pb2.TelemetryBatch()
        msg.readings.extend(readings)
        return msg.SerializeToString()

    assert benchmark(build)


# -------------------------------------------------------------------------------------------------- generator
@pytest.mark.benchmark(group="generator: 20,000 readings, 50 sensors, 1,000 per message, built and stamped")
@pytest.mark.parametrize("builder", ["protobuf", "numpy"])
def test_generator_build(benchmark: Any, builder: str) -> None:
    """What the generator pays per reading at max rate, without gRPC: build every message and stamp its send time
    (the reference path: a protobuf message per reading, serialised; the fast path: numpy, encoded once)."""
    count = 20_000
    params = StreamParams(max_rate=True, count=count, sensors=50, readings_per_message=1000)
    producer = produce if builder == "protobuf" else produce_encoded
    benchmark.extra_info["items"] = count

    def run() -> int:
        async def go() -> int:
            buf: asyncio.Queue[Any] = asyncio.Queue()
            await producer(params, buf)
            size = 0
            while (item := buf.get_nowait()) is not None:
                msg = item[0]
                if isinstance(msg, Pending):
                    size += len(msg.stamp_sent(time.time_ns()))
                else:
                    for r in msg.readings:
                        r.sent_ns = time.time_ns()
                    size += len(msg.SerializeToString())
            return size

        return asyncio.run(go())

    assert benchmark(run) > count * 80


# ---------------------------------------------------------------------------------------------- queue payload
def _pb_encode(batch: Any) -> list[bytes]:
    return [batch.SerializeToString()]


def _pb_decode(payloads: list[bytes]) -> list[Any]:
    out = []
    for p in payloads:
        msg = pb2.TelemetryBatch()
        msg.ParseFromString(p)
        out.extend(msg.readings)
    return out


@pytest.mark.benchmark(group="queue payload: 1,000 rows encoded + decoded")
@pytest.mark.parametrize("payload", ["json-reading", "json-batch", "pickle-batch", "protobuf-batch"])
def test_queue_payload(benchmark: Any, payload: str, rows: list[tuple[Any, ...]], batches: list[Any]) -> None:
    """JSON per reading (the seed's), a JSON array per batch (ours), and two binary forms for comparison."""
    sample = rows[:1000]
    benchmark.extra_info["items"] = len(sample)
    if payload == "json-reading":
        fn: Any = lambda: [r for p in queue_encode(sample, "reading") for r in queue_decode(p)]  # noqa: E731
    elif payload == "json-batch":
        fn = lambda: [r for p in queue_encode(sample, "batch") for r in queue_decode(p)]  # noqa: E731
    elif payload == "pickle-batch":
        fn = lambda: pickle.loads(pickle.dumps(sample, protocol=pickle.HIGHEST_PROTOCOL))  # noqa: E731
    else:
        pb = batches[:10]  # the same 1,000 readings as protobuf (as they came off the wire)
        fn = lambda: _pb_decode([p for b in pb for p in _pb_encode(b)])  # noqa: E731
    sizes = {
        "json-reading": sum(len(p) for p in queue_encode(sample, "reading")),
        "json-batch": sum(len(p) for p in queue_encode(sample, "batch")),
        "pickle-batch": len(pickle.dumps(sample, protocol=pickle.HIGHEST_PROTOCOL)),
        "protobuf-batch": sum(len(b.SerializeToString()) for b in batches[:10]),
    }
    benchmark.extra_info["bytes"] = sizes[payload]
    assert len(benchmark(fn)) == len(sample)


# ------------------------------------------------------------------------------------------------------ sinks
@pytest.fixture
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    lp = asyncio.new_event_loop()
    yield lp
    lp.close()


@pytest.mark.benchmark(group="sink: one 10,000-row batch, one transaction")
@pytest.mark.parametrize("sink", list(SINKS))
def test_sink_batch(
    benchmark: Any,
    sink: str,
    rows: list[tuple[Any, ...]],
    services: Services,
    pg_schema: str,
    loop: asyncio.AbstractEventLoop,
) -> None:
    """Write and commit 10,000 rows with each sink into a fresh table (emptied before every round, untimed)."""
    conn = loop.run_until_complete(db.connect(services.pg_dsn, pg_schema))
    writer = SINKS[sink]()
    benchmark.extra_info["items"] = len(rows)

    async def write() -> None:
        async with conn.transaction():
            await writer.write(conn, rows)

    async def empty() -> None:
        await conn.execute("TRUNCATE telemetry_data")

    try:
        benchmark.pedantic(
            lambda: loop.run_until_complete(write()),
            setup=lambda: loop.run_until_complete(empty()),
            rounds=3 if sink == "insert" else 5,
            warmup_rounds=1,
        )
    finally:
        loop.run_until_complete(conn.close())
    assert db.table_counts(services.pg_dsn, pg_schema).rows == len(rows)


@pytest.mark.parametrize("path", ["send", "deliver-delay-off"])
def test_delay_knob_off_costs_nothing(benchmark: Any, path: str) -> None:
    """The forwarder stage's hot path with its delay knob off (``Forwarder.deliver``: one ``is None`` test, then
    ``send``) beside ``send`` itself: what the knob costs when off is their difference, one coroutine call per
    batch (measured ≈ 0.1 µs per 100-reading batch here: 10⁻³ µs per reading; pipeline/delay.py)."""
    from pipeline.forwarders import FORWARDERS

    fwd = FORWARDERS["none"]("http://127.0.0.1:9")
    call = fwd.send if path == "send" else fwd.deliver
    batch: Any = [tuple(range(5))] * 100

    async def many() -> None:
        for _ in range(1000):
            await call(batch)

    benchmark(lambda: asyncio.run(many()))
