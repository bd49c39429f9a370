"""Exceptions raised by the ragmesh SDK.

Every failed call becomes a `RagmeshError` subclass chosen by its gRPC status
code, carrying the code, the server's message and the google.rpc.ErrorInfo the
server attached (reason in UPPER_SNAKE, domain = the service that raised it,
metadata) so callers can branch on `err.reason` rather than parse messages.
"""

from __future__ import annotations

from collections.abc import Mapping

import grpc

from ragmesh.rpc import error_info_of, retry_delay_of


class RagmeshError(Exception):
    """A failed ragmesh call: `code` is the grpc.StatusCode, `reason` the ErrorInfo reason."""

    code: grpc.StatusCode = grpc.StatusCode.UNKNOWN

    def __init__(
        self,
        message: str,
        *,
        code: grpc.StatusCode | None = None,
        reason: str = "",
        domain: str = "",
        metadata: Mapping[str, str] | None = None,
        retry_after_s: float | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        self.reason = reason
        self.domain = domain
        self.metadata: dict[str, str] = dict(metadata or {})
        #: the server's RetryInfo delay, when it sent one (e.g. AUTH_RATE_LIMITED)
        self.retry_after_s = retry_after_s

    @property
    def code_name(self) -> str:
        return self.code.name

    def __str__(self) -> str:
        where = f"{self.reason}" + (f" from {self.domain}" if self.domain else "")
        return f"{self.code.name} ({where}): {self.message}" if where else self.message

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(code={self.code.name}, reason={self.reason!r}, "
            f"message={self.message!r})"
        )


class InvalidArgumentError(RagmeshError):
    code = grpc.StatusCode.INVALID_ARGUMENT


class NotFoundError(RagmeshError):
    code = grpc.StatusCode.NOT_FOUND


class AlreadyExistsError(RagmeshError):
    code = grpc.StatusCode.ALREADY_EXISTS


class FailedPreconditionError(RagmeshError):
    code = grpc.StatusCode.FAILED_PRECONDITION


class ResourceExhaustedError(RagmeshError):
    code = grpc.StatusCode.RESOURCE_EXHAUSTED


class UnauthenticatedError(RagmeshError):
    code = grpc.StatusCode.UNAUTHENTICATED


class PermissionDeniedError(RagmeshError):
    code = grpc.StatusCode.PERMISSION_DENIED


class UnavailableError(RagmeshError):
    """The gateway (or a service behind it) cannot be reached right now: retry later."""

    code = grpc.StatusCode.UNAVAILABLE


class DeadlineExceededError(RagmeshError):
    code = grpc.StatusCode.DEADLINE_EXCEEDED


class RequestCancelledError(RagmeshError):
    """CANCELLED (named so as not to shadow asyncio.CancelledError)."""

    code = grpc.StatusCode.CANCELLED


class InternalError(RagmeshError):
    code = grpc.StatusCode.INTERNAL


class JobFailedError(RagmeshError):
    """An ingestion job ended FAILED or CANCELLED (raised by `wait_for_job(..., check=True)`)."""

    code = grpc.StatusCode.ABORTED


ERROR_CLASSES: dict[grpc.StatusCode, type[RagmeshError]] = {
    cls.code: cls
    for cls in (
        InvalidArgumentError,
        NotFoundError,
        AlreadyExistsError,
        FailedPreconditionError,
        ResourceExhaustedError,
        UnauthenticatedError,
        PermissionDeniedError,
        UnavailableError,
        DeadlineExceededError,
        RequestCancelledError,
        InternalError,
    )
}


def error_class(code: grpc.StatusCode) -> type[RagmeshError]:
    return ERROR_CLASSES.get(code, RagmeshError)


def from_rpc_error(err: grpc.RpcError) -> RagmeshError:
    """The RagmeshError for a failed call (sync or asyncio), with its ErrorInfo."""
    code_fn = getattr(err, "code", None)
    code = code_fn() if callable(code_fn) else grpc.StatusCode.UNKNOWN
    if not isinstance(code, grpc.StatusCode):
        code = grpc.StatusCode.UNKNOWN
    details_fn = getattr(err, "details", None)
    message = (details_fn() if callable(details_fn) else None) or str(err)
    info = error_info_of(err)
    cls = error_class(code)
    retry_after_s = retry_delay_of(err)
    if info is None:
        return cls(message, code=code, retry_after_s=retry_after_s)
    return cls(
        message,
        code=code,
        reason=info.reason,
        domain=info.domain,
        metadata=dict(info.metadata),
        retry_after_s=retry_after_s,
    )
