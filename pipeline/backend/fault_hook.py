"""The backend's one fake: a hook that makes it answer ``503 Service Unavailable`` for a while (the ``backend_503``
fault, ``harness.faults.kinds.backend_503``). A real backend can't be made to answer 503 from outside, so this is the
one behaviour of the backend the harness fakes; everything around it (the forwarders' retries, the accounting) is real.

Off by default: only with ``--fault-hook`` does the backend install it (``app.create_app``), and then ``SIGUSR1``
makes every ``POST /telem_data`` and ``POST /telem_data/batch`` answer 503 (``Retry-After: 1``, the body
discarded unread: nothing is counted received or broadcast) until ``SIGUSR2``. Each such answer is counted in
``telemetry_errors_total{stage="backend",kind="unavailable"}``. Without the flag there is no handler and no
middleware: no cost, and the signals keep their default action."""

from __future__ import annotations

import asyncio
import logging
import signal
from typing import Any

import orjson
from starlette.types import ASGIApp, Receive, Scope, Send

from pipeline import metrics

log = logging.getLogger("telemetry_bench.backend")

READING_PATHS = ("/telem_data", "/telem_data/batch")
ON, OFF = signal.SIGUSR1, signal.SIGUSR2
BODY = orjson.dumps({"status": "error", "message": "backend unavailable (fault hook: SIGUSR1 until SIGUSR2)"})


class FaultHook:
    """Whether the backend answers 503 now (switched by ``ON`` / ``OFF``), and how many times it did."""

    def __init__(self) -> None:
        self.unavailable = False
        self.answered = 0
        self.counter = metrics.errors().labels("backend", "unavailable")

    def switch(self, unavailable: bool) -> None:
        if unavailable != self.unavailable:
            log.warning("fault hook: POSTs of readings now answer %s", "503" if unavailable else "normally")
        self.unavailable = unavailable

    def install(self) -> None:
        """``ON`` / ``OFF`` switch the hook (the event loop's signal handlers: main thread only)."""
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(ON, self.switch, True)
        loop.add_signal_handler(OFF, self.switch, False)

    def uninstall(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (ON, OFF):
            loop.remove_signal_handler(sig)


class Unavailable:
    """ASGI middleware: while the hook is on, a POST of readings gets 503 before any route sees it."""

    def __init__(self, app: ASGIApp, hook: FaultHook) -> None:
        self.app, self.hook = app, hook

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        hook = self.hook
        if not (hook.unavailable and scope["type"] == "http" and scope["method"] == "POST"
                and scope["path"] in READING_PATHS):  # fmt: skip
            await self.app(scope, receive, send)
            return
        message: dict[str, Any] = {"more_body": True}
        while message.get("more_body"):  # read and discard the body, so the connection stays usable
            message = dict(await receive())
            if message["type"] == "http.disconnect":
                return
        hook.answered += 1
        hook.counter.inc()
        headers = [(b"content-type", b"application/json"), (b"retry-after", b"1"),
                   (b"content-length", str(len(BODY)).encode())]  # fmt: skip
        await send({"type": "http.response.start", "status": 503, "headers": headers})
        await send({"type": "http.response.body", "body": BODY})
