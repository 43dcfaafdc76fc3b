"""``python -m pipeline.backend``: settings from flags/env, logging, and uvicorn configured per behaviour."""

from __future__ import annotations

import logging
import re
import sys

import uvicorn

from pipeline import metrics
from pipeline.backend.app import create_app
from pipeline.config import BackendSettings, ConfigError

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
    seed = settings.backend_behaviour == "seed"
    config = uvicorn.Config(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        log_level=level,
        access_log=seed,  # the seed's uvicorn logs a line per request
        loop="auto",  # uvloop when installed
        http="auto",  # httptools when installed
        # fast: compressing every broadcast costs more CPU than loopback bandwidth; seed: uvicorn's default (on)
        ws_per_message_deflate=seed,
        ws_max_size=1024 * 1024,  # clients have nothing to send us
        timeout_graceful_shutdown=5,
        lifespan="on",
    )
    for name in ("uvicorn.error", "uvicorn.access"):
        logging.getLogger(name).addFilter(RedactToken())
    server = uvicorn.Server(config)
    server.run()
    return 0 if server.started else 1
