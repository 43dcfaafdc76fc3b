"""The backend as a real uvicorn subprocess, driven with httpx and the websockets client (no mocks).

Three servers per module: ``main`` (a small body limit so 413 is cheap to provoke), ``token`` (``--api-token``)
and ``small`` (a short websocket buffer and a three-client limit).
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from prometheus_client.parser import text_string_to_metric_families
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from harness.process import free_port
from pipeline.backend import MAX_BATCH, create_app, main
from pipeline.backend.hub import Client
from pipeline.config import BackendSettings

REPO = Path(__file__).resolve().parents[1]
MAX_BODY = 2_000_000
TOKEN = "s3cret-token"
SMALL_BUFFER = 64
SMALL_MAX_CLIENTS = 3
JSON = {"Content-Type": "application/json"}

# --- the seed's bodies: all 16 keys, nulls for the other types' fields ------------------------------------------

SEED_KEYS = (
    "reading_timestamp", "telemetry_type", "sensor_id", "subsystem", "sequence_number", "status_bitmask",
    "temperature", "temp_unit", "pressure", "pressure_unit", "leak_detected",
    "velocity_x", "velocity_y", "velocity_z", "velocity_unit", "vibration_magnitude",
)  # fmt: skip


def seed_body(kind: str, seq: int = 1) -> dict[str, Any]:
    body: dict[str, Any] = dict.fromkeys(SEED_KEYS)
    body.update(reading_timestamp="2024-05-01T12:00:00.123456Z", sequence_number=seq, status_bitmask=0)
    if kind == "TEMPERATURE":
        body.update(telemetry_type=kind, sensor_id="TEMP_ENG_001", subsystem="ENGINE", temperature=31.5,
                    temp_unit="celsius")  # fmt: skip
    elif kind == "PRESSURE":
        body.update(telemetry_type=kind, sensor_id="PRESS_FUEL_002", subsystem="FUEL_TANK", pressure=201.25,
                    pressure_unit="bar")  # fmt: skip
    else:
        body.update(telemetry_type=kind, sensor_id="VELO_STAGE1_001", subsystem="STAGE1", velocity_x=8000.5,
                    velocity_y=7995.0, velocity_z=8003.25, velocity_unit="m/s")  # fmt: skip
    return body


def batch_of(n: int) -> list[dict[str, Any]]:
    kinds = ("TEMPERATURE", "PRESSURE", "VELOCITY")
    out = []
    for i in range(n):
        body = seed_body(kinds[i % 3], seq=i)
        body.update(intended_ns=1_700_000_000_000_000_000 + i, sent_ns=None, ingested_ns=1_700_000_000_000_000_999)
        out.append(body)
    return out


# --- servers ------------------------------------------------------------------------------------------------------


@dataclass
class Server:
    url: str
    ws_url: str
    proc: subprocess.Popen[bytes]
    log: Path


@pytest.fixture(scope="module")
def server_factory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[..., Server]]:
    started: list[Server] = []

    def start(name: str, *flags: str) -> Server:
        workdir = tmp_path_factory.mktemp(f"backend-{name}")  # no stray .env is read from here
        env = {k: v for k, v in os.environ.items() if not k.startswith("TELEMETRY_")}
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
        port = free_port()
        log = workdir / "server.log"
        with log.open("wb") as out:
            proc = subprocess.Popen(
                [sys.executable, "-m", "pipeline.backend", "--port", str(port), *flags],
                cwd=workdir, env=env, stdout=out, stderr=subprocess.STDOUT,
            )  # fmt: skip
        server = Server(f"http://127.0.0.1:{port}", f"ws://127.0.0.1:{port}/ws", proc, log)
        started.append(server)
        deadline = time.monotonic() + 20
        while True:
            if proc.poll() is not None:
                pytest.fail(f"backend {name} exited with {proc.returncode}:\n{log.read_text()}")
            try:
                if httpx.get(server.url + "/healthz", timeout=1).status_code == 200:
                    return server
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"backend {name} did not answer /healthz:\n{log.read_text()}")
            time.sleep(0.05)

    yield start

    for server in started:
        server.proc.terminate()
        try:
            server.proc.wait(10)
        except subprocess.TimeoutExpired:
            server.proc.kill()
            server.proc.wait()
    for server in started:
        text = server.log.read_text()
        assert "Traceback" not in text and "ERROR" not in text, text  # disconnects and bad input stay quiet
        assert TOKEN not in text, "the API token leaked into the log"


@pytest.fixture(scope="module")
def main_server(server_factory: Callable[..., Server]) -> Server:
    return server_factory("main", "--max-body-bytes", str(MAX_BODY))


@pytest.fixture(scope="module")
def token_server(server_factory: Callable[..., Server]) -> Server:
    return server_factory("token", "--api-token", TOKEN)


@pytest.fixture(scope="module")
def small_server(server_factory: Callable[..., Server]) -> Server:
    return server_factory("small", "--ws-buffer", str(SMALL_BUFFER), "--max-ws-clients", str(SMALL_MAX_CLIENTS))


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=10) as client:
        yield client


async def recv_json(ws: ClientConnection, timeout: float = 5) -> Any:
    return json.loads(await asyncio.wait_for(ws.recv(), timeout))


async def scrape(http: httpx.AsyncClient, server: Server) -> dict[str, float]:
    """Every sample of /metrics as {'name{label=value,...}': value}."""
    r = await http.get(server.url + "/metrics")
    assert r.status_code == 200
    out = {}
    for family in text_string_to_metric_families(r.text):
        for s in family.samples:
            labels = ",".join(f"{k}={v}" for k, v in sorted(s.labels.items()))
            out[f"{s.name}{{{labels}}}" if labels else s.name] = s.value
    return out


async def wait_ws_clients(http: httpx.AsyncClient, server: Server, n: int) -> None:
    for _ in range(200):
        if (await http.get(server.url + "/healthz")).json()["ws_clients"] == n:
            return
        await asyncio.sleep(0.025)
    pytest.fail(f"ws_clients never became {n}")


async def assert_alive(http: httpx.AsyncClient, server: Server) -> None:
    r = await http.get(server.url + "/healthz")
    assert r.status_code == 200 and r.json()["status"] == "ok"


# --- the seed's contract ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["TEMPERATURE", "PRESSURE", "VELOCITY"])
async def test_seed_body_is_accepted_and_broadcast_unchanged(
    main_server: Server, http: httpx.AsyncClient, kind: str
) -> None:
    body = seed_body(kind)
    async with connect(main_server.ws_url + "?client_id=seed-page") as ws:
        # the seed's Python client: requests.post(url, json=row)
        r = await http.post(main_server.url + "/telem_data", content=json.dumps(body), headers=JSON)
        assert r.status_code == 200, r.text
        assert r.json() == {"status": "ok"}
        raw = await asyncio.wait_for(ws.recv(), 5)
    assert isinstance(raw, str)  # a text frame: the seed page does JSON.parse(event.data)
    got = json.loads(raw)
    assert got == body
    assert list(got) == list(SEED_KEYS)  # table order, nulls kept: what the seed page shows


async def test_timing_keys_and_missing_other_type_keys(main_server: Server, http: httpx.AsyncClient) -> None:
    body = {k: v for k, v in seed_body("PRESSURE").items() if v is not None}  # no nulls at all
    body.update(leak_detected=True, intended_ns=1, sent_ns=2, ingested_ns=3)
    async with connect(main_server.ws_url) as ws:
        r = await http.post(main_server.url + "/telem_data", json=body)
        assert r.status_code == 200, r.text
        assert await recv_json(ws) == body


async def test_batch_endpoint_per_reading_and_batched_clients(main_server: Server, http: httpx.AsyncClient) -> None:
    readings = batch_of(1000)
    before = await scrape(http, main_server)
    async with (
        connect(main_server.ws_url + "?client_id=each") as each,
        connect(main_server.ws_url + "?client_id=batched&batch=1") as batched,
    ):
        r = await http.post(main_server.url + "/telem_data/batch", json=readings)
        assert r.status_code == 200, r.text
        assert r.json() == {"status": "ok", "received": 1000}
        assert await recv_json(batched) == readings  # one message holding the array
        assert [await recv_json(each) for _ in range(1000)] == readings  # one message per reading, in order

        # a single POST reaches batch clients as a one-element array
        one = seed_body("VELOCITY", seq=5)
        assert (await http.post(main_server.url + "/telem_data", json=one)).status_code == 200
        assert await recv_json(batched) == [one]
        assert await recv_json(each) == one
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(batched.recv(), 0.2)  # nothing else was sent

    after = await scrape(http, main_server)
    key = "telemetry_readings_total{stage=%s}"
    assert after[key % "received"] - before[key % "received"] == 1001
    assert after[key % "broadcast"] - before[key % "broadcast"] == 2002  # per client, per reading sent
    assert after["backend_broadcast_dropped_readings_total"] == before["backend_broadcast_dropped_readings_total"]

    r = await http.post(main_server.url + "/telem_data/batch", json=[])
    assert r.status_code == 200 and r.json()["received"] == 0


async def test_slow_clients_do_not_stall_the_others(small_server: Server, http: httpx.AsyncClient) -> None:
    """Clients that never read lose their own messages; a reading client still gets everything, promptly.

    ``stalled`` gets one ~470 kB array per POST (~19 MB in all): far more than the socket buffers hold, so its
    sender ends up blocked on the socket. ``flooded`` gets one message per reading: its queue overflows at
    every POST.
    """
    posts, per_post = 40, 1000
    readings = batch_of(per_post)
    payload = json.dumps(readings)
    before = await scrape(http, small_server)
    opts: dict[str, Any] = {"max_queue": 1, "max_size": None, "close_timeout": 0.5}
    stalled = await connect(small_server.ws_url + "?client_id=stalled&batch=1", **opts)
    flooded = await connect(small_server.ws_url + "?client_id=flooded", **opts)
    try:
        async with connect(small_server.ws_url + "?client_id=fast&batch=1", max_size=None) as fast:
            received: list[Any] = []

            async def read_all() -> None:
                while len(received) < posts * per_post:
                    received.extend(await recv_json(fast, timeout=10))

            reader = asyncio.create_task(read_all())
            for _ in range(posts):
                r = await http.post(small_server.url + "/telem_data/batch", content=payload, headers=JSON)
                assert r.status_code == 200
            t0 = time.monotonic()
            await asyncio.wait_for(reader, 10)
            lag = time.monotonic() - t0
            mid = await scrape(http, small_server)
        assert len(received) == posts * per_post and received[-per_post:] == readings
        assert lag < 3, f"the reading client finished {lag:.1f} s after the last POST"
    finally:
        await stalled.close()
        await flooded.close()

    sent = mid["telemetry_readings_total{stage=broadcast}"] - before["telemetry_readings_total{stage=broadcast}"]
    at_most_unstalled = posts * per_post * 2 + posts * SMALL_BUFFER  # fast + stalled + flooded's queue-fulls
    assert sent <= at_most_unstalled - 2 * per_post, "the stalled client's socket never blocked: test too small"
    await wait_ws_clients(http, small_server, 0)
    after = await scrape(http, small_server)
    dropped = after["backend_broadcast_dropped_readings_total"] - before["backend_broadcast_dropped_readings_total"]
    assert dropped >= posts * (per_post - SMALL_BUFFER)  # flooded's queue overflowed at every POST
    assert (
        dropped
        + after["telemetry_readings_total{stage=broadcast}"]
        - before["telemetry_readings_total{stage=broadcast}"]
        == 3 * posts * per_post
    )  # every reading was either sent or counted as dropped, for every client


async def test_disconnects_are_clean(main_server: Server, http: httpx.AsyncClient) -> None:
    ws = await connect(main_server.ws_url + "?client_id=gone")
    await wait_ws_clients(http, main_server, 1)
    ws.transport.abort()  # no closing handshake
    await wait_ws_clients(http, main_server, 0)
    r = await http.post(main_server.url + "/telem_data/batch", json=batch_of(10))
    assert r.status_code == 200


# --- metrics ------------------------------------------------------------------------------------------------------


async def test_latency_is_observed(main_server: Server, http: httpx.AsyncClient) -> None:
    before = await scrape(http, main_server)
    r = await http.post(main_server.url + "/latency", json={"latency": 0.25})  # the seed page's body
    assert r.status_code == 200 and r.json()["status"] == "ok"
    r = await http.post(main_server.url + "/latency", json={"latencies": [0.5, 1.5]})  # batched
    assert r.status_code == 200 and r.json()["observed"] == 2
    after = await scrape(http, main_server)
    assert after["latency_end_to_end_count"] - before["latency_end_to_end_count"] == 3
    assert after["latency_end_to_end_sum"] - before["latency_end_to_end_sum"] == pytest.approx(2.25)
    assert after["latency_end_to_end_bucket{le=0.3}"] - before["latency_end_to_end_bucket{le=0.3}"] == 1

    for bad in ({"latency": -1}, {"latency": "soon"}, {"latencies": [0.1, -0.1]}, {}):
        r = await http.post(main_server.url + "/latency", json=bad)
        assert r.status_code == 422, (bad, r.text)
        assert "latenc" in r.json()["message"]


async def test_metrics_is_valid_exposition(main_server: Server, http: httpx.AsyncClient) -> None:
    r = await http.get(main_server.url + "/metrics")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/plain; version=0.0.4")
    families = {f.name: f for f in text_string_to_metric_families(r.text)}
    assert families["latency_end_to_end"].type == "histogram"
    assert families["backend_ws_clients"].type == "gauge"
    assert families["backend_broadcast_dropped_readings"].type == "counter"
    stages = {s.labels.get("stage") for s in families["telemetry_readings"].samples}
    assert {"received", "broadcast"} <= stages


async def test_metric_data(main_server: Server, http: httpx.AsyncClient) -> None:
    before = await scrape(http, main_server)
    body = {"keys_per_min": 120, "clicks_per_min": 14, "media_title": "Moon", "nested": {"x": [1, 2]}}
    r = await http.post(main_server.url + "/metric_data", json=body)
    assert r.status_code == 200 and r.json() == {"status": "ok"}
    after = await scrape(http, main_server)
    assert after["backend_metric_data_total"] - before.get("backend_metric_data_total", 0) == 1
    r = await http.post(main_server.url + "/metric_data", json=[1, 2])
    assert r.status_code == 422 and "JSON object" in r.json()["message"]


# --- bad input ----------------------------------------------------------------------------------------------------


def _without(body: dict[str, Any], key: str) -> dict[str, Any]:
    return {k: v for k, v in body.items() if k != key}


BAD_READINGS: list[tuple[str, bytes, list[str]]] = [
    ("malformed JSON", b'{"reading_timestamp": "2024-', ["body", "Invalid JSON"]),
    ("empty body", b"", ["body", "Invalid JSON"]),
    ("not an object", b"[1, 2]", ["body", "object"]),
    ("wrong type", json.dumps({**seed_body("TEMPERATURE"), "temperature": "hot"}).encode(),
     ["temperature", "valid number"]),
    ("unknown telemetry_type", json.dumps({**seed_body("TEMPERATURE"), "telemetry_type": "HUMIDITY"}).encode(),
     ["telemetry_type", "HUMIDITY", "TEMPERATURE", "PRESSURE", "VELOCITY"]),
    ("missing telemetry_type", json.dumps(_without(seed_body("PRESSURE"), "telemetry_type")).encode(),
     ["telemetry_type"]),
    ("missing field", json.dumps(_without(seed_body("VELOCITY"), "sensor_id")).encode(),
     ["sensor_id", "Field required"]),
    ("unknown subsystem", json.dumps({**seed_body("PRESSURE"), "subsystem": "MOON"}).encode(),
     ["subsystem", "FUEL_TANK"]),
    ("bad timestamp", json.dumps({**seed_body("PRESSURE"), "reading_timestamp": "yesterday"}).encode(),
     ["reading_timestamp", "ISO-8601"]),
    ("other type's field set", json.dumps({**seed_body("TEMPERATURE"), "pressure": 3.0}).encode(),
     ["pressure", "null"]),
    ("unknown field", json.dumps({**seed_body("TEMPERATURE"), "humidity": 3}).encode(), ["humidity"]),
    ("sensor_id too long", json.dumps({**seed_body("TEMPERATURE"), "sensor_id": "S" * 51}).encode(),
     ["sensor_id", "50"]),
]  # fmt: skip


@pytest.mark.parametrize(("case", "body", "words"), BAD_READINGS, ids=[c[0] for c in BAD_READINGS])
async def test_bad_reading_is_422(
    main_server: Server, http: httpx.AsyncClient, case: str, body: bytes, words: list[str]
) -> None:
    r = await http.post(main_server.url + "/telem_data", content=body, headers=JSON)
    assert r.status_code == 422, r.text
    message = r.json()["message"]
    for word in words:
        assert word in message, (case, message)
    await assert_alive(http, main_server)


async def test_bad_batch_is_422(main_server: Server, http: httpx.AsyncClient) -> None:
    readings = batch_of(5)
    readings[3]["telemetry_type"] = "HUMIDITY"
    r = await http.post(main_server.url + "/telem_data/batch", json=readings)
    assert r.status_code == 422
    assert "[3].telemetry_type" in r.json()["message"] and "HUMIDITY" in r.json()["message"]

    r = await http.post(main_server.url + "/telem_data/batch", json=seed_body("VELOCITY"))  # not an array
    assert r.status_code == 422 and "array" in r.json()["message"]

    minimal = {"telemetry_type": "TEMPERATURE"}  # small enough that MAX_BATCH + 1 fit under the body limit
    r = await http.post(main_server.url + "/telem_data/batch", json=[minimal] * (MAX_BATCH + 1))
    assert r.status_code == 422 and str(MAX_BATCH) in r.json()["message"]
    await assert_alive(http, main_server)


async def test_wrong_content_type_unknown_route_and_method(main_server: Server, http: httpx.AsyncClient) -> None:
    r = await http.post(
        main_server.url + "/telem_data",
        content=json.dumps(seed_body("PRESSURE")),
        headers={"Content-Type": "text/plain"},
    )
    assert r.status_code == 415 and "application/json" in r.json()["message"]
    assert (await http.get(main_server.url + "/nope")).status_code == 404
    assert (await http.post(main_server.url + "/nope", json={})).status_code == 404
    assert (await http.get(main_server.url + "/telem_data")).status_code == 405
    await assert_alive(http, main_server)


async def test_oversized_body_is_413(main_server: Server, http: httpx.AsyncClient) -> None:
    big = b"[" + b" " * MAX_BODY + b"]"
    r = await http.post(main_server.url + "/telem_data/batch", content=big, headers=JSON)  # Content-Length
    assert r.status_code == 413
    assert str(MAX_BODY) in r.json()["message"]

    async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: the limit applies while reading
        yield b"["
        for _ in range(MAX_BODY // 65536 + 2):
            yield b" " * 65536
        yield b"]"

    r = await http.post(main_server.url + "/telem_data/batch", content=chunks(), headers=JSON)
    assert "content-length" not in r.request.headers
    assert r.status_code == 413 and str(MAX_BODY) in r.json()["message"]

    r = await http.post(main_server.url + "/telem_data/batch", json=batch_of(1000))  # under the limit
    assert r.status_code == 200
    await assert_alive(http, main_server)


async def test_cors(main_server: Server, http: httpx.AsyncClient) -> None:
    preflight = {"Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "content-type"}
    r = await http.options(main_server.url + "/latency", headers={"Origin": "http://localhost:3000", **preflight})
    assert r.status_code == 200
    assert r.headers["access-control-allow-origin"] == "http://localhost:3000"
    assert "access-control-allow-credentials" not in r.headers
    r = await http.options(main_server.url + "/latency", headers={"Origin": "http://evil.example", **preflight})
    assert "access-control-allow-origin" not in r.headers


# --- security and limits -------------------------------------------------------------------------------------------


async def test_token_required_when_set(token_server: Server, http: httpx.AsyncClient) -> None:
    url = token_server.url
    body = seed_body("TEMPERATURE")
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN}):
        for path, payload in (("/telem_data", body), ("/latency", {"latency": 1}), ("/metric_data", {})):
            r = await http.post(url + path, json=payload, headers=headers)
            assert r.status_code == 401, (path, headers)
            assert "Bearer" in r.json()["message"]
    auth = {"Authorization": f"Bearer {TOKEN}"}
    assert (await http.get(url + "/healthz")).status_code == 200  # reads stay open
    assert (await http.get(url + "/metrics")).status_code == 200

    for ws_url in (token_server.ws_url, token_server.ws_url + "?token=wrong"):
        async with connect(ws_url) as ws:
            with pytest.raises(ConnectionClosed) as closed:
                await asyncio.wait_for(ws.recv(), 5)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1008

    async with (
        connect(token_server.ws_url + f"?token={TOKEN}&client_id=q") as by_query,
        connect(token_server.ws_url, additional_headers=auth) as by_header,
    ):
        r = await http.post(url + "/telem_data", json=body, headers=auth)
        assert r.status_code == 200
        assert await recv_json(by_query) == body
        assert await recv_json(by_header) == body
    for path, payload in (("/latency", {"latency": 1}), ("/metric_data", {})):
        assert (await http.post(url + path, json=payload, headers=auth)).status_code == 200


async def test_too_many_ws_clients(small_server: Server, http: httpx.AsyncClient) -> None:
    await wait_ws_clients(http, small_server, 0)
    clients = [await connect(small_server.ws_url + f"?client_id=c{i}") for i in range(SMALL_MAX_CLIENTS)]
    try:
        async with connect(small_server.ws_url + "?client_id=one-too-many") as extra:
            with pytest.raises(ConnectionClosed) as closed:
                await asyncio.wait_for(extra.recv(), 5)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1013
        assert f"limit {SMALL_MAX_CLIENTS}" in closed.value.rcvd.reason
        # the ones inside still work
        one = seed_body("TEMPERATURE")
        assert (await http.post(small_server.url + "/telem_data", json=one)).status_code == 200
        for ws in clients:
            assert await recv_json(ws) == one
    finally:
        for ws in clients:
            await ws.close()
    await wait_ws_clients(http, small_server, 0)
    async with connect(small_server.ws_url + "?client_id=room-again") as again:  # slots are given back
        assert (await http.post(small_server.url + "/telem_data", json=seed_body("PRESSURE"))).status_code == 200
        assert (await recv_json(again))["telemetry_type"] == "PRESSURE"


# --- in-process: the parts a running server should never show ------------------------------------------------------


async def test_unhandled_error_is_a_500_without_traceback() -> None:
    app: FastAPI = create_app(BackendSettings.from_cli([]))

    @app.get("/boom")
    async def boom() -> None:
        raise RuntimeError("secret internals")

    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        r = await client.get("/boom")
        assert r.status_code == 500
        assert r.json() == {"status": "error", "message": "internal error"}
        metrics_text = (await client.get("/metrics")).text
    assert 'telemetry_errors_total{kind="RuntimeError",stage="backend"} 1.0' in metrics_text


def test_main_rejects_bad_config(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--cors-origins", '["*"]']) == 2
    assert "'*' is not accepted" in capsys.readouterr().err
    assert main(["--log-level", "LOUD"]) == 2
    assert "LOUD" in capsys.readouterr().err


# --- the seed behaviour (--backend-behaviour seed): the seed backend's work per reading ---------------------


class GatedSocket:
    """Stands in for a websocket: records what it was sent; ``send_text`` returns once ``gate`` is set."""

    def __init__(self, gate: asyncio.Event | None = None) -> None:
        self.gate = gate
        self.got: list[str] = []

    async def send_text(self, text: str) -> None:
        if self.gate is not None:
            await self.gate.wait()
        self.got.append(text)


@pytest.mark.parametrize("behaviour", ["seed", "fast"])
async def test_seed_behaviour_answers_after_every_client_got_the_reading(behaviour: str) -> None:
    """seed: the POST's answer waits for the broadcast to every client, client by client; fast: it does not."""
    app: FastAPI = create_app(BackendSettings(backend_behaviour=behaviour))
    hub = app.state.hub
    gate = asyncio.Event()
    slow, quick = GatedSocket(gate), GatedSocket()
    for name, sock in (("slow", slow), ("quick", quick)):
        hub.add(Client(sock, name, False, 10))  # type: ignore[arg-type]
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        post = asyncio.create_task(client.post("/telem_data", json=seed_body("TEMPERATURE")))
        done, _ = await asyncio.wait({post}, timeout=0.5)
        if behaviour == "fast":  # queued for the clients' sender tasks: answered at once
            assert post in done and post.result().status_code == 200
            return
        assert not done, "the seed behaviour answered before a websocket client had the reading"
        gate.set()
        r = await asyncio.wait_for(post, 5)
    assert r.status_code == 200 and r.json() == {"status": "ok"}
    assert len(slow.got) == len(quick.got) == 1 and slow.got == quick.got
    got = json.loads(slow.got[0])
    # the seed's model_dump_json: the reading's own fields (the other types' nulls dropped), the timing keys kept
    assert got == {**{k: v for k, v in seed_body("TEMPERATURE").items() if v is not None},
                   "intended_ns": None, "sent_ns": None, "ingested_ns": None}  # fmt: skip


