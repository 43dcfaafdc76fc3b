"""Auth, content type and body size checks shared by the POST endpoints (and the websocket's token check)."""

from __future__ import annotations

import hmac

from fastapi import Request

from pipeline import delay
from pipeline.backend.errors import ApiError
from pipeline.config import BackendSettings


class Guard:
    """Auth, content type and body size checks shared by the POST endpoints."""

    def __init__(self, settings: BackendSettings) -> None:
        self.token = settings.api_token.encode() if settings.api_token else None
        self.max_body = settings.max_body_bytes
        # delay_backend_us: the handlers await it per request, n readings × the setting, once validated (None: off)
        self.delay = delay.make(settings.delay_backend_us, settings.delay_kind)

    def token_ok(self, presented: str | None) -> bool:
        return self.token is None or (presented is not None and hmac.compare_digest(presented.encode(), self.token))

    @staticmethod
    def bearer(authorization: str | None) -> str | None:
        if not authorization:
            return None
        scheme, _, value = authorization.partition(" ")
        return value.strip() if scheme.lower() == "bearer" else None

    def check_token(self, request: Request) -> None:
        """401 unless the request carries the API token (when one is set)."""
        if self.token is not None and not self.token_ok(self.bearer(request.headers.get("authorization"))):
            raise ApiError(
                401, "unauthorized", "missing or wrong API token: send 'Authorization: Bearer <token>'",
                headers={"WWW-Authenticate": "Bearer"},
            )  # fmt: skip

    async def body(self, request: Request) -> bytes:
        """Check the token and content type, then read the body, refusing it past max_body bytes."""
        self.check_token(request)
        headers = request.headers
        ctype = headers.get("content-type", "")
        mime = ctype.partition(";")[0].strip().lower()
        if mime != "application/json" and not (mime.startswith("application/") and mime.endswith("+json")):
            raise ApiError(
                415, "unsupported_media_type",
                f"Content-Type must be application/json, got {ctype or 'none'!r}",
            )  # fmt: skip
        length = headers.get("content-length")
        if length is not None:
            try:
                declared = int(length)
            except ValueError:
                raise ApiError(400, "bad_request", f"invalid Content-Length {length!r}") from None
            if declared > self.max_body:
                raise self.too_large(declared)
        chunks: list[bytes] = []
        size = 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > self.max_body:  # chunked (or lying) bodies: enforced while reading
                raise self.too_large(None)
            chunks.append(chunk)
        return chunks[0] if len(chunks) == 1 else b"".join(chunks)

    def too_large(self, declared: int | None) -> ApiError:
        got = f"{declared} bytes" if declared is not None else "a larger body"
        return ApiError(
            413, "body_too_large", f"request body too large: {got}; the limit is {self.max_body} bytes",
            limit=self.max_body,
        )  # fmt: skip
