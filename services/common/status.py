"""Conversions between ServiceError, google.rpc.Status and gRPC errors."""

from __future__ import annotations

import grpc
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from services.common import errors

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


def to_status(error: errors.ServiceError, domain: str) -> grpc.Status:
    """A grpc.Status whose trailing metadata carries google.rpc.Status + ErrorInfo."""
    info = error_details_pb2.ErrorInfo(reason=error.reason, domain=domain, metadata=error.metadata)
    status = status_pb2.Status(code=getattr(code_pb2, error.code), message=error.message)
    status.details.add().Pack(info)
    return rpc_status.to_status(status)


def error_info_of(err: grpc.RpcError) -> error_details_pb2.ErrorInfo | None:
    """The ErrorInfo a ragmesh server attached to a failed call, if any."""
    try:
        status = rpc_status.from_call(err)  # type: ignore[arg-type]
    except (ValueError, AttributeError):
        return None
    if status is None:
        return None
    for detail in status.details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            return info
    return None


def from_rpc_error(err: grpc.RpcError, what: str = "") -> errors.ServiceError:
    """A downstream call's failure as a ServiceError with the same code and reason.

    UNKNOWN (a peer that does not follow the contract) becomes INTERNAL.
    """
    code: grpc.StatusCode = err.code()  # type: ignore[attr-defined]
    details: str = err.details() or ""  # type: ignore[attr-defined]
    info = error_info_of(err)
    cls = _BY_CODE.get(code.name, errors.Internal)
    message = f"{what}: {details}" if what else details
    if info is not None:
        return cls(message, reason=info.reason, metadata=dict(info.metadata))
    return cls(message, reason=f"DOWNSTREAM_{code.name}")
