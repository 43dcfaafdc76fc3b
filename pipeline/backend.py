"""The dashboard backend: FastAPI on uvicorn, wire-compatible with the seed's Next.js page and Python client.

Run: ``python -m pipeline.backend [--port N] [--host H] [--api-token T] ...`` (flags: ``BackendSettings``).

HTTP. Every POST takes a JSON body (``Content-Type: application/json``); when ``--api-token`` is set, POSTs
also need ``Authorization: Bearer <token>``.

- ``POST /telem_data``: one flat reading (the seed's 16 keys, nulls allowed for the other types' fields, plus
  the optional integer timing keys ``intended_ns``, ``sent_ns``, ``ingested_ns``), validated as a union
  discriminated on ``telemetry_type``. 200 ``{"status": "ok"}``; the validated reading is broadcast.
- ``POST /telem_data/batch``: a JSON array of at most ``MAX_BATCH`` such readings.
  200 ``{"status": "ok", "received": n}``.
- ``POST /latency``: ``{"latency": seconds}`` and/or ``{"latencies": [seconds, ...]}`` (finite, >= 0),
  observed in ``latency_end_to_end``. 200 ``{"status": "ok", "observed": n}``.
- ``POST /metric_data``: any JSON object (the seed's user metrics), counted. 200 ``{"status": "ok"}``.
- ``GET /healthz``: ``{"status": "ok", "ws_clients": n}``. ``GET /metrics``: Prometheus exposition.
- ``GET /openapi.json``: the API's schema, with every request body declared (schemathesis fuzzes against it).
- ``GET /``: the live dashboard (``pipeline/static/index.html``; plain HTML/CSS/JS, no build step), and
  ``GET /static/<file>``: its assets. Public, like ``/healthz``: the page holds no data until its websocket
  (which needs the token) connects. Open it as ``/?token=<token>`` when ``--api-token`` is set.

Errors are JSON ``{"status": "error", "message": "...", ...}``: 401 missing or wrong token, 413 body over
``--max-body-bytes``, 415 not JSON, 422 invalid body (``detail`` lists the first errors), 404/405 unknown
route, 500 (never expected) without a traceback.

Websocket ``/ws?client_id=<id>[&batch=1][&token=<token>]`` (or the Authorization header): one JSON reading
per text message, or with ``batch=1`` one JSON array per POST. Every client has its own bounded queue
(``--ws-buffer`` messages) and its own sender task, so a slow or dead client only loses its own messages
(counted in ``backend_broadcast_dropped_readings``). Close codes: 1008 missing or wrong token, 1013 over
``--max-ws-clients``.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import re
import sys
from collections.abc import AsyncIterator, Iterable
from pathlib import Path
from typing import Annotated, Any, Literal, NotRequired

import orjson
import uvicorn
from fastapi import FastAPI, Request, WebSocket
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import FileResponse, Response
from prometheus_client import REGISTRY, Counter
from prometheus_client.exposition import choose_encoder
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, model_validator
from starlette.websockets import WebSocketState
from typing_extensions import TypedDict

from pipeline import metrics
from pipeline.config import BackendSettings, ConfigError

log = logging.getLogger("pipeline.backend")

MAX_BATCH = 10_000
"""Readings per POST /telem_data/batch (a reading is ~350 bytes of JSON: 10 000 fit the default 8 MiB)."""
MAX_LATENCIES = 100_000
"""Values per POST /latency ``latencies``."""
MAX_ERRORS_SHOWN = 20
"""Validation errors listed in a 422 body (the count of all of them is given too)."""

TELEMETRY_TYPES = ("TEMPERATURE", "PRESSURE", "VELOCITY")

STATIC_DIR = Path(__file__).resolve().parent / "static"
"""The dashboard's files, shipped as package data."""
STATIC_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".ico": "image/x-icon",
}
"""Content types of the files served under /static (fixed here: the OS's mimetypes table may say text/plain)."""
STATIC_NAME = re.compile(r"^[A-Za-z0-9_-][A-Za-z0-9_.-]*$")  # one file of STATIC_DIR: no separators, no dotfiles

# --- the reading schema -------------------------------------------------------------------------------------
# TypedDicts, not models: pydantic-core validates straight into dicts, so there is no model → dict step before
# encoding, and a reading comes out with exactly the keys it came in with (a seed body's nulls included), in
# table (COLUMNS) order. The other types' fields may be absent or null, nothing else. Bounds follow the wire
# (int32 sequence, uint32 bitmask) and the table (varchar lengths). Lax mode (pydantic's default).

