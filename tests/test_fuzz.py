"""Fuzzing with hypothesis: the decoders take any message a peer could send and either return a row or refuse
it with DecodeError (never another exception), and both decoders agree; the backend answers any JSON body with
a 2xx or a 4xx, never a 5xx, and stays up."""

from __future__ import annotations

import math
import socket
import subprocess
import sys
import time
from collections.abc import Iterator

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline.decoders import DECODERS, DecodeError
from pipeline.proto import pb2
from pipeline.rows import COLUMNS
from tests.helpers import f32

texts = st.text(max_size=60)
floats = st.floats(allow_nan=True, allow_infinity=True, width=32)
uint32 = st.integers(0, 2**32 - 1)
int32 = st.integers(-(2**31), 2**31 - 1)
enum = st.integers(-5, 12)  # proto3 enums are open: unknown values arrive as ints


@st.composite
def messages(draw: st.DrawFn) -> pb2.TelemetryResponse:
    m = pb2.TelemetryResponse(timestamp=draw(texts))
    if draw(st.booleans()):
        m.type = draw(st.integers(0, 3))
    kind = draw(st.sampled_from(["temperature", "pressure", "velocity", None]))
    if kind == "temperature":
        m.temperature.CopyFrom(pb2.TemperatureData(
            sensor_id=draw(texts), subsystem=draw(enum), temperature=draw(floats), unit=draw(texts),
            status_bitmask=draw(uint32), sequence_number=draw(int32)))  # fmt: skip
    elif kind == "pressure":
        m.pressure.CopyFrom(pb2.PressureData(
            sensor_id=draw(texts), subsystem=draw(enum), pressure=draw(floats), unit=draw(texts),
            status_bitmask=draw(uint32), leak_detected=draw(st.booleans()), sequence_number=draw(int32)))  # fmt: skip
    elif kind == "velocity":
        m.velocity.CopyFrom(pb2.VelocityData(
            sensor_id=draw(texts), subsystem=draw(enum), velocity_x=draw(floats), velocity_y=draw(floats),
            velocity_z=draw(floats), unit=draw(texts), vibration_mag=draw(floats), status_bitmask=draw(uint32),
            sequence_number=draw(int32)))  # fmt: skip
    m.intended_ns = draw(st.integers(-(2**63), 2**63 - 1))
    m.sent_ns = draw(st.integers(-(2**63), 2**63 - 1))
    return m


def _same(a: object, b: object) -> bool:
    if isinstance(a, float) and isinstance(b, float):
        return (math.isnan(a) and math.isnan(b)) or f32(a) == f32(b)
    return a == b


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(messages())
def test_decoders_accept_or_refuse_cleanly_and_agree(msg: pb2.TelemetryResponse) -> None:
    outcomes = []
    for name in ("dict", "direct"):
        try:
            outcomes.append(DECODERS[name]().decode(msg, 1))
        except DecodeError as exc:
            assert str(exc)
            outcomes.append(None)
    a, b = outcomes
    assert (a is None) == (b is None)
    if a is not None and b is not None:
        assert len(a) == len(b) == len(COLUMNS)
        assert all(_same(x, y) for x, y in zip(a, b, strict=True)), (a, b)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=6),
    max_leaves=20,
)
reading_keys = st.sampled_from([*COLUMNS, "telemetry_type", "extra"])


@st.composite
def bodies(draw: st.DrawFn) -> object:
    """Mostly near-valid readings (the interesting edge), sometimes anything at all."""
    if draw(st.integers(0, 4)) == 0:
        return draw(json_values)
    body = {k: draw(json_values) for k in draw(st.lists(reading_keys, max_size=20, unique=True))}
    if draw(st.booleans()):
        body["telemetry_type"] = draw(st.sampled_from(["TEMPERATURE", "PRESSURE", "VELOCITY", "HUMIDITY", 3]))
    return body


@pytest.fixture(scope="module")
def backend() -> Iterator[httpx.Client]:
    """A backend subprocess, and one HTTP client for the module (kept-alive connections: an example costs its two
    requests, not a connection each)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "pipeline.backend", "--port", str(port)], stderr=subprocess.PIPE)
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
        for _ in range(100):
            try:
                if client.get("/healthz").status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.1)
        yield client
    proc.terminate()
    proc.wait(10)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=bodies(), batch=st.booleans())
def test_backend_never_answers_5xx(backend: httpx.Client, body: object, batch: bool) -> None:
    path = "/telem_data/batch" if batch else "/telem_data"
    payload = [body] if batch and not isinstance(body, list) else body
    resp = backend.post(path, json=payload)
    assert resp.status_code < 500, resp.text
    if resp.status_code >= 400:
        assert resp.json()["message"]  # the problem is named
    assert backend.get("/healthz").status_code == 200
