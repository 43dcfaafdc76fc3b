"""The generator as a real gRPC server: the seed's RPC, the batched RPC, determinism, schedule, bad requests."""

from __future__ import annotations

import itertools
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import datetime

import grpc
import pytest

from harness.process import free_port
from pipeline.decoders import DECODERS
from pipeline.proto import pb2, pb2_grpc
from tests.helpers import expected_readings


def _generator(*flags: str) -> Iterator[pb2_grpc.TelemetryServiceStub]:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "pipeline.generator", "--port", str(port), "--metrics-port", "0",
         "--count", "12", *flags],  # the seed RPC's stream: 12 readings at the seed's periods
        stderr=subprocess.PIPE,
    )  # fmt: skip
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    grpc.channel_ready_future(channel).result(timeout=20)
    yield pb2_grpc.TelemetryServiceStub(channel)
    channel.close()
    proc.terminate()
    assert proc.wait(10) == 0


@pytest.fixture(scope="module")
def stub() -> Iterator[pb2_grpc.TelemetryServiceStub]:
    """The generator as the harness runs it (its default builder: the numpy fast path)."""
    yield from _generator()


@pytest.fixture(scope="module")
def reference_stub() -> Iterator[pb2_grpc.TelemetryServiceStub]:
    """The generator with the reference path (a protobuf message per reading)."""
    yield from _generator("--builder", "protobuf")


def test_seed_client_gets_valid_responses(stub: pb2_grpc.TelemetryServiceStub) -> None:
    """A client that knows only the seed's RPC: one TelemetryResponse per message, as the seed defined it."""
    t0 = time.monotonic()
    msgs = list(stub.GetTelemetryStream(pb2.TelemetryRequest(), timeout=15))
    elapsed = time.monotonic() - t0
    assert len(msgs) == 12
    # the seed's five sensors at 300/300/450/350/350 ms: 12 readings take about a second
    assert 0.5 < elapsed < 5
    for m in msgs:
        kind = m.WhichOneof("data")
        assert kind in ("temperature", "pressure", "velocity")
        assert m.HasField("type") and pb2.TelemetryType.Name(m.type) == kind.upper()
        assert m.timestamp.endswith("Z") and len(m.timestamp.split(".")[1]) == 7  # microseconds + Z
        datetime.fromisoformat(m.timestamp)
        assert m.sent_ns >= m.intended_ns > 0
    ids = {getattr(m, m.WhichOneof("data")).sensor_id for m in msgs}
    assert ids == {"TEMP_ENG_001", "TEMP_FUEL_001", "PRESS_ENG_001", "PRESS_FUEL_002", "VELO_STAGE1_001"}


def _batched(stub: pb2_grpc.TelemetryServiceStub, **kw: object) -> list[pb2.TelemetryResponse]:
    out = []
    for batch in stub.StreamBatches(pb2.StreamRequest(**kw), timeout=30):
        out.extend(batch.readings)
    return out


def test_same_seed_same_readings(stub: pb2_grpc.TelemetryServiceStub) -> None:
    a = _batched(stub, max_rate=True, count=2000, sensors=7, seed=42, readings_per_message=100)
    b = _batched(stub, rate=20000, count=2000, sensors=7, seed=42, readings_per_message=37)
    c = _batched(stub, max_rate=True, count=2000, sensors=7, seed=43, readings_per_message=100)
    decode = DECODERS["direct"]().decode_many

    def values(msgs: list[pb2.TelemetryResponse]) -> list[tuple[object, ...]]:
        return [r[1:16] for r in decode(msgs, 0)]  # all but the timestamps

    assert len(a) == len(b) == 2000
    assert values(a) == values(b)
    assert values(a) != values(c)
    # and they are the value model's readings, recomputed here from the seed
    per_sensor: dict[str, int] = {}
    for r in decode(a, 0):
        per_sensor[r[2]] = per_sensor.get(r[2], 0) + 1
    expected = expected_readings(42, 7, per_sensor)
    assert len(expected) == 2000