ISO_8601 = r"^\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}(:\d{2}(\.\d{1,9})?)?(Z|z|[+-]\d{2}(:?\d{2})?)?$"

Timestamp = Annotated[str, Field(pattern=ISO_8601, max_length=40)]
SensorId = Annotated[str, Field(max_length=50)]
Unit = Annotated[str, Field(max_length=10)]
Subsystem = Literal["UNKNOWN_SYSTEM", "ENGINE", "FUEL_TANK", "AVIONICS", "TURBOPUMP", "GUIDANCE", "STAGE1", "STAGE2"]
Int32 = Annotated[int, Field(ge=-(2**31), le=2**31 - 1)]
UInt32 = Annotated[int, Field(ge=0, le=2**32 - 1)]
Int64 = Annotated[int, Field(ge=-(2**63), le=2**63 - 1)]


class TemperatureReading(TypedDict):
    __pydantic_config__ = ConfigDict(extra="forbid")  # type: ignore[misc]

    reading_timestamp: Timestamp
    telemetry_type: Literal["TEMPERATURE"]
    sensor_id: SensorId
    subsystem: Subsystem
    sequence_number: Int32
    status_bitmask: UInt32
    temperature: float
    temp_unit: Unit
    pressure: NotRequired[None]
    pressure_unit: NotRequired[None]
    leak_detected: NotRequired[None]
    velocity_x: NotRequired[None]
    velocity_y: NotRequired[None]
    velocity_z: NotRequired[None]
    velocity_unit: NotRequired[None]
    vibration_magnitude: NotRequired[None]
    intended_ns: NotRequired[Int64 | None]
    sent_ns: NotRequired[Int64 | None]
    ingested_ns: NotRequired[Int64 | None]


class PressureReading(TypedDict):
    __pydantic_config__ = ConfigDict(extra="forbid")  # type: ignore[misc]

    reading_timestamp: Timestamp
    telemetry_type: Literal["PRESSURE"]
    sensor_id: SensorId
    subsystem: Subsystem
    sequence_number: Int32
    status_bitmask: UInt32
    temperature: NotRequired[None]
    temp_unit: NotRequired[None]
    pressure: float
    pressure_unit: Unit
    leak_detected: NotRequired[bool | None]
    velocity_x: NotRequired[None]
    velocity_y: NotRequired[None]
    velocity_z: NotRequired[None]
    velocity_unit: NotRequired[None]
    vibration_magnitude: NotRequired[None]
    intended_ns: NotRequired[Int64 | None]
    sent_ns: NotRequired[Int64 | None]
    ingested_ns: NotRequired[Int64 | None]


class VelocityReading(TypedDict):
    __pydantic_config__ = ConfigDict(extra="forbid")  # type: ignore[misc]

    reading_timestamp: Timestamp
    telemetry_type: Literal["VELOCITY"]
    sensor_id: SensorId
    subsystem: Subsystem
    sequence_number: Int32
    status_bitmask: UInt32
    temperature: NotRequired[None]
    temp_unit: NotRequired[None]
    pressure: NotRequired[None]
    pressure_unit: NotRequired[None]
    leak_detected: NotRequired[None]
    velocity_x: float
    velocity_y: float
    velocity_z: float
    velocity_unit: Unit
    vibration_magnitude: NotRequired[float | None]
    intended_ns: NotRequired[Int64 | None]
    sent_ns: NotRequired[Int64 | None]
    ingested_ns: NotRequired[Int64 | None]


Reading = Annotated[TemperatureReading | PressureReading | VelocityReading, Field(discriminator="telemetry_type")]
READING: TypeAdapter[Any] = TypeAdapter(Reading)
READINGS: TypeAdapter[Any] = TypeAdapter(Annotated[list[Reading], Field(max_length=MAX_BATCH)])

NonNegativeSeconds = Annotated[float, Field(ge=0, allow_inf_nan=False)]


REF = "#/components/schemas/{model}"


SCHEMA_DEFS: dict[str, Any] = {}  # the bodies' shared definitions, published under components/schemas


def _body(schema: dict[str, Any]) -> dict[str, Any]:
    """An OpenAPI requestBody for a JSON schema; its $defs go to components/schemas (see create_app)."""
    SCHEMA_DEFS.update(schema.pop("$defs", {}))
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": schema}}}}


