"""``create_app``: the FastAPI application of one backend behaviour (``fast`` or ``seed``), assembled from the
package's parts."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

from fastapi import FastAPI, Request, WebSocket
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import Response
from prometheus_client import Counter

from pipeline import metrics
from pipeline.backend.errors import ApiError, json_response
from pipeline.backend.fault_hook import FaultHook, Unavailable
from pipeline.backend.guard import Guard
from pipeline.backend.hub import Hub
from pipeline.backend.routes import add_common_routes, add_reading_routes
from pipeline.backend.schema import SCHEMA_DEFS
from pipeline.backend.seed import add_seed_reading_routes
from pipeline.backend.static import add_static_routes
from pipeline.backend.subscriber import Subscriber
from pipeline.backend.ws import serve_client
from pipeline.config import BackendSettings


def create_app(settings: BackendSettings) -> FastAPI:
    hub = Hub(settings.ws_buffer, settings.max_ws_clients, awaited=settings.backend_behaviour == "seed")
    guard = Guard(settings)
    tasks: set[asyncio.Task[Any]] = set()
    errors = metrics.errors()
    for stage in ("received", "broadcast"):  # exposed at 0 from the start
        metrics.readings().labels(stage)
    metrics.instrumentation_seconds()

    hook = FaultHook() if settings.fault_hook else None  # off by default: the backend_503 fault's fake
    subscriber = (  # the pubsub forwarder's channel: readings arrive without an HTTP hop
        Subscriber(
            settings.redis_url, settings.pubsub_channel, hub, guard, awaited=settings.backend_behaviour == "seed"
        )
        if settings.pubsub_channel and settings.redis_url
        else None
    )

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        if hook is not None:
            hook.install()
        if subscriber is not None:
            await subscriber.start()  # before the health check answers
        yield
        if subscriber is not None:
            await subscriber.stop()
        if hook is not None:
            hook.uninstall()
        for task in list(tasks):
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)

    # /openapi.json describes every body (schemathesis fuzzes the backend against it)
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
    if hook is not None:  # outermost: a 503 is answered before anything else reads the request
        app.add_middleware(Unavailable, hook=hook)
        app.state.fault_hook = hook
    _add_error_handlers(app, errors)
    if settings.backend_behaviour == "seed":
        add_seed_reading_routes(app, guard, hub, errors)
    else:
        add_reading_routes(app, guard, hub)
    add_common_routes(app, guard, hub)
    add_static_routes(app)

    @app.websocket("/ws")
    async def ws(websocket: WebSocket) -> None:
        await serve_client(websocket, guard, hub, tasks, errors)

    _publish_body_schemas(app)
    return app


def _add_error_handlers(app: FastAPI, errors: Counter) -> None:
    @app.exception_handler(ApiError)
    async def _api_error(_request: Request, exc: ApiError) -> Response:
        errors.labels("backend", exc.kind).inc()
        return json_response({"status": "error", "message": exc.message, **exc.extra}, exc.status, exc.headers)

    @app.exception_handler(Exception)
    async def _unhandled(_request: Request, exc: Exception) -> Response:  # should never be hit
        # Starlette re-raises after this response is sent, so uvicorn still logs the traceback (server side).
        errors.labels("backend", type(exc).__name__).inc()
        return json_response({"status": "error", "message": "internal error"}, 500)


def _publish_body_schemas(app: FastAPI) -> None:
    """Put the hand-declared bodies' shared definitions under the OpenAPI document's components/schemas."""
    default_openapi = app.openapi

    def openapi_with_body_schemas() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = default_openapi()
            schema.setdefault("components", {}).setdefault("schemas", {}).update(SCHEMA_DEFS)
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi_with_body_schemas  # type: ignore[method-assign]