def test_open_loop_schedule(stub: pb2_grpc.TelemetryServiceStub) -> None:
    msgs = _batched(stub, rate=2000, count=1000, readings_per_message=10)
    intended = [m.intended_ns for m in msgs]
    assert intended == sorted(intended)
    span = (intended[-1] - intended[0]) / 1e9
    assert span == pytest.approx(999 / 2000, rel=1e-3)  # the schedule, whatever the send times were
    gaps = {b - a for a, b in itertools.pairwise(intended)}
    assert min(gaps) >= 499_999 and max(gaps) <= 500_001  # 1/2000 s apart, to the rounding of one ns


def test_duration_stops_the_stream(stub: pb2_grpc.TelemetryServiceStub) -> None:
    t0 = time.monotonic()
    msgs = _batched(stub, rate=1000, duration_s=0.5, readings_per_message=50)
    assert time.monotonic() - t0 < 3
    assert len(msgs) == 500


def test_many_sensors_have_unique_ids(stub: pb2_grpc.TelemetryServiceStub) -> None:
    msgs = _batched(stub, max_rate=True, count=600, sensors=300, readings_per_message=600)
    ids = {getattr(m, m.WhichOneof("data")).sensor_id for m in msgs}
    assert len(ids) == 300


@pytest.mark.parametrize(
    ("request_kw", "needle"),
    [
        ({"rate": -5}, "rate"),
        ({"rate": float("nan")}, "rate"),
        ({"sensors": 200_000}, "sensors"),
        ({"readings_per_message": 1_000_000}, "readings_per_message"),
        ({"duration_s": -1}, "duration_s"),
    ],
)
def test_invalid_request_is_invalid_argument(
    stub: pb2_grpc.TelemetryServiceStub, request_kw: dict[str, object], needle: str
) -> None:
    with pytest.raises(grpc.RpcError) as err:
        _batched(stub, **request_kw)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert needle in err.value.details()
    # and the server is still up
    assert len(_batched(stub, max_rate=True, count=10)) == 10


@pytest.mark.parametrize(
    ("rate", "count", "duration_s", "idx"),
    [(2.5, 0, 1.0, 0), (1000.0, 0, 1.0, 0), (3333.3, 0, 2.0, 17), (7.0, 5, 3.0, 1), (0.0, 0, 3.0, 0), (0.0, 4, 3.0, 2)],
)
def test_owed_is_exactly_the_rest_of_the_schedule(rate: float, count: int, duration_s: float, idx: int) -> None:
    """What an overloaded generator counts as unsent: every reading of the schedule from ``idx`` on that is
    intended before the end (and below count) — the same count a brute-force walk of the schedule gives."""
    from pipeline.stream import StreamParams, _owed, schedule

    params = StreamParams(rate=rate, count=count, duration_s=duration_s, sensors=5)
    t0, end = 1_000_000_000, 1_000_000_000 + round(duration_s * 1e9)
    scheduled = [at for _, at in itertools.islice(schedule(params, t0), 100_000) if at < end]
    want = max(0, (min(len(scheduled), count) if count else len(scheduled)) - idx)
    sched = schedule(params, t0)
    nxt = next(itertools.islice(sched, idx, None))
    assert _owed(params, t0, end, nxt, idx, sched) == want