async def test_seed_behaviour_end_to_end(server_factory: Callable[..., Server], http: httpx.AsyncClient) -> None:
    """A real ``--backend-behaviour seed`` server: the seed's bodies broadcast, FastAPI's own 422s for bad bodies, a
    print per POST and uvicorn's access log in its log."""
    server = server_factory("seed", "--backend-behaviour", "seed")
    async with connect(server.ws_url + "?client_id=seed-page") as ws, connect(server.ws_url + "?batch=1") as batched:
        await wait_ws_clients(http, server, 2)
        for kind in ("TEMPERATURE", "PRESSURE", "VELOCITY"):
            body = seed_body(kind)
            body["intended_ns"] = 17
            r = await http.post(server.url + "/telem_data", content=json.dumps(body), headers=JSON)
            assert r.status_code == 200 and r.json() == {"status": "ok"}, r.text
            got = await recv_json(ws)
            assert got["telemetry_type"] == kind and got["intended_ns"] == 17
            assert all(got[k] == v for k, v in body.items() if v is not None)
            assert await recv_json(batched) == [got]
        r = await http.post(server.url + "/telem_data/batch", json=batch_of(3))
        assert r.status_code == 200 and r.json()["received"] == 3
        assert [(await recv_json(ws))["sequence_number"] for _ in range(3)] == [0, 1, 2]

    bad = [
        (b'{"reading_timestamp": "2024-', "json_invalid"),
        (json.dumps({**seed_body("TEMPERATURE"), "telemetry_type": "HUMIDITY"}).encode(), "union_tag_invalid"),
        (json.dumps(_without(seed_body("VELOCITY"), "sensor_id")).encode(), "missing"),
        (json.dumps({**seed_body("PRESSURE"), "pressure": "high"}).encode(), "float_parsing"),
    ]
    for raw, error_type in bad:
        r = await http.post(server.url + "/telem_data", content=raw, headers=JSON)
        assert r.status_code == 422, r.text
        detail = r.json()["detail"]  # FastAPI's own validation error body, as the seed's backend answered
        assert detail[0]["loc"][0] == "body" and detail[0]["type"] == error_type, detail
    metrics_text = (await http.get(server.url + "/metrics")).text
    assert 'telemetry_errors_total{kind="invalid_body",stage="backend"} 4.0' in metrics_text

    server.proc.terminate()  # stdout is a file (block-buffered): read the prints once the server has exited
    server.proc.wait(10)
    log = server.log.read_text()
    assert log.count('{"reading_timestamp":"2024-05-01T12:00:00.123456Z","telemetry_type":') == 6  # one per reading
    assert log.count("broadcasting to 2 websocket clients") == 6
    assert log.count('"POST /telem_data HTTP/1.1" 200') == 3  # uvicorn's access log
    assert log.count('"POST /telem_data HTTP/1.1" 422') == 4


