"""Milvus failures (pymilvus exceptions, gRPC errors underneath) as the
service's own errors: connection failures, timeouts and a collection not
loaded (yet) → Unavailable, a missing collection → NotFound, anything else →
Internal."""

from __future__ import annotations

import re

import grpc

from services.common.errors import Internal, NotFound, ServiceError, Unavailable

_CONNECTION_HINTS = re.compile(
    r"unavailable|connect|retry timeout|deadline|timed out|timeout|closed channel|"
    r"socket|unreachable|server is not ready|no route",
    re.IGNORECASE,
)


NOT_LOADED_HINTS = re.compile(r"released|not loaded|load\(\)|collection not loaded", re.IGNORECASE)


_NOT_FOUND_HINTS = re.compile(
    r"collection not (found|exist)|can't find collection|"
    r"collection .* not exist",
    re.IGNORECASE,
)


def translate_error(exc: BaseException, what: str) -> ServiceError:
    """A pymilvus/gRPC failure as a domain error."""
    if isinstance(exc, ServiceError):
        return exc
    message = getattr(exc, "message", None) or str(exc)
    code = getattr(exc, "code", None)
    if callable(code):  # a grpc.RpcError
        code = code()
    if isinstance(code, grpc.StatusCode) or isinstance(exc, (grpc.RpcError, TimeoutError)):
        return Unavailable(
            f"Milvus is unavailable ({what}): {message}", reason="MILVUS_UNAVAILABLE"
        )
    if _NOT_FOUND_HINTS.search(message) or code == 100:
        return NotFound(f"{what}: {message}", reason="COLLECTION_NOT_FOUND")
    if _CONNECTION_HINTS.search(message):
        return Unavailable(
            f"Milvus is unavailable ({what}): {message}", reason="MILVUS_UNAVAILABLE"
        )
    if NOT_LOADED_HINTS.search(message):
        # Released by a Milvus restart and not loaded again yet (another call may
        # be loading it): a state that passes, so callers retry — the chaos run
        # saw a worker FAIL a job with INTERNAL here.
        return Unavailable(
            f"Milvus is loading the collection ({what}): {message}", reason="MILVUS_UNAVAILABLE"
        )
    return Internal(f"Milvus failed ({what}): {message}", reason="MILVUS_ERROR")
