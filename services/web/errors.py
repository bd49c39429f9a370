"""Errors as HTTP answers in OpenAI's error shape.

Every failure, whether the gateway's (a RagmeshError from the SDK, carrying its
status code and ErrorInfo) or the web service's own (a ServiceError: bad JSON, a
body too large, a model name that names no knowledge base), becomes

    {"error": {"message": ..., "type": ..., "param": null, "code": "<REASON>",
               "status": "<gRPC code name>", "domain": ...}}

with the HTTP status gRPC's code maps to (Google's HTTP mapping), `Retry-After`
when the gateway said when to retry (RetryInfo). `code` is the ErrorInfo reason,
the same string the gRPC API and docs/errors.md use.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, Field

from ragmesh.client.errors import RagmeshError
from services.common.errors import ServiceError, Unavailable

log = logging.getLogger(__name__)

# gRPC status code name → HTTP status (google.rpc.Code's HTTP mapping; CANCELLED is
# nginx's 499 "client closed request", which is what it means here).
HTTP_STATUS = {
    "INVALID_ARGUMENT": 400,
    "OUT_OF_RANGE": 400,
    "FAILED_PRECONDITION": 400,
    "UNAUTHENTICATED": 401,
    "PERMISSION_DENIED": 403,
    "NOT_FOUND": 404,
    "ALREADY_EXISTS": 409,
    "ABORTED": 409,
    "RESOURCE_EXHAUSTED": 429,
    "CANCELLED": 499,
    "UNIMPLEMENTED": 501,
    "UNAVAILABLE": 503,
    "DEADLINE_EXCEEDED": 504,
}
# Limits the request itself breaks: retrying cannot help, so not 429.
TOO_LARGE_REASONS = frozenset(
    {"DOCUMENT_TOO_LARGE", "RESPONSE_TOO_LARGE", "BODY_TOO_LARGE", "MESSAGE_TOO_LARGE"}
)
# OpenAI's error `type` for the statuses its clients branch on.
ERROR_TYPE = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    405: "invalid_request_error",
    409: "conflict_error",
    413: "invalid_request_error",
    415: "invalid_request_error",
    422: "invalid_request_error",
    429: "rate_limit_error",
}


class ErrorDetail(BaseModel):
    """The `error` of an error answer (for the OpenAPI schema; answers are built by
    HttpError)."""

    message: str
    type: str = Field(
        description="OpenAI's error type: invalid_request_error, authentication_error, "
        "permission_error, not_found_error, conflict_error, rate_limit_error, server_error."
    )
    param: str | None = Field(description="The request field at fault, when there is one.")
    code: str = Field(description="The reason (docs/errors.md), e.g. KNOWLEDGE_BASE_NOT_FOUND.")
    status: str = Field(description="The gRPC status name, e.g. NOT_FOUND.")
    domain: str | None = Field(
        None, description="`gateway.ragmesh`: the gateway's error; `web`: the web service's own."
    )
    metadata: dict[str, str] | None = Field(
        None, description="The error's details, e.g. `limit_bytes`."
    )


class ErrorResponse(BaseModel):
    """Every error answer: OpenAI's shape."""

    error: ErrorDetail


def _error(description: str) -> dict[str, Any]:
    return {"model": ErrorResponse, "description": description}


#: The error answers of every API route, for the OpenAPI schema (FastAPI would
#: declare a 422 of its own shape, which this service never sends).
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: _error(
        "Invalid request: malformed JSON (`MALFORMED_JSON`), a field that fails validation "
        "(`INVALID_REQUEST_BODY`, `param` names it), or the gateway's INVALID_ARGUMENT, "
        "FAILED_PRECONDITION or OUT_OF_RANGE."
    ),
    401: _error("No API key, or a wrong one (`authentication_error`)."),
    404: _error("No such knowledge base, document, job or path."),
    413: _error("A body over the limit (`BODY_TOO_LARGE`) or a document over the gateway's."),
    429: _error("Rate limited or queues full; `Retry-After` says when to try again."),
    503: _error("The gateway, or a service behind it, is unavailable; with `Retry-After`."),
    "default": _error("Any other error (403, 405, 409, 500, 504): the same shape."),
}


@dataclass
class HttpError:
    status: int
    message: str
    reason: str
    grpc_code: str
    domain: str = ""
    retry_after_s: float | None = None
    param: str | None = None
    metadata: dict[str, str] = field(default_factory=dict)

    def body(self) -> dict[str, Any]:
        error: dict[str, Any] = {
            "message": self.message,
            "type": error_type(self.status),
            "param": self.param,
            "code": self.reason,
            "status": self.grpc_code,
        }
        if self.domain:
            error["domain"] = self.domain
        if self.metadata:
            error["metadata"] = self.metadata
        return {"error": error}

    def json_bytes(self) -> bytes:
        return json.dumps(self.body(), ensure_ascii=False).encode()

    def headers(self) -> dict[str, str]:
        if self.retry_after_s is None:
            return {}
        # Retry-After is whole seconds; never 0, which some clients take as "now, forever".
        return {"Retry-After": str(max(1, math.ceil(self.retry_after_s)))}


def error_type(status: int) -> str:
    """OpenAI's error `type` for an HTTP status (its clients know no other types)."""
    return ERROR_TYPE.get(status, "server_error" if status >= 500 else "invalid_request_error")


def http_status(code_name: str, reason: str) -> int:
    if reason in TOO_LARGE_REASONS:
        return 413
    return HTTP_STATUS.get(code_name, 500)


def from_exception(exc: BaseException) -> HttpError:
    """The HTTP answer for anything a handler raised."""
    if isinstance(exc, RagmeshError) and exc.code_name == "UNAVAILABLE" and not exc.domain:
        # No ErrorInfo: the gateway itself did not answer. Its address stays in the log.
        log.warning("gateway unreachable: %s", exc.message)
        return from_exception(
            Unavailable("the gateway cannot be reached", reason="GATEWAY_UNAVAILABLE")
        )
    if isinstance(exc, RagmeshError):
        code = exc.code_name
        retry = exc.retry_after_s
        if retry is None and code == "UNAVAILABLE":
            retry = 1.0  # the gateway (or a service behind it) is down: worth another try soon
        return HttpError(
            status=http_status(code, exc.reason),
            message=exc.message,
            reason=exc.reason or code,
            grpc_code=code,
            domain=exc.domain,
            retry_after_s=retry if code in {"RESOURCE_EXHAUSTED", "UNAVAILABLE"} else None,
            metadata=dict(exc.metadata),
        )
    if isinstance(exc, ServiceError):
        return HttpError(
            status=http_status(exc.code, exc.reason),
            message=exc.message,
            reason=exc.reason,
            grpc_code=exc.code,
            domain="web",
            retry_after_s=exc.retry_after_s,
            param=exc.metadata.get("param"),
            metadata={k: v for k, v in exc.metadata.items() if k != "param"},
        )
    log.exception("unexpected error", exc_info=exc)
    return HttpError(
        status=500,
        message=f"internal error: {type(exc).__name__}",
        reason="INTERNAL_ERROR",
        grpc_code="INTERNAL",
        domain="web",
    )
