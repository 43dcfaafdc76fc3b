"""The generator's fast path (numpy, encoded once, stamped per message) against the reference path (a protobuf
message per reading): the same readings, sequence numbers, intended times, messages, resume and unsent count."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import numpy as np
import pytest

from pipeline import metrics
from pipeline.encoder import BatchEncoder, iso_bytes, varint9, walk
from pipeline.proto import pb2
from pipeline.sensors import make_sensors
from pipeline.stream import StreamParams, _IsoClock, fast_path_fits, produce, produce_encoded

T0 = 1_700_000_000_123_456_789  # a fixed schedule origin in the past (all due at once): intended times compare exactly
SENT = 1_800_000_005_000_000_001


async def _messages(producer: Any, params: StreamParams) -> list[pb2.TelemetryBatch]:
    """Every message the producer makes, stamped with sent_ns = SENT, as the subscriber parses it."""
    buf: asyncio.Queue[Any] = asyncio.Queue()
    await producer(params, buf)
    out = []
    while (item := buf.get_nowait()) is not None:
        msg = item[0]
        batch = pb2.TelemetryBatch()
        if isinstance(msg, pb2.TelemetryBatch):
            for r in msg.readings:
                r.sent_ns = SENT
            batch.ParseFromString(msg.SerializeToString())
        else:
            batch.ParseFromString(msg.stamp_sent(SENT))
            assert msg.count == len(batch.readings)
            assert msg.last_intended_ns == batch.readings[-1].intended_ns
        out.append(batch)
    return out


def _both(params: StreamParams) -> tuple[list[pb2.TelemetryBatch], list[pb2.TelemetryBatch]]:
    assert fast_path_fits(params)
    return asyncio.run(_messages(produce, params)), asyncio.run(_messages(produce_encoded, params))


def _without_times(batches: list[pb2.TelemetryBatch]) -> list[list[bytes]]:
    out = []
    for b in batches:
        readings = []
        for reading in b.readings:
            r = pb2.TelemetryResponse()
            r.CopyFrom(reading)
            r.ClearField("timestamp")
            r.ClearField("intended_ns")
            readings.append(r.SerializeToString())
        out.append(readings)
    return out


def test_walk_equals_fill_bit_for_bit() -> None:
    """``walk`` draws the same random numbers and sums them in the same order as ``fill``: values, statuses (every
    band reached over 400 steps), sequence numbers and the state left behind are identical."""
    ref, fast = make_sensors(10, 7), make_sensors(10, 7)
    statuses = set()
    for kind in ("TEMPERATURE", "PRESSURE", "VELOCITY"):
        group = [s for s in fast if s.spec.kind == kind]
        reference = [s for s in ref if s.spec.kind == kind]
        for steps in (3, 1, 400):
            values, status = walk(group, steps)
            for g, sensor in enumerate(reference):
                for j in range(steps):
                    m = pb2.TelemetryResponse()
                    sensor.fill(m)
                    d = getattr(m, m.WhichOneof("data"))
                    got = (
                        [d.velocity_x, d.velocity_y, d.velocity_z] if kind == "VELOCITY" else [getattr(d, kind.lower())]
                    )
                    assert np.array_equal(values[g, j].astype(np.float32), np.array(got, np.float32))
                    assert status[g, j] == d.status_bitmask
                    statuses.add(d.status_bitmask)
            assert [(s.state, s.seq) for s in group] == [(s.state, s.seq) for s in reference]
    assert statuses == {0, 1, 2, 4}


@pytest.mark.parametrize(
    "kw",
    [
        {"rate": 20_000.0, "count": 3000, "sensors": 50, "readings_per_message": 1000},
        {"rate": 33_333.3, "count": 2500, "sensors": 7, "readings_per_message": 37, "seed": 42},
        {"rate": 50_000.0, "duration_s": 0.05, "sensors": 5, "readings_per_message": 100},
        {"rate": 9_000.0, "count": 700, "sensors": 300, "readings_per_message": 1},
    ],
)
def test_rate_stream_identical_to_reference(kw: dict[str, Any]) -> None:
    """Open loop with a fixed origin: every message, reading, value, sequence number and intended time (and the
    timestamp derived from it) is the same, and the fast path's bytes are what SerializeToString gives."""
    params = StreamParams(t0_ns=T0, **kw)
    ref, fast = _both(params)
    assert [len(b.readings) for b in fast] == [len(b.readings) for b in ref]
    assert fast == ref
    assert [b.SerializeToString() for b in fast] == [b.SerializeToString() for b in ref]
    intended = [r.intended_ns for b in fast for r in b.readings]
    step = 1e9 / params.rate
    assert intended == [T0 + round(k * step) for k in range(len(intended))]


