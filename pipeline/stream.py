"""A stream's readings: its parameters (``StreamParams``), its open-loop schedule, and the producers that build
its messages into a bounded buffer — ``produce`` (the reference path: protobuf messages filled by
``Sensor.fill``) and ``produce_encoded`` (the fast path: ``pipeline.encoder``'s wire bytes).

The generator stage (``pipeline.generator``) serves these streams over gRPC; the ceilings and micro-benchmarks
build them in process. When the consumer is slow the buffer fills, the producer waits, and readings leave late:
their ``intended_ns`` stays on the schedule, so that lateness is measured (publish delay = sent − intended), never
hidden (no coordinated omission).
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import math
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from pipeline import metrics
from pipeline.config import GeneratorSettings
from pipeline.proto import pb2
from pipeline.sensors import make_sensors

MAX_SENSORS = 100_000
MAX_READINGS_PER_MESSAGE = 100_000
MAX_CATCH_UP = 20_000  # readings built per producer step before yielding to the event loop
OVERLOAD_GRACE_NS = 1_000_000_000  # with --duration, stop this long after the schedule's end even if behind it


async def _put_by(buf: asyncio.Queue[Any], item: Any, deadline_ns: int | None) -> bool:
    """Put ``item``, waiting while the buffer is full (backpressure) but not past ``deadline_ns``; False if the
    deadline came first (the item is not in the buffer)."""
    if not buf.full():
        buf.put_nowait(item)
        return True
    if deadline_ns is None:
        await buf.put(item)
        return True
    try:
        await asyncio.wait_for(buf.put(item), max(0.0, (deadline_ns - time.time_ns()) / 1e9))
        return True
    except TimeoutError:
        return False


def _owed(
    params: StreamParams, t0: int, end_ns: int, nxt: tuple[int, int], idx: int, sched: Iterator[tuple[int, int]]
) -> int:
    """Readings the schedule still held: reading ``idx`` (``nxt``) and every later one intended before ``end_ns``
    (and below ``count``), exactly. Max rate has no schedule: nothing is owed."""
    if params.max_rate:
        return 0
    limit = params.count or None
    if params.rate > 0:  # intended(k) = t0 + round(k * step): the first k at or past the end, in closed form
        step = 1e9 / params.rate
        total = max(0, math.ceil((end_ns - t0) / step) - 2)
        while t0 + round(total * step) < end_ns:
            total += 1
        return max(0, (min(total, limit) if limit else total) - idx)
    owed = 0  # the seed's per-sensor periods: walk the rest of the schedule
    while nxt[1] < end_ns and (limit is None or idx + owed < limit):
        owed += 1
        nxt = next(sched)
    return owed


@dataclass(frozen=True)
class StreamParams:
    rate: float = 0.0  # readings/s; 0 with max_rate False: the seed's per-sensor periods
    max_rate: bool = False
    sensors: int = 5
    count: int = 0
    duration_s: float = 0.0
    seed: int = 1
    readings_per_message: int = 1
    start_index: int = 0  # resume: the first reading index to send (the ones before are skipped, not sent)
    sensor_offset: int = 0  # this generator's first sensor of the run's (the generator's own knob, not the request's)
    t0_ns: int = 0  # resume: the schedule's origin (0: now)

    def validate(self) -> None:
        problems = []
        if not math.isfinite(self.rate) or self.rate < 0:
            problems.append(f"rate {self.rate!r} must be a finite number ≥ 0 (0: the seed's sensor periods)")
        if not 1 <= self.sensors <= MAX_SENSORS:
            problems.append(f"sensors {self.sensors} must be in 1..{MAX_SENSORS}")
        if not 1 <= self.readings_per_message <= MAX_READINGS_PER_MESSAGE:
            problems.append(
                f"readings_per_message {self.readings_per_message} must be in 1..{MAX_READINGS_PER_MESSAGE}"
            )
        if not math.isfinite(self.duration_s) or self.duration_s < 0:
            problems.append(f"duration_s {self.duration_s!r} must be a finite number ≥ 0")
        if self.count < 0:
            problems.append(f"count {self.count} must be ≥ 0")
        if problems:
            raise ValueError("; ".join(problems))

    @classmethod
    def from_request(cls, req: Any, defaults: GeneratorSettings) -> StreamParams:
        return cls(
            rate=req.rate,
            max_rate=req.max_rate,
            sensors=req.sensors or defaults.sensors,
            count=req.count,
            duration_s=req.duration_s,
            seed=req.seed or defaults.seed,
            readings_per_message=req.readings_per_message or 1,
            start_index=req.start_index,
            t0_ns=req.t0_ns,
            sensor_offset=defaults.sensor_offset,
        )


def schedule(params: StreamParams, t0: int) -> Iterator[tuple[int, int]]:
    """(sensor index, intended ns) in time order. Max rate yields intended 0: stamped when built."""
    n = params.sensors
    if params.max_rate:
        k = 0
        while True:
            yield k % n, 0
            k += 1
    elif params.rate > 0:
        step = 1e9 / params.rate
        k = 0
        while True:
            yield k % n, t0 + round(k * step)
            k += 1
    else:  # the seed: every sensor on its own period (a thread each in the original)
        sensors = make_sensors(n, 0, params.sensor_offset)
        heap = [(t0 + round(s.spec.period_s * 1e9), i) for i, s in enumerate(sensors)]
        heapq.heapify(heap)
        periods = [round(s.spec.period_s * 1e9) for s in sensors]
        while True:
            at, i = heap[0]
            yield i, at
            heapq.heapreplace(heap, (at + periods[i], i))


class _IsoClock:
    """ISO-8601 UTC with microseconds and a trailing Z (the seed's timestamp), caching the seconds part."""

    def __init__(self) -> None:
        self._sec = -1
        self._prefix = ""

    def __call__(self, ns: int) -> str:
        sec, rem = divmod(ns, 1_000_000_000)
        if sec != self._sec:
            self._sec, self._prefix = sec, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(sec))
        return f"{self._prefix}.{rem // 1000:06d}Z"