class LatencyReport(BaseModel):
    """The seed page's ``{"latency": s}``, or a batch ``{"latencies": [s, ...]}`` (both may be given)."""

    latency: NonNegativeSeconds | None = None
    latencies: Annotated[list[NonNegativeSeconds], Field(max_length=MAX_LATENCIES)] | None = None

    @model_validator(mode="after")
    def _one_given(self) -> LatencyReport:
        if self.latency is None and not self.latencies:
            raise ValueError("give 'latency' (seconds) or 'latencies' (a list of seconds)")
        return self


# --- errors -------------------------------------------------------------------------------------------------


class ApiError(Exception):
    """An answered client error: rendered as ``{"status": "error", "message": ...}`` and counted."""

    def __init__(
        self, status: int, kind: str, message: str, headers: dict[str, str] | None = None, **extra: Any
    ) -> None:
        super().__init__(message)
        self.status, self.kind, self.message, self.headers, self.extra = status, kind, message, headers, extra


def _json(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(body), status_code=status, media_type="application/json", headers=headers)


OK = b'{"status":"ok"}'


def _ok() -> Response:
    return Response(OK, media_type="application/json")


def _render_loc(loc: Iterable[int | str]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part in TELEMETRY_TYPES:  # the discriminated union's branch: said in the message instead
            continue
        else:
            out += f".{part}" if out else str(part)
    return out


def validation_error(exc: ValidationError, what: str) -> ApiError:
    """422 naming each bad field and its problem (the first MAX_ERRORS_SHOWN of them)."""
    errors = exc.errors(include_url=False, include_context=False, include_input=False)
    detail, lines = [], []
    for err in errors[:MAX_ERRORS_SHOWN]:
        loc = err["loc"]
        where = _render_loc(loc)
        if err["type"] in ("union_tag_invalid", "union_tag_not_found"):
            where = f"{where}.telemetry_type" if where else "telemetry_type"
        elif err["type"] == "json_invalid":
            where = "body"
        branch = next((p for p in loc if p in TELEMETRY_TYPES), None)
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            msg = "unknown field (not part of a reading)"
        elif err["type"] == "string_pattern_mismatch" and loc[-1] == "reading_timestamp":
            msg = "must be an ISO-8601 timestamp like 2024-05-01T12:00:00.123456Z"
        elif err["type"] == "none_required" and branch:
            msg = f"must be null in a {branch} reading"
        if branch and err["type"] != "none_required":
            msg = f"{msg} ({branch} reading)"
        where = where or "body"
        lines.append(f"{where}: {msg}")
        detail.append({"loc": [str(p) for p in loc], "field": where, "type": err["type"], "msg": msg})
    more = len(errors) - len(detail)
    message = f"invalid {what}: " + "; ".join(lines) + (f"; and {more} more" if more > 0 else "")
    return ApiError(422, "invalid_body", message, detail=detail, error_count=len(errors))


# --- websocket fan-out --------------------------------------------------------------------------------------


class Client:
    """One websocket subscriber: a bounded queue of (text, readings) messages, drained by its own task."""

    __slots__ = ("batch", "client_id", "queue", "ws")

    def __init__(self, ws: WebSocket, client_id: str, batch: bool, buffer: int) -> None:
        self.ws, self.client_id, self.batch = ws, client_id, batch
        self.queue: asyncio.Queue[tuple[str, int]] = asyncio.Queue(buffer)

    def offer(self, text: str, n: int) -> int:
        """Queue one message holding n readings; returns the readings dropped (0 or n)."""
        try:
            self.queue.put_nowait((text, n))
        except asyncio.QueueFull:
            return n
        return 0

    def offer_each(self, texts: list[str]) -> int:
        """Queue one message per reading, as many as fit; returns the readings dropped."""
        q = self.queue
        room = q.maxsize - q.qsize()
        for text in texts[:room] if room < len(texts) else texts:
            q.put_nowait((text, 1))
        return max(0, len(texts) - room)

    async def pump(self, dropped: Counter) -> None:
        """Send queued messages until the socket fails or the task is cancelled; counts what was sent.

        A message taken from the queue but not sent (the client left, or stalled until shutdown) counts as
        dropped, so for every client: readings offered = sent + dropped.
        """
        q, send = self.queue, self.ws.send_text
        while True:
            text, n = await q.get()
            sent = 0
            try:
                await send(text)
                sent = n
                for _ in range(1023):  # whatever queued meanwhile, before touching the counter again
                    if q.empty():
                        break
                    text, n = q.get_nowait()
                    await send(text)
                    sent += n
            except BaseException:
                dropped.inc(n)
                raise
            finally:
                if sent:
                    metrics.count("broadcast", sent)


class Hub:
    """The set of websocket clients. ``publish`` never awaits: it only puts into each client's queue."""

    def __init__(self, buffer: int, max_clients: int) -> None:
        self.buffer, self.max_clients = buffer, max_clients
        self.clients: set[Client] = set()
        self._gauge = metrics.ws_clients()
        self.dropped = metrics.broadcast_dropped()

    def add(self, client: Client) -> None:
        self.clients.add(client)
        self._gauge.set(len(self.clients))

    def remove(self, client: Client) -> None:
        self.clients.discard(client)
        self._gauge.set(len(self.clients))
        left = 0  # queued for a client that is gone: never delivered
        while not client.queue.empty():
            left += client.queue.get_nowait()[1]
        if left:
            self.dropped.inc(left)

    def publish(self, readings: list[dict[str, Any]]) -> None:
        """Encode once per message shape, then put_nowait into every client's queue (drop when full)."""
        if not self.clients or not readings:
            return
        each: list[str] | None = None
        whole: str | None = None
        dropped = 0
        for client in self.clients:  # no await in this loop: the set cannot change under it
            if client.batch:
                if whole is None:
                    whole = "[" + ",".join(each) + "]" if each else orjson.dumps(readings).decode()
                dropped += client.offer(whole, len(readings))
            else:
                if each is None:
                    each = [orjson.dumps(r).decode() for r in readings]
                dropped += client.offer_each(each)
        if dropped:
            self.dropped.inc(dropped)


# --- request helpers ----------------------------------------------------------------------------------------


class Guard:
    """Auth, content type and body size checks shared by the POST endpoints."""

    def __init__(self, settings: BackendSettings) -> None:
        self.token = settings.api_token.encode() if settings.api_token else None
        self.max_body = settings.max_body_bytes

    def token_ok(self, presented: str | None) -> bool:
        return self.token is None or (presented is not None and hmac.compare_digest(presented.encode(), self.token))

    @staticmethod
    def bearer(authorization: str | None) -> str | None:
        if not authorization:
            return None
        scheme, _, value = authorization.partition(" ")
        return value.strip() if scheme.lower() == "bearer" else None

    async def body(self, request: Request) -> bytes:
        """Check the token and content type, then read the body, refusing it past max_body bytes."""
        headers = request.headers
        if self.token is not None and not self.token_ok(self.bearer(headers.get("authorization"))):
            raise ApiError(
                401, "unauthorized", "missing or wrong API token: send 'Authorization: Bearer <token>'",
                headers={"WWW-Authenticate": "Bearer"},
            )  # fmt: skip
        ctype = headers.get("content-type", "")
        mime = ctype.partition(";")[0].strip().lower()
        if mime != "application/json" and not (mime.startswith("application/") and mime.endswith("+json")):
            raise ApiError(
                415, "unsupported_media_type",
                f"Content-Type must be application/json, got {ctype or 'none'!r}",
            )  # fmt: skip
        length = headers.get("content-length")
        if length is not None:
            try:
                declared = int(length)
            except ValueError:
                raise ApiError(400, "bad_request", f"invalid Content-Length {length!r}") from None
            if declared > self.max_body:
                raise self.too_large(declared)
        chunks: list[bytes] = []
        size = 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > self.max_body:  # chunked (or lying) bodies: enforced while reading
                raise self.too_large(None)
            chunks.append(chunk)
        return chunks[0] if len(chunks) == 1 else b"".join(chunks)

    def too_large(self, declared: int | None) -> ApiError:
        got = f"{declared} bytes" if declared is not None else "a larger body"
        return ApiError(
            413, "body_too_large", f"request body too large: {got}; the limit is {self.max_body} bytes",
            limit=self.max_body,
        )  # fmt: skip


def _flag(value: str | None) -> bool:
    return (value or "").lower() in ("1", "true", "yes", "on")


# --- the app ------------------------------------------------------------------------------------------------


def create_app(settings: BackendSettings) -> FastAPI:
    hub = Hub(settings.ws_buffer, settings.max_ws_clients)
    guard = Guard(settings)
    tasks: set[asyncio.Task[Any]] = set()
    errors = metrics.errors()
    latency = metrics.latency_end_to_end()
    metric_data = metrics.backend_metric_data()
    for stage in ("received", "broadcast"):  # exposed at 0 from the start
        metrics.readings().labels(stage)

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        yield
        for task in list(tasks):
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)

    # /openapi.json describes every body (the handlers validate raw bodies themselves, for speed, so the schemas
    # are declared here): schemathesis fuzzes the backend against it
    app = FastAPI(
        title="telemetry-bench backend", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url="/openapi.json"
    )
    app.state.hub = hub
    app.add_middleware(
        CORSMiddleware,
        allow_origins=list(settings.cors_origins),
        allow_credentials=False,
        allow_methods=["GET", "POST", "OPTIONS"],
        allow_headers=["Authorization", "Content-Type"],
        max_age=600,
    )

    @app.exception_handler(ApiError)
    async def _api_error(_request: Request, exc: ApiError) -> Response:
        errors.labels("backend", exc.kind).inc()
        return _json({"status": "error", "message": exc.message, **exc.extra}, exc.status, exc.headers)

    @app.exception_handler(Exception)
    async def _unhandled(_request: Request, exc: Exception) -> Response:  # should never be hit
        # Starlette re-raises after this response is sent, so uvicorn still logs the traceback (server side).
        errors.labels("backend", type(exc).__name__).inc()
        return _json({"status": "error", "message": "internal error"}, 500)

    @app.post("/telem_data", openapi_extra=_body(READING.json_schema(ref_template=REF)))
    async def telem_data(request: Request) -> Response:
        body = await guard.body(request)
        try:
            reading = READING.validate_json(body)
        except ValidationError as exc:
            raise validation_error(exc, "reading") from None
        metrics.count("received", 1)
        hub.publish([reading])
        return _ok()

    @app.post("/telem_data/batch", openapi_extra=_body(READINGS.json_schema(ref_template=REF)))
    async def telem_data_batch(request: Request) -> Response:
        body = await guard.body(request)
        try:
            readings = READINGS.validate_json(body)
        except ValidationError as exc:
            raise validation_error(exc, f"batch (a JSON array of at most {MAX_BATCH} readings)") from None
        if readings:
            metrics.count("received", len(readings))
            hub.publish(readings)
        return _json({"status": "ok", "received": len(readings)})

    @app.post("/latency", openapi_extra=_body(LatencyReport.model_json_schema(ref_template=REF)))
    async def post_latency(request: Request) -> Response:
        body = await guard.body(request)
        try:
            report = LatencyReport.model_validate_json(body)
        except ValidationError as exc:
            raise validation_error(exc, "latency report") from None
        values = report.latencies or []
        if report.latency is not None:
            values = [report.latency, *values]
        for v in values:
            latency.observe(v)
        return _json({"status": "ok", "observed": len(values)})

    @app.post("/metric_data", openapi_extra=_body({"type": "object"}))
    async def post_metric_data(request: Request) -> Response:
        body = await guard.body(request)
        try:
            data = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            raise ApiError(422, "invalid_body", f"invalid metric data: body: invalid JSON: {exc}") from None
        if not isinstance(data, dict):
            raise ApiError(
                422,
                "invalid_body",
                f"invalid metric data: body: must be a JSON object, got {type(data).__name__}",
            )
        metric_data.inc()
        return _ok()

    @app.get("/healthz")
    async def healthz() -> Response:
        return _json({"status": "ok", "ws_clients": len(hub.clients)})

    @app.get("/metrics")
    async def get_metrics(request: Request) -> Response:
        # prometheus_client's own negotiation: text 0.0.4 by default, OpenMetrics when the scraper asks for it
        encode, content_type = choose_encoder(request.headers.get("accept", ""))
        return Response(encode(REGISTRY), media_type=content_type)

    @app.api_route("/", methods=["GET", "HEAD"], include_in_schema=False)
    async def index() -> Response:
        return _static_file("index.html")

    @app.api_route("/static/{name}", methods=["GET", "HEAD"], include_in_schema=False)
    async def static(name: str) -> Response:
        return _static_file(name)

    default_openapi = app.openapi

    def openapi_with_body_schemas() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = default_openapi()
            schema.setdefault("components", {}).setdefault("schemas", {}).update(SCHEMA_DEFS)
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi_with_body_schemas  # type: ignore[method-assign]

    @app.websocket("/ws")
    async def ws(websocket: WebSocket) -> None:
        params = websocket.query_params
        if not guard.token_ok(params.get("token") or guard.bearer(websocket.headers.get("authorization"))):
            errors.labels("backend", "ws_unauthorized").inc()
            await _refuse(websocket, 1008, "missing or wrong API token: add ?token=<token>")
            return
        if len(hub.clients) >= hub.max_clients:
            errors.labels("backend", "ws_too_many_clients").inc()
            await _refuse(websocket, 1013, f"too many websocket clients (limit {hub.max_clients}); retry later")
            return
        client = Client(websocket, params.get("client_id", ""), _flag(params.get("batch")), hub.buffer)
        hub.add(client)  # before the first await, so concurrent handshakes cannot exceed the limit
        sender = receiver = None
        try:
            await websocket.accept()
            sender = asyncio.create_task(client.pump(hub.dropped), name=f"ws-send-{client.client_id}")
            receiver = asyncio.create_task(_until_disconnect(websocket), name=f"ws-recv-{client.client_id}")
            tasks.update((sender, receiver))
            await asyncio.wait((sender, receiver), return_when=asyncio.FIRST_COMPLETED)
            if not receiver.done():  # the send side failed while the client is still there
                with contextlib.suppress(Exception):
                    await websocket.close(1011, "send failed")
        except Exception as exc:  # a handshake that failed: the client is gone
            log.debug("websocket %r: %s", client.client_id, exc)
        finally:
            hub.remove(client)
            running = [t for t in (sender, receiver) if t is not None]
            for t in running:
                t.cancel()
            if running:
                results = await asyncio.gather(*running, return_exceptions=True)
                tasks.difference_update(running)
                for r in results:
                    if isinstance(r, Exception) and not isinstance(r, OSError | RuntimeError):
                        log.debug("websocket %r ended: %r", client.client_id, r)

    return app