@pytest.mark.parametrize(
    "kw", [{"sensors": 50, "readings_per_message": 1000}, {"sensors": 13, "readings_per_message": 77}]
)
def test_max_rate_stream_identical_to_reference(kw: dict[str, Any]) -> None:
    """Max rate: intended is when each message was built (one time for all its readings), so only the times
    differ; values, sequence numbers and message sizes are the same."""
    params = StreamParams(max_rate=True, count=5000, **kw)
    before = time.time_ns()
    ref, fast = _both(params)
    assert _without_times(fast) == _without_times(ref)
    for b in fast:
        times = {r.intended_ns for r in b.readings}
        assert len(times) == 1 and before <= times.pop() <= time.time_ns()
        assert len({r.timestamp for r in b.readings}) == 1


@pytest.mark.parametrize("start", [1, 49, 50, 1234, 4999])
def test_resume_is_the_rest_of_the_stream(start: int) -> None:
    """A stream resumed at ``start`` with the original origin sends exactly the readings from ``start`` on of the
    original stream (values, sequence numbers, intended times), on both paths."""
    whole = StreamParams(rate=40_000.0, count=6000, sensors=50, readings_per_message=100, t0_ns=T0)
    resumed = StreamParams(rate=40_000.0, count=6000, sensors=50, readings_per_message=100, t0_ns=T0, start_index=start)
    full = [r for b in asyncio.run(_messages(produce_encoded, whole)) for r in b.readings]
    for producer in (produce, produce_encoded):
        tail = [r for b in asyncio.run(_messages(producer, resumed)) for r in b.readings]
        assert tail == full[start:]


@pytest.mark.parametrize("producer", [produce, produce_encoded])
def test_overloaded_stream_counts_unsent_exactly(producer: Any) -> None:
    """A subscriber that takes nothing: one message fits the buffer, the next waits until one second after the
    schedule's end, and every reading the schedule held but never sent is counted as unsent (not generated)."""
    unsent = metrics.readings().labels("unsent")

    async def run() -> int:
        buf: asyncio.Queue[Any] = asyncio.Queue(maxsize=1)
        params = StreamParams(rate=10_000.0, duration_s=0.2, sensors=5, readings_per_message=100)
        before = unsent._value.get()
        task = asyncio.create_task(producer(params, buf))
        await asyncio.sleep(1.5)  # past the schedule's end (0.2 s) and the grace (1 s): the producer gave up
        first = await buf.get()  # the subscriber wakes up: the one message, then the end
        assert first is not None and await buf.get() is None
        await asyncio.wait_for(task, 5)
        return int(unsent._value.get() - before)

    assert asyncio.run(run()) == 2000 - 100


def test_stop_sends_the_readings_already_due() -> None:
    """A stop (SIGTERM) ends the stream cleanly: the readings already due go out, then the end."""

    async def run() -> list[Any]:
        buf: asyncio.Queue[Any] = asyncio.Queue()
        stopping = asyncio.Event()
        params = StreamParams(rate=1000.0, sensors=5, readings_per_message=1000)  # one message a second
        task = asyncio.create_task(produce_encoded(params, buf, stopping))
        await asyncio.sleep(0.3)
        stopping.set()
        await asyncio.wait_for(task, 5)
        return [buf.get_nowait() for _ in range(buf.qsize())]

    items = asyncio.run(run())
    assert items[-1] is None
    ((msg, _),) = items[:-1]
    assert 200 <= msg.count <= 400  # due after about 0.3 s at 1,000/s
    batch = pb2.TelemetryBatch.FromString(msg.stamp_sent(SENT))
    assert [r.intended_ns for r in batch.readings] == sorted(r.intended_ns for r in batch.readings)
    assert batch.readings[-1].intended_ns <= time.time_ns()


def test_time_fields() -> None:
    """Timestamps are the reference's ISO strings; varints decode to the times; the fast path refuses a clock or
    origin that does not fit nine bytes (it falls back to the reference path)."""
    times = np.array([T0, T0 + 999, 1_700_000_000_999_999_999, (1 << 63) - 1, 1 << 56], np.int64)
    iso = _IsoClock()
    assert [bytes(row).decode() for row in iso_bytes(times)] == [iso(int(t)) for t in times]
    for t, row in zip(times, varint9(times), strict=True):
        msg = pb2.TelemetryResponse.FromString(b"\x40" + bytes(row))
        assert msg.intended_ns == t
    assert not fast_path_fits(StreamParams(rate=10.0, t0_ns=1_000_000_000))
    assert not fast_path_fits(StreamParams())  # the seed's per-sensor periods
    with pytest.raises(ValueError, match="nine-byte"):
        BatchEncoder(5, 1).take(3).stamp_intended(1_000_000_000)
