"""The dashboard's files (``pipeline/static/``), served at ``/`` and ``/static/<file>``."""

from __future__ import annotations

import re
from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import FileResponse, Response

from pipeline.backend.errors import json_response

STATIC_DIR = Path(__file__).resolve().parent.parent / "static"
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


def static_file(name: str) -> Response:
    """One dashboard file with its content type; no-cache: browsers revalidate, so an upgrade shows at once."""
    path = STATIC_DIR / name
    media_type = STATIC_TYPES.get(path.suffix)
    if media_type is None or not STATIC_NAME.match(name) or not path.is_file():
        return json_response({"status": "error", "message": f"no such file: /static/{name}"}, 404)
    return FileResponse(path, media_type=media_type, headers={"Cache-Control": "no-cache"})


def add_static_routes(app: FastAPI) -> None:
    """Public, like /healthz: the page holds no data until its websocket (which needs the token) connects."""

    @app.api_route("/", methods=["GET", "HEAD"], include_in_schema=False)
    async def index() -> Response:
        return static_file("index.html")

    @app.api_route("/static/{name}", methods=["GET", "HEAD"], include_in_schema=False)
    async def static(name: str) -> Response:
        return static_file(name)
