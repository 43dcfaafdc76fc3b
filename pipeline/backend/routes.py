"""The fast behaviour's routes: readings validated from the raw body, published without awaiting any client;
and the routes both behaviours share (latency, metric data, health, metrics)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import orjson
from fastapi import FastAPI, Request
from fastapi.responses import Response
from prometheus_client import REGISTRY
from prometheus_client.exposition import choose_encoder
from pydantic import ValidationError

from pipeline import metrics
from pipeline.backend.errors import ApiError, json_response, ok, validation_error
from pipeline.backend.guard import Guard
from pipeline.backend.hub import Hub
from pipeline.backend.schema import MAX_BATCH, READING, READINGS, REF, LatencyReport, body

T = TypeVar("T")


def add_reading_routes(app: FastAPI, guard: Guard, hub: Hub) -> None:
    """``POST /telem_data`` (one reading) and ``POST /telem_data/batch``: validate, count, ``hub.publish``."""

    @app.post("/telem_data", openapi_extra=body(READING.json_schema(ref_template=REF)))
    async def telem_data(request: Request) -> Response:
        reading = await validated(guard, request, READING.validate_json, "reading")
        if guard.delay is not None:
            await guard.delay(1)
        metrics.count("received", 1)
        hub.publish([reading])
        return ok()

    @app.post("/telem_data/batch", openapi_extra=batch_body())
    async def telem_data_batch(request: Request) -> Response:
        readings = await read_batch(guard, request)
        if guard.delay is not None:
            await guard.delay(len(readings))
        if readings:
            metrics.count("received", len(readings))
            hub.publish(readings)
        return json_response({"status": "ok", "received": len(readings)})


def batch_body() -> dict[str, object]:
    return body(READINGS.json_schema(ref_template=REF))


async def validated(guard: Guard, request: Request, parse: Callable[[bytes], T], what: str) -> T:
    """The request's body (within the guard's limits) parsed by ``parse``; a 422 naming ``what`` and the bad parts."""
    raw = await guard.body(request)
    try:
        return parse(raw)
    except ValidationError as exc:
        raise validation_error(exc, what) from None


async def read_batch(guard: Guard, request: Request) -> list[dict[str, object]]:
    """The validated readings of a ``POST /telem_data/batch`` (422 naming the bad ones)."""
    what = f"batch (a JSON array of at most {MAX_BATCH} readings)"
    readings: list[dict[str, object]] = await validated(guard, request, READINGS.validate_json, what)
    return readings


def add_common_routes(app: FastAPI, guard: Guard, hub: Hub) -> None:
    """``POST /latency``, ``POST /metric_data``, ``GET /healthz``, ``GET /metrics``."""
    latency = metrics.latency_end_to_end()
    metric_data = metrics.backend_metric_data()

    @app.post("/latency", openapi_extra=body(LatencyReport.model_json_schema(ref_template=REF)))
    async def post_latency(request: Request) -> Response:
        report = await validated(guard, request, LatencyReport.model_validate_json, "latency report")
        values = report.latencies or []
        if report.latency is not None:
            values = [report.latency, *values]
        for v in values:
            latency.observe(v)
        return json_response({"status": "ok", "observed": len(values)})

    @app.post("/metric_data", openapi_extra=body({"type": "object"}))
    async def post_metric_data(request: Request) -> Response:
        raw = await guard.body(request)
        try:
            data = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise ApiError(422, "invalid_body", f"invalid metric data: body: invalid JSON: {exc}") from None
        if not isinstance(data, dict):
            raise ApiError(
                422,
                "invalid_body",
                f"invalid metric data: body: must be a JSON object, got {type(data).__name__}",
            )
        metric_data.inc()
        return ok()

    @app.get("/healthz")
    async def healthz() -> Response:
        return json_response({"status": "ok", "ws_clients": len(hub.clients)})

    @app.get("/metrics")
    async def get_metrics(request: Request) -> Response:
        # prometheus_client's own negotiation: text 0.0.4 by default, OpenMetrics when the scraper asks for it
        encode, content_type = choose_encoder(request.headers.get("accept", ""))
        return Response(encode(REGISTRY), media_type=content_type)