@pytest.mark.parametrize(
    "request_kw",
    [
        {"rate": 50_000, "count": 5000, "sensors": 50, "readings_per_message": 1000, "t0_ns": 1_700_000_000 * 10**9},
        {"rate": 10_000, "count": 1500, "sensors": 7, "readings_per_message": 33, "seed": 9, "start_index": 123,
         "t0_ns": 1_700_000_000 * 10**9},
        {"max_rate": True, "count": 3000, "sensors": 50, "readings_per_message": 1000},
    ],
)  # fmt: skip
def test_fast_path_over_grpc_equals_reference(
    stub: pb2_grpc.TelemetryServiceStub, reference_stub: pb2_grpc.TelemetryServiceStub, request_kw: dict[str, object]
) -> None:
    """The same request to a generator on each path: the same messages and readings (values, sequence numbers,
    and on a schedule the intended times); sent_ns is each message's own send time on both."""
    fast = list(stub.StreamBatches(pb2.StreamRequest(**request_kw), timeout=30))
    ref = list(reference_stub.StreamBatches(pb2.StreamRequest(**request_kw), timeout=30))
    assert [len(b.readings) for b in fast] == [len(b.readings) for b in ref]
    for b in fast:
        assert len({r.sent_ns for r in b.readings}) == 1
        assert all(r.sent_ns >= r.intended_ns for r in b.readings)
    fields = ["sent_ns"] if not request_kw.get("max_rate") else ["sent_ns", "intended_ns", "timestamp"]

    def strip(batches: list[pb2.TelemetryBatch]) -> list[pb2.TelemetryResponse]:
        out = []
        for b in batches:
            for r in b.readings:
                for f in fields:
                    r.ClearField(f)
                out.append(r)
        return out

    assert strip(fast) == strip(ref)


def test_generator_ceiling_measures_the_stage_alone() -> None:
    """The ceiling runs the generator stage process into a discarding subscriber with a cell's stream settings
    (figures only checked for shape: throughput claims live in results.json); a bad builder fails clearly."""
    import asyncio

    from experiments.run import ceilings
    from harness.plan import PipelineConfig

    cfg = PipelineConfig(max_rate=True, sensors=50, readings_per_message=1000)
    got = asyncio.run(ceilings.generator(cfg, seconds=0.5, warmup_s=0.2))
    assert got["builder"] == "numpy" and got["sensors"] == 50 and got["readings_per_message"] == 1000
    assert got["readings"] > 0 and got["readings"] % 1000 == 0
    assert got["rps"] == pytest.approx(got["readings"] / got["seconds"])
    assert 0 < got["cpu_util"] < 2.5
    with pytest.raises(RuntimeError, match="builder"):
        asyncio.run(ceilings.generator(cfg, seconds=0.2, builder="fortran"))


@pytest.mark.parametrize("path", ["produce", "produce_encoded"])
@pytest.mark.parametrize("max_rate", [False, True])
def test_resumed_stream_resends_what_was_sent_even_after_the_schedule(path: str, max_rate: bool) -> None:
    """A subscriber that died before keeping readings [100, 700) resumes at 100 after the schedule's end and its
    overload stop (the chaos cell: ingest killed while a held lock had the stream far behind): those readings were
    generated, so they are sent again; only readings never generated (from 700 on) may go unsent."""
    import asyncio

    from pipeline import stream

    now = time.time_ns()
    kw: dict[str, object] = {"max_rate": True} if max_rate else {"rate": 1000.0}
    # a 2 s schedule that began 10 s ago: its end and its overload stop (1 s later) have both passed
    params = stream.StreamParams(**kw, duration_s=2.0, sensors=5, readings_per_message=50, start_index=100,
                                 t0_ns=now - 10 * 10**9)  # type: ignore[arg-type]  # fmt: skip

    async def run() -> list[int]:
        buf: asyncio.Queue[tuple[object, int] | None] = asyncio.Queue(maxsize=2)  # the subscriber is slow
        producer = asyncio.create_task(getattr(stream, path)(params, buf, None, sent_before=700))
        counts = []
        while (item := await buf.get()) is not None:
            await asyncio.sleep(0.01)
            msg = item[0]
            counts.append(len(msg.readings) if isinstance(msg, pb2.TelemetryBatch) else msg.count)  # type: ignore[attr-defined]
        await producer
        return counts

    counts = asyncio.run(run())
    assert sum(counts) == 600  # 100 … 699, every one again; nothing new past the schedule