def _static_file(name: str) -> Response:
    """One dashboard file with its content type; no-cache: browsers revalidate, so an upgrade shows at once."""
    path = STATIC_DIR / name
    media_type = STATIC_TYPES.get(path.suffix)
    if media_type is None or not STATIC_NAME.match(name) or not path.is_file():
        return _json({"status": "error", "message": f"no such file: /static/{name}"}, 404)
    return FileResponse(path, media_type=media_type, headers={"Cache-Control": "no-cache"})


async def _until_disconnect(websocket: WebSocket) -> None:
    """Read (and ignore) what the client sends until it goes away."""
    while True:
        message = await websocket.receive()
        if message["type"] == "websocket.disconnect":
            return


async def _refuse(websocket: WebSocket, code: int, reason: str) -> None:
    """Accept, then close with a code: closing before accepting would only give the client an HTTP 403."""
    with contextlib.suppress(Exception):
        await websocket.accept()
        if websocket.application_state == WebSocketState.CONNECTED:
            await websocket.close(code, reason)


# --- main ---------------------------------------------------------------------------------------------------

LOG_LEVELS = {"critical": "critical", "error": "error", "warning": "warning", "warn": "warning",
              "info": "info", "debug": "debug", "trace": "trace"}  # fmt: skip


class RedactToken(logging.Filter):
    """uvicorn logs websocket paths with their query string: hide ``token=...``."""

    pattern = re.compile(r"(token=)[^&\s\"]*", re.IGNORECASE)

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(self.pattern.sub(r"\1***", a) if isinstance(a, str) else a for a in record.args)
        return True


