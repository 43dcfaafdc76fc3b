"""Answered client errors: ``{"status": "error", "message": "...", ...}``, and the JSON responses of the API."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import orjson
from fastapi.responses import Response
from pydantic import ValidationError

from pipeline.backend.schema import TELEMETRY_TYPES

MAX_ERRORS_SHOWN = 20
"""Validation errors listed in a 422 body (the count of all of them is given too)."""


class ApiError(Exception):
    """An answered client error: rendered as ``{"status": "error", "message": ...}`` and counted."""

    def __init__(
        self, status: int, kind: str, message: str, headers: dict[str, str] | None = None, **extra: Any
    ) -> None:
        super().__init__(message)
        self.status, self.kind, self.message, self.headers, self.extra = status, kind, message, headers, extra


def json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(body), status_code=status, media_type="application/json", headers=headers)


OK = b'{"status":"ok"}'


def ok() -> Response:
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
