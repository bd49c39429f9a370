"""Conversions between ServiceError, google.rpc.Status and gRPC errors."""

from __future__ import annotations

from datetime import timedelta

import grpc
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from ragmesh.rpc import error_info_of, retry_delay_of
from services.common import errors
from services.common.text import truncate_utf8

__all__ = ["error_info_of", "from_rpc_error", "retry_delay_of", "to_status"]

_BY_CODE: dict[str, type[errors.ServiceError]] = {
    cls.code: cls
    for cls in (
        errors.InvalidArgument,
        errors.NotFound,
        errors.AlreadyExists,
        errors.FailedPrecondition,
        errors.ResourceExhausted,
        errors.Unauthenticated,
        errors.PermissionDenied,
        errors.Unavailable,
        errors.DeadlineExceeded,
        errors.Cancelled,
        errors.Internal,
    )
}


# A status travels in HTTP/2 trailers, which gRPC caps at 16 KiB (8 KiB soft): the
# message goes twice (grpc-message, percent-encoded: up to 3 bytes a byte, and inside
# grpc-status-details-bin, base64). Messages and metadata that echo a caller's input
# (a 16 KB knowledge base id) would push the trailers past the cap, and the client
# would get RESOURCE_EXHAUSTED from its own transport instead of the error.
MAX_MESSAGE_BYTES = 1024
MAX_METADATA_VALUE_BYTES = 256
MAX_METADATA_ENTRIES = 16


def to_status(error: errors.ServiceError, domain: str) -> grpc.Status:
    """A grpc.Status whose trailing metadata carries google.rpc.Status with an
    ErrorInfo, and a RetryInfo when the error says the call may be retried."""
    metadata = {
        truncate_utf8(k, MAX_METADATA_VALUE_BYTES): truncate_utf8(v, MAX_METADATA_VALUE_BYTES)
        for k, v in list(error.metadata.items())[:MAX_METADATA_ENTRIES]
    }
    info = error_details_pb2.ErrorInfo(reason=error.reason, domain=domain, metadata=metadata)
    status = status_pb2.Status(
        code=getattr(code_pb2, error.code), message=truncate_utf8(error.message, MAX_MESSAGE_BYTES)
    )
    status.details.add().Pack(info)
    if error.retry_after_s is not None:
        retry = error_details_pb2.RetryInfo()
        retry.retry_delay.FromTimedelta(timedelta(seconds=max(0.0, error.retry_after_s)))
        status.details.add().Pack(retry)
    return rpc_status.to_status(status)


def from_rpc_error(err: grpc.RpcError, what: str = "") -> errors.ServiceError:
    """A downstream call's failure as a ServiceError with the same code, reason
    and retry delay.

    UNKNOWN (a peer that does not follow the contract) becomes INTERNAL.
    """
    code: grpc.StatusCode = err.code()
    details: str = err.details() or ""
    info = error_info_of(err)
    cls = _BY_CODE.get(code.name, errors.Internal)
    message = f"{what}: {details}" if what else details
    retry = retry_delay_of(err)
    if info is not None:
        return cls(message, reason=info.reason, metadata=dict(info.metadata), retry_after_s=retry)
    return cls(message, reason=f"DOWNSTREAM_{code.name}", retry_after_s=retry)
