"""``WS /ws?client_id=<id>[&batch=1][&token=<token>]``: one subscriber's connection, from handshake to cleanup."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from fastapi import WebSocket
from prometheus_client import Counter
from starlette.websockets import WebSocketState

from pipeline.backend.guard import Guard
from pipeline.backend.hub import Client, Hub

log = logging.getLogger("pipeline.backend")


def _flag(value: str | None) -> bool:
    return (value or "").lower() in ("1", "true", "yes", "on")


async def serve_client(
    websocket: WebSocket, guard: Guard, hub: Hub, tasks: set[asyncio.Task[Any]], errors: Counter
) -> None:
    """Check the token and the client limit, register the client, run it until it or its sender ends.

    Close codes: 1008 missing or wrong token, 1013 over ``max_ws_clients``, 1011 when sending failed while the
    client was still there. ``tasks`` holds the running tasks, so the app can cancel them at shutdown.
    """
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
        receiver = asyncio.create_task(_until_disconnect(websocket), name=f"ws-recv-{client.client_id}")
        tasks.add(receiver)
        if hub.awaited:  # the POST handlers send; this task only waits for the client to leave
            await asyncio.wait((receiver,))
        else:
            sender = asyncio.create_task(client.pump(hub.dropped), name=f"ws-send-{client.client_id}")
            tasks.add(sender)
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
