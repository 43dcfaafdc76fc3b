"""The forwarders' shared retry triage (``Forwarder.settle`` and ``retry_policy``), for each variant that POSTs:
a 5xx is retried until it succeeds, a 4xx is given up at once, a 2xx counts the readings forwarded."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from prometheus_client import REGISTRY

from pipeline.forwarders import FORWARDERS
from pipeline.rows import COLUMNS, Row


class Scripted:
    """An HTTP server answering POSTs with the scripted statuses in turn (then 200), recording the paths."""

    def __init__(self) -> None:
        self.statuses: list[int] = []
        self.paths: list[str] = []
        script = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("content-length", 0)))
                script.paths.append(self.path)
                status = script.statuses.pop(0) if script.statuses else 200
                body = b'{"status":"ok"}' if status < 300 else b'{"status":"error","message":"scripted"}'
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.fixture
def backend() -> Iterator[Scripted]:
    s = Scripted()
    yield s
    s.server.shutdown()
    s.server.server_close()


ROW: Row = tuple(
    {"reading_timestamp": "2024-05-01T12:00:00Z", "telemetry_type": "TEMPERATURE", "sensor_id": "T",
     "subsystem": "ENGINE", "sequence_number": 1, "status_bitmask": 0, "temperature": 1.0,
     "temp_unit": "celsius"}.get(c)
    for c in COLUMNS
)  # fmt: skip


def _forwarded() -> float:
    return REGISTRY.get_sample_value("telemetry_readings_total", {"stage": "forwarded"}) or 0.0


def _failed(kind: str = "post_failed") -> float:
    labels = {"stage": "forwarder", "kind": kind}
    return REGISTRY.get_sample_value("telemetry_errors_total", labels) or 0.0


@pytest.mark.parametrize("variant", ["sync", "async"])
async def test_5xx_is_retried_4xx_given_up(backend: Scripted, variant: str) -> None:
    fwd = FORWARDERS[variant](backend.url)
    await fwd.start()
    try:
        before_ok, before_failed, before_retried = _forwarded(), _failed(), _failed("post_retried")
        backend.statuses[:] = [503, 502]  # a restarting backend: retried with backoff, then delivered
        await fwd.send([ROW])
        await fwd.close()
        assert len(backend.paths) == 3 and set(backend.paths) == {"/telem_data"}
        assert _forwarded() - before_ok == 1 and _failed() == before_failed
        assert _failed("post_retried") - before_retried == 2  # each 5xx answer: one POST tried again

        await fwd.start()
        backend.paths.clear()
        backend.statuses[:] = [422]  # a refused body: retrying would not help
        await fwd.send([ROW, ROW])
        await fwd.close()
        assert len(backend.paths) == 2  # one POST each, none repeated
        assert _failed() - before_failed == 1  # the refused reading, given up
        assert _forwarded() - before_ok == 2  # the second reading was accepted
        assert _failed("post_retried") - before_retried == 2  # a 4xx is not tried again
    finally:
        await fwd.close()