async def produce(
    params: StreamParams,
    buf: asyncio.Queue[tuple[Any, int] | None],
    stopping: asyncio.Event | None = None,
    sent_before: int = 0,
) -> None:
    """Fill ``buf`` with TelemetryBatch messages on the schedule; None at the end (count, duration or
    ``stopping``: the stream then ends cleanly, so the subscriber sees a normal end of stream). A resumed stream
    sends the readings below ``sent_before`` (sent once already, to a subscriber that died before keeping them)
    even past the schedule's end and the overload stop: they were generated, only later ones can go unsent."""
    stopping = stopping or asyncio.Event()
    sensors = make_sensors(params.sensors, params.seed, params.sensor_offset)
    iso = _IsoClock()
    t0 = params.t0_ns or time.time_ns()
    end_ns = t0 + round(params.duration_s * 1e9) if params.duration_s else None
    remaining = params.count - params.start_index if params.count else None
    rpm = params.readings_per_message
    sched = schedule(params, t0)
    scratch = pb2.TelemetryResponse()
    for _ in range(params.start_index):  # resume: advance the schedule and every sensor's random walk
        i, _at = next(sched)
        sensors[i].fill(scratch)
    idx = params.start_index  # the index of nxt
    nxt: tuple[int, int] | None = next(sched) if remaining is None or remaining > 0 else None
    batch = pb2.TelemetryBatch()
    # overloaded (the subscriber can't take the offered rate): stop on wall time this long after the schedule's
    # end; the readings still owed to the schedule were never generated, and are counted as unsent
    overload_ns = end_ns + OVERLOAD_GRACE_NS if end_ns is not None else None
    unsent = 0
    while nxt is not None and not stopping.is_set():
        now = time.time_ns()
        if overload_ns is not None and end_ns is not None and now >= overload_ns and idx >= sent_before:
            unsent = _owed(params, t0, end_ns, nxt, idx, sched)
            break
        built = 0
        # build every reading that is due (catching up if we fell behind), message by message
        while nxt is not None and nxt[1] <= now and built < MAX_CATCH_UP:
            i, intended = nxt
            if params.max_rate:
                intended = now
            if end_ns is not None and intended >= end_ns and idx >= sent_before:
                nxt = None
                break
            msg = batch.readings.add()
            sensors[i].fill(msg)
            msg.timestamp = iso(intended)
            msg.intended_ns = intended
            built += 1
            if remaining is not None:
                remaining -= 1
                if remaining == 0:
                    nxt = None
                    break
            nxt = next(sched)
            idx += 1
            if len(batch.readings) >= rpm:
                # waits while the subscriber is slow (backpressure), but never past the overload stop
                resent = idx - len(batch.readings) < sent_before
                if not await _put_by(buf, (batch, time.time_ns()), None if resent else overload_ns):
                    assert end_ns is not None
                    unsent = len(batch.readings) + _owed(params, t0, end_ns, nxt, idx, sched)
                    batch = pb2.TelemetryBatch()
                    nxt = None
                    break
                batch = pb2.TelemetryBatch()
                now = time.time_ns()
        if nxt is None:
            break
        if nxt[1] > now:
            # sleep until the reading that completes the current message is due
            due = nxt[1] if params.rate <= 0 else nxt[1] + round((rpm - 1 - len(batch.readings)) * 1e9 / params.rate)
            if end_ns is not None:
                due = min(due, end_ns)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stopping.wait(), max(0.0, (due - time.time_ns()) / 1e9))
        elif built >= MAX_CATCH_UP:
            await asyncio.sleep(0)
    if unsent:
        metrics.readings().labels("unsent").inc(unsent)
    if len(batch.readings):
        await buf.put((batch, time.time_ns()))
    await buf.put(None)


