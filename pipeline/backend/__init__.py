"""The dashboard backend: FastAPI on uvicorn, wire-compatible with the seed's Next.js page and Python client.

Run: ``python -m pipeline.backend [--port N] [--host H] [--api-token T] [--backend-behaviour fast|seed] ...`` (flags:
``BackendSettings``).

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

Testing only, off by default: with ``--fault-hook``, SIGUSR1 makes both reading POSTs answer 503 until SIGUSR2
(``fault_hook``: the ``backend_503`` fault, the backend's one fake).

Errors are JSON ``{"status": "error", "message": "...", ...}``: 401 missing or wrong token, 413 body over
``--max-body-bytes``, 415 not JSON, 422 invalid body (``detail`` lists the first errors), 404/405 unknown
route, 500 (never expected) without a traceback.

Websocket ``/ws?client_id=<id>[&batch=1][&token=<token>]`` (or the Authorization header): one JSON reading
per text message, or with ``batch=1`` one JSON array per POST. Close codes: 1008 missing or wrong token, 1013
over ``--max-ws-clients``.

Two behaviours (``--backend-behaviour``), the same endpoints and bodies:

- ``fast`` (default): bodies validated from raw bytes into dicts; every client has its own bounded queue
  (``--ws-buffer`` messages) and sender task, so a slow or dead client only loses its own messages (counted in
  ``backend_broadcast_dropped_readings``); no access log, no websocket compression.
- ``seed``: the seed's work per reading (``seed.py``): a pydantic model, a print, the broadcast awaited client by
  client before the answer, FastAPI's own 422 for a bad ``/telem_data`` body, uvicorn's access log on.

Modules: ``schema`` (the reading's columns, defined once, and the bodies derived from them), ``errors``,
``guard`` (token, content type, body size), ``hub`` (websocket fan-out), ``ws`` (one subscriber's connection),
``routes`` (the fast behaviour's and the shared routes), ``seed`` (the seed behaviour's routes), ``static`` (the
dashboard's files), ``fault_hook`` (the 503 fake, off by default), ``app`` (``create_app``), ``server``
(``main``: settings, logging, uvicorn).
"""

from pipeline.backend.app import create_app
from pipeline.backend.schema import MAX_BATCH
from pipeline.backend.server import main

__all__ = ["MAX_BATCH", "create_app", "main"]
