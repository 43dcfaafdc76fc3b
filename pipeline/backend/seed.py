"""The ``seed`` behaviour (``--backend-behaviour seed``): the seed backend's per-reading work, no less and no more.

Per ``POST /telem_data``: FastAPI validates the body into the seed's discriminated union of pydantic models
(``schema.SeedReading``), the handler ``model_dump_json()``s it, ``print``s it, and awaits ``send_text`` to every
websocket client in turn (``Hub.send_awaited``, a ``print`` before the loop) *before* it answers; the answer is a
small dict through FastAPI's encoder. uvicorn runs with its access log on and websocket per-message deflate at its
default (``server.py``). A bad body gets FastAPI's own 422 ``{"detail": [...]}``, as the seed's did.

Kept from the fast behaviour (the seed had no such thing, and the harness relies on them): the bearer token when
``--api-token`` is set, the counters, ``/telem_data/batch`` (validated as in the fast behaviour, then each reading
printed and broadcast as above), ``/latency``, ``/metric_data``, ``/healthz``, ``/metrics``. Not applied to the
seed's ``/telem_data``, as in the seed: the Content-Type check and ``--max-body-bytes`` (FastAPI reads the body).
"""

from __future__ import annotations

from typing import Any

import orjson
from fastapi import Depends, FastAPI, Request
from fastapi.exception_handlers import request_validation_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from prometheus_client import Counter

from pipeline import metrics
from pipeline.backend.guard import Guard
from pipeline.backend.hub import Hub
from pipeline.backend.routes import batch_body, read_batch
from pipeline.backend.schema import SeedReading


def add_seed_reading_routes(app: FastAPI, guard: Guard, hub: Hub, errors: Counter) -> None:
    """``POST /telem_data`` and ``POST /telem_data/batch``, each answering after every client got the reading."""
    deps = [Depends(guard.check_token)] if guard.token is not None else []

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> Response:
        errors.labels("backend", "invalid_body").inc()
        return await request_validation_exception_handler(request, exc)

    @app.post("/telem_data", dependencies=deps, response_model=None)
    async def telem_data(reading: SeedReading) -> dict[str, Any]:
        if guard.delay is not None:
            await guard.delay(1)
        text = reading.model_dump_json()
        print(text)
        metrics.count("received", 1)
        await hub.send_awaited(text)
        return {"status": "ok"}

    @app.post("/telem_data/batch", openapi_extra=batch_body())
    async def telem_data_batch(request: Request) -> dict[str, Any]:
        readings = await read_batch(guard, request)
        if guard.delay is not None:
            await guard.delay(len(readings))
        metrics.count("received", len(readings))
        for r in readings:
            text = orjson.dumps(r).decode()
            print(text)
            await hub.send_awaited(text)
        return {"status": "ok", "received": len(readings)}
