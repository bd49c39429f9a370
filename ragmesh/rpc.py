"""gRPC conventions shared by the SDK and the servers.

Reading google.rpc.Status details (ErrorInfo, RetryInfo) from a failed call,
the retry service config for idempotent methods, and a health check. Only
grpcio, protobuf and googleapis-common-protos here: the SDK installs without
any server dependency, and the servers import these from here.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

import grpc
from google.rpc import error_details_pb2, status_pb2

STATUS_DETAILS_KEY = "grpc-status-details-bin"
HEALTH_CHECK_METHOD = "/grpc.health.v1.Health/Check"
# grpc.health.v1.HealthCheckResponse.ServingStatus
HEALTH_STATUS_NAMES = {0: "UNKNOWN", 1: "SERVING", 2: "NOT_SERVING", 3: "SERVICE_UNKNOWN"}


def status_of(err: grpc.RpcError) -> status_pb2.Status | None:
    """The google.rpc.Status a server attached to a failed call, if any (read
    from the trailing metadata as grpcio-status does, without needing it)."""
    trailers = getattr(err, "trailing_metadata", None)
    try:
        metadata = trailers() if callable(trailers) else None
    except Exception:  # a call object in a state that has no trailers
        return None
    for key, value in metadata or ():
        if key == STATUS_DETAILS_KEY and isinstance(value, bytes):
            status = status_pb2.Status()
            try:
                status.ParseFromString(value)
            except Exception:  # malformed details from a foreign peer
                return None
            return status
    return None


def error_info_of(err: grpc.RpcError) -> error_details_pb2.ErrorInfo | None:
    """The ErrorInfo a ragmesh server attached to a failed call, if any."""
    status = status_of(err)
    for detail in status.details if status is not None else ():
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            return info
    return None


def retry_delay_of(err: grpc.RpcError) -> float | None:
    """Seconds the server asked the caller to wait before retrying (RetryInfo)."""
    status = status_of(err)
    for detail in status.details if status is not None else ():
        if detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
            info = error_details_pb2.RetryInfo()
            detail.Unpack(info)
            return float(info.retry_delay.ToTimedelta().total_seconds())
    return None


def retry_service_config(service: str, idempotent_methods: Iterable[str]) -> str:
    """gRPC service config retrying UNAVAILABLE with backoff, for the named methods."""
    names = [{"service": service, "method": m} for m in idempotent_methods]
    config: dict[str, Any] = {"methodConfig": []}
    if names:
        config["methodConfig"].append(
            {
                "name": names,
                "retryPolicy": {
                    "maxAttempts": 4,
                    "initialBackoff": "0.1s",
                    "maxBackoff": "2s",
                    "backoffMultiplier": 2,
                    "retryableStatusCodes": ["UNAVAILABLE"],
                },
            }
        )
    return json.dumps(config)


def _encode_health_request(service: str) -> bytes:
    # HealthCheckRequest { string service = 1; }: tag 0x0A, length, UTF-8 bytes.
    data = service.encode()
    return b"\n" + _varint(len(data)) + data if data else b""


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _decode_health_status(data: bytes) -> int:
    # HealthCheckResponse { ServingStatus status = 1; }: tag 0x08 then a varint.
    if len(data) >= 2 and data[0] == 0x08:
        return data[1] & 0x7F
    return 0


def health_check(channel: grpc.Channel, service: str = "", timeout: float = 1.0) -> str:
    """SERVING, NOT_SERVING, SERVICE_UNKNOWN or UNKNOWN from grpc.health.v1.Health/Check.

    Hand-encoded (two fields) so that the SDK needs no grpcio-health-checking.
    """
    check = channel.unary_unary(
        HEALTH_CHECK_METHOD,
        request_serializer=_encode_health_request,
        response_deserializer=_decode_health_status,
    )
    return HEALTH_STATUS_NAMES.get(check(service, timeout=timeout), "UNKNOWN")


async def health_check_async(
    channel: grpc.aio.Channel,
    service: str = "",
    timeout: float = 1.0,  # noqa: ASYNC109 - the gRPC deadline sent to the server
) -> str:
    """`health_check` over a grpc.aio channel."""
    check = channel.unary_unary(
        HEALTH_CHECK_METHOD,
        request_serializer=_encode_health_request,
        response_deserializer=_decode_health_status,
    )
    return HEALTH_STATUS_NAMES.get(await check(service, timeout=timeout), "UNKNOWN")


def health_status(
    addr: str,
    service: str = "",
    timeout: float = 1.0,
    credentials: grpc.ChannelCredentials | None = None,
) -> str:
    """SERVING, NOT_SERVING, SERVICE_UNKNOWN or UNREACHABLE for an address, in
    plaintext or, given channel credentials, over TLS."""
    try:
        if credentials is not None:
            channel = grpc.secure_channel(addr, credentials)
        else:
            channel = grpc.insecure_channel(addr)
        with channel:
            return health_check(channel, service, timeout)
    except grpc.RpcError:
        return "UNREACHABLE"
