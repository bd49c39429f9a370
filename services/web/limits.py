"""Request body limits, enforced while the body is read (an ASGI middleware): a
declared Content-Length over the limit is refused before anything is read; a
chunked body is counted and cut off as soon as it passes the limit."""

from __future__ import annotations

from typing import Any

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from services.common.errors import ResourceExhausted
from services.web.errors import from_exception

UPLOAD_SUFFIX = "/documents"


class BodyTooLarge(HTTPException):
    """Raised from `receive` once the body passed the limit; the app's exception
    handler answers 413. An HTTPException because FastAPI turns any other error
    raised while it parses a body into a bare 400."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, f"request body larger than {limit} bytes")
        self.limit = limit

    def error(self) -> ResourceExhausted:
        return ResourceExhausted(
            f"request body larger than the limit of {self.limit} bytes",
            reason="BODY_TOO_LARGE",
            metadata={"limit_bytes": self.limit},
        )


class BodyLimit:
    def __init__(self, app: ASGIApp, max_body_bytes: int, max_upload_bytes: int) -> None:
        self.app = app
        self.max_body = max_body_bytes
        self.max_upload = max_upload_bytes

    def limit_for(self, scope: Scope) -> int:
        path = str(scope.get("path", ""))
        is_upload = scope.get("method") == "POST" and path.endswith(UPLOAD_SUFFIX)
        return self.max_upload if is_upload else self.max_body

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        # /mcp has its own limit (the MCP SDK's); every other HTTP request has ours.
        if scope["type"] != "http" or str(scope.get("path", "")).startswith("/mcp"):
            await self.app(scope, receive, send)
            return
        limit = self.limit_for(scope)
        declared = _content_length(scope)
        if declared is not None and declared > limit:
            await _send_error(send, BodyTooLarge(limit).error())
            return
        seen = 0

        async def counted() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise BodyTooLarge(limit)
            return message

        await self.app(scope, counted, send)


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", []):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


async def _send_error(send: Send, exc: Any) -> None:
    err = from_exception(exc)
    body = err.json_bytes()
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        (b"connection", b"close"),
    ]
    await send({"type": "http.response.start", "status": err.status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