def main(argv: list[str] | None = None) -> int:
    try:
        settings = BackendSettings.from_cli(argv)
    except ConfigError as exc:
        print(exc.message, file=sys.stderr)
        return 2
    level = LOG_LEVELS.get(settings.log_level.lower())
    if level is None:
        print(f"BackendSettings: --log-level = {settings.log_level!r}: valid levels: "
              f"{', '.join(sorted(set(LOG_LEVELS.values())))}", file=sys.stderr)  # fmt: skip
        return 2
    logging.basicConfig(
        level=logging.getLevelName(level.upper()) if level != "trace" else 5,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if settings.metrics_port:  # the seed served its backend metrics on a port of their own (8002)
        metrics.serve(settings.metrics_port, settings.host)
    config = uvicorn.Config(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        log_level=level,
        access_log=False,
        loop="auto",  # uvloop when installed
        http="auto",  # httptools when installed
        ws_per_message_deflate=False,  # compressing every broadcast costs more CPU than loopback bandwidth
        ws_max_size=1024 * 1024,  # clients have nothing to send us
        timeout_graceful_shutdown=5,
        lifespan="on",
    )
    logging.getLogger("uvicorn.error").addFilter(RedactToken())
    server = uvicorn.Server(config)
    server.run()
    return 0 if server.started else 1


if __name__ == "__main__":
    raise SystemExit(main())
