"""Request body limits, enforced while the body is read (an ASGI middleware): a
declared Content-Length over the limit is refused before anything is read; a
chunked body is counted and cut off as soon as it passes the limit."""

from __future__ import annotations

import json
import math
from typing import Any

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from services.common.errors import ResourceExhausted
from services.web.config import WebSettings
from services.web.errors import from_exception

UPLOAD_SUFFIX = "/documents"
MCP_PREFIX = "/mcp"
# JSON-RPC's "invalid request", the code the MCP SDK answers its own 413 with.
JSONRPC_INVALID_REQUEST = -32600


def mcp_body_limit(settings: WebSettings) -> int:
    """Largest MCP request: the `upload` tool carries a file of up to the upload limit as
    base64 (4 bytes for every 3) inside a JSON-RPC envelope of up to the JSON limit, so a
    file the REST upload takes fits through MCP too."""
    return 4 * math.ceil(settings.max_upload_bytes / 3) + settings.max_body_bytes


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
    def __init__(self, app: ASGIApp, settings: WebSettings) -> None:
        self.app = app
        self.max_body = settings.max_body_bytes
        self.max_upload = settings.max_upload_bytes
        self.max_mcp = mcp_body_limit(settings)

    def limit_for(self, scope: Scope) -> int:
        path = str(scope.get("path", ""))
        is_upload = scope.get("method") == "POST" and path.endswith(UPLOAD_SUFFIX)
        return self.max_upload if is_upload else self.max_body

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if str(scope.get("path", "")).startswith(MCP_PREFIX):
            # The MCP SDK counts a chunked body itself (mcp_http.py gives it this limit);
            # a declared one is refused here, in JSON-RPC's shape, naming the limit.
            declared = _content_length(scope)
            if declared is not None and declared > self.max_mcp:
                await _send_mcp_error(send, self.max_mcp)
                return
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
    await _send_json(send, err.status, err.json_bytes())


async def _send_mcp_error(send: Send, limit: int) -> None:
    error = {
        "code": JSONRPC_INVALID_REQUEST,
        "message": f"request body larger than the limit of {limit} bytes",
        "data": {"reason": "BODY_TOO_LARGE", "limit_bytes": limit},
    }
    await _send_json(send, 413, json.dumps({"jsonrpc": "2.0", "id": None, "error": error}).encode())


async def _send_json(send: Send, status: int, body: bytes) -> None:
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        (b"connection", b"close"),
    ]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