# The fast path (pipeline.encoder, numpy) is imported by the first stream that takes it, not at start-up: the
# stage's start (until it handles SIGTERM) stays as quick as before.


def fast_path_fits(params: StreamParams) -> bool:
    """The fast path builds the rate and max-rate schedules (sensors in turn) with nine-byte time varints."""
    from pipeline.encoder import VARINT9_MAX, VARINT9_MIN

    return (params.max_rate or params.rate > 0) and (not params.t0_ns or VARINT9_MIN <= params.t0_ns < VARINT9_MAX)


async def produce_encoded(
    params: StreamParams,
    buf: asyncio.Queue[tuple[Any, int] | None],
    stopping: asyncio.Event | None = None,
    sent_before: int = 0,
) -> None:
    """``produce``'s fast path, with the same stream: the same readings (``BatchEncoder``: built with numpy ahead,
    a chunk at a time, and encoded once), the same intended times, the same messages, the same end and the same
    unsent count. A message is taken from the encoder before it is due (a chunk is built in the slack), stamped
    with its intended times when due, and put in the buffer as a ``Pending``: the RPC handler stamps its send
    time and hands its bytes to gRPC."""
    import numpy as np

    from pipeline.encoder import BatchEncoder

    stopping = stopping or asyncio.Event()
    t0 = params.t0_ns or time.time_ns()
    end_ns = t0 + round(params.duration_s * 1e9) if params.duration_s else None
    overload_ns = end_ns + OVERLOAD_GRACE_NS if end_ns is not None else None
    step = 0.0 if params.max_rate else 1e9 / params.rate
    # the index past the last reading of the stream: count, or the schedule's end (rate), or none
    stop_at: int | None = params.count or None
    if end_ns is not None and not params.max_rate:
        stop_at = _owed(params, t0, end_ns, (0, 0), 0, iter(()))
    encoder = BatchEncoder(params.sensors, params.seed, params.start_index, offset=params.sensor_offset)
    idx = params.start_index
    unsent = 0
    unyielded = 0
    while not stopping.is_set() and (stop_at is None or idx < stop_at):
        n = params.readings_per_message if stop_at is None else min(params.readings_per_message, stop_at - idx)
        msg = encoder.take(n)  # built before it is due
        now = time.time_ns()
        if params.max_rate:
            if end_ns is not None and now >= end_ns and idx >= sent_before:
                break
            msg.stamp_intended(now)
        else:
            intended = t0 + np.rint(np.arange(idx, idx + n) * step).astype(np.int64)
            if overload_ns is not None and now >= overload_ns and idx >= sent_before:
                unsent = stop_at - idx if stop_at is not None else 0
                break
            due = int(intended[-1])
            if due > now:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stopping.wait(), (due - now) / 1e9)
                unyielded = 0
                if stopping.is_set():  # the stream ends: send the readings already due, as produce does
                    n = int(np.searchsorted(intended, time.time_ns(), side="right"))
                    if n == 0:
                        break
                    msg, intended = msg.head(n), intended[:n]
            msg.stamp_intended(intended)
        # waits while the subscriber is slow (backpressure), but never past the overload stop
        if not await _put_by(buf, (msg, time.time_ns()), None if idx < sent_before else overload_ns):
            unsent = n if params.max_rate or stop_at is None else stop_at - idx  # this message and the rest
            break
        idx += n
        unyielded += n
        if unyielded >= MAX_CATCH_UP:
            unyielded = 0
            await asyncio.sleep(0)
    if unsent:
        metrics.readings().labels("unsent").inc(unsent)
    await buf.put(None)