def test_behaviour_is_checked(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--backend-behaviour", "slow"]) == 2
    err = capsys.readouterr().err
    assert "slow" in err and "fast" in err and "seed" in err


# --- the fault hook (the backend_503 fault's one fake): off by default, SIGUSR1 → 503 until SIGUSR2 -----------------


def test_fault_hook_is_off_by_default() -> None:
    from harness.faults.kinds import backend_503
    from pipeline.backend.fault_hook import OFF, ON, Unavailable

    assert (backend_503.HOOK_ON, backend_503.HOOK_OFF) == (ON, OFF)  # the harness signals what the hook expects

    assert not BackendSettings.from_cli([]).fault_hook
    assert not any(m.cls is Unavailable for m in create_app(BackendSettings.from_cli([])).user_middleware)
    hooked = create_app(BackendSettings.from_cli(["--fault-hook"]))
    assert next(m.cls for m in hooked.user_middleware) is Unavailable  # outermost


@pytest.mark.parametrize("behaviour", ["fast", "seed"])
async def test_fault_hook_answers_503_between_sigusr1_and_sigusr2(
    server_factory: Callable[..., Server], http: httpx.AsyncClient, behaviour: str
) -> None:
    """With ``--fault-hook``: SIGUSR1 makes both reading POSTs answer 503 (nothing received, nothing broadcast, the
    connection kept), everything else answers as usual; SIGUSR2 ends it. Each 503 is counted."""
    import signal

    server = server_factory(f"hook-{behaviour}", "--fault-hook", "--backend-behaviour", behaviour)
    one = json.dumps(seed_body("TEMPERATURE"))

    async def received() -> float:
        return (await scrape(http, server)).get("telemetry_readings_total{stage=received}", 0.0)

    async with connect(server.ws_url + "?batch=1") as ws:
        await wait_ws_clients(http, server, 1)
        assert (await http.post(server.url + "/telem_data", content=one, headers=JSON)).status_code == 200
        assert len(await recv_json(ws)) == 1
        server.proc.send_signal(signal.SIGUSR1)
        for _ in range(200):  # the signal is handled by the server's event loop
            r = await http.post(server.url + "/telem_data", content=one, headers=JSON)
            if r.status_code == 503:
                break
            assert len(await recv_json(ws)) == 1  # answered normally before the switch: broadcast as usual
            await asyncio.sleep(0.01)
        before = await received()
        r = await http.post(server.url + "/telem_data/batch", json=batch_of(3))
        assert r.status_code == 503 and r.headers["retry-after"] == "1"
        assert r.json() == {"status": "error", "message": "backend unavailable (fault hook: SIGUSR1 until SIGUSR2)"}
        assert (await http.post(server.url + "/latency", json={"latency": 0.1})).status_code == 200
        assert (await http.get(server.url + "/healthz")).status_code == 200
        assert await received() == before
        samples = await scrape(http, server)
        assert samples["telemetry_errors_total{kind=unavailable,stage=backend}"] == 2.0
        server.proc.send_signal(signal.SIGUSR2)
        for _ in range(200):
            r = await http.post(server.url + "/telem_data/batch", json=batch_of(2))
            if r.status_code == 200:
                break
            assert r.status_code == 503
            await asyncio.sleep(0.01)
        got: list[int] = []
        while len(got) < 2:  # seed: one message per reading, even to a batched client
            got += [x["sequence_number"] for x in await recv_json(ws)]
        assert got == [0, 1]  # nothing from the 503s came through
        assert await received() == before + 2
    assert server.proc.poll() is None  # the signals switched the hook; they did not stop the server
