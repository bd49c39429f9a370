"""Domain errors raised by logic modules.

Logic modules never import grpc; they raise one of these, and the server's
exception interceptor turns it into a gRPC status carrying a google.rpc.ErrorInfo
(reason in UPPER_SNAKE, domain = the service). Anything else that escapes a
handler becomes INTERNAL, never UNKNOWN.
"""

from __future__ import annotations

from collections.abc import Mapping


class ServiceError(Exception):
    """Base class: `code` is the name of a grpc.StatusCode member.

    `retry_after_s`, when set, travels as google.rpc.RetryInfo: the server's
    word that the same call may succeed after that delay (the SDK waits and
    retries). Set it only where retrying is safe and may help; a limit the
    request itself breaks (a document too large) never carries it.
    """

    code = "INTERNAL"
    default_reason = "INTERNAL_ERROR"
    default_retry_after_s: float | None = None

    def __init__(
        self,
        message: str,
        *,
        reason: str | None = None,
        metadata: Mapping[str, object] | None = None,
        retry_after_s: float | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.reason = reason or self.default_reason
        self.metadata = {k: str(v) for k, v in (metadata or {}).items()}
        self.retry_after_s = (
            retry_after_s if retry_after_s is not None else (self.default_retry_after_s)
        )

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.reason}: {self.message})"


class InvalidArgument(ServiceError):
    code = "INVALID_ARGUMENT"
    default_reason = "INVALID_ARGUMENT"


class NotFound(ServiceError):
    code = "NOT_FOUND"
    default_reason = "NOT_FOUND"


class AlreadyExists(ServiceError):
    code = "ALREADY_EXISTS"
    default_reason = "ALREADY_EXISTS"


class FailedPrecondition(ServiceError):
    code = "FAILED_PRECONDITION"
    default_reason = "FAILED_PRECONDITION"


class ResourceExhausted(ServiceError):
    code = "RESOURCE_EXHAUSTED"
    default_reason = "RESOURCE_EXHAUSTED"


class Unauthenticated(ServiceError):
    code = "UNAUTHENTICATED"
    default_reason = "UNAUTHENTICATED"


class PermissionDenied(ServiceError):
    code = "PERMISSION_DENIED"
    default_reason = "PERMISSION_DENIED"


class Unavailable(ServiceError):
    """A dependency is down or unreachable: by definition worth retrying later."""

    code = "UNAVAILABLE"
    default_reason = "DEPENDENCY_UNAVAILABLE"
    default_retry_after_s = 1.0


class DeadlineExceeded(ServiceError):
    code = "DEADLINE_EXCEEDED"
    default_reason = "DEADLINE_EXCEEDED"


class Cancelled(ServiceError):
    code = "CANCELLED"
    default_reason = "CANCELLED"


class Internal(ServiceError):
    code = "INTERNAL"
    default_reason = "INTERNAL_ERROR"
