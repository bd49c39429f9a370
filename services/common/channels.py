"""Client channels to ragmesh services: message limits, request-id propagation,
a retry policy for idempotent methods only, load balancing, and deadline helpers.

Calls, not connections, are balanced: a channel's target may resolve to several
addresses — `dns:///ragmesh-embedding-headless.ns.svc.cluster.local:50053`, a
headless Kubernetes Service, resolves to one per ready replica — and with the
`round_robin` policy (RAGMESH_GRPC_LB_POLICY) the channel keeps a connection to
each and sends every call to the next. Servers end connections after
RAGMESH_GRPC_MAX_CONNECTION_AGE_S, so channels resolve the name again and pick
up replicas added since (services.common.server).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

import grpc

from ragmesh.rpc import retry_service_config
from services.common.config import CommonSettings
from services.common.interceptors import REQUEST_ID_KEY
from services.common.logs import request_id_var
from services.common.trace_interceptors import aio_client_interceptors, traced_sync_channel

DEFAULT_TIMEOUT_S = 30.0


class _RequestIdClientInterceptor:
    """Carries the current request id to the callee; one subclass per kind of
    call, since a grpc.aio channel files an interceptor under the first kind it
    is an instance of (one class of all three kinds missed the streaming calls)."""

    @staticmethod
    def _with_request_id(details: grpc.aio.ClientCallDetails) -> grpc.aio.ClientCallDetails:
        request_id = request_id_var.get()
        if not request_id:
            return details
        metadata = grpc.aio.Metadata(*(details.metadata or ()))
        if REQUEST_ID_KEY not in metadata:
            metadata.add(REQUEST_ID_KEY, request_id)
        return grpc.aio.ClientCallDetails(
            details.method,
            details.timeout,
            metadata,
            details.credentials,
            details.wait_for_ready,
        )


class _RequestIdUnaryUnary(_RequestIdClientInterceptor, grpc.aio.UnaryUnaryClientInterceptor):
    async def intercept_unary_unary(self, continuation, client_call_details, request):  # type: ignore[no-untyped-def]
        return await continuation(self._with_request_id(client_call_details), request)


class _RequestIdUnaryStream(_RequestIdClientInterceptor, grpc.aio.UnaryStreamClientInterceptor):
    async def intercept_unary_stream(self, continuation, client_call_details, request):  # type: ignore[no-untyped-def]
        return await continuation(self._with_request_id(client_call_details), request)


class _RequestIdStreamUnary(_RequestIdClientInterceptor, grpc.aio.StreamUnaryClientInterceptor):
    async def intercept_stream_unary(self, continuation, client_call_details, request_iterator):  # type: ignore[no-untyped-def]
        return await continuation(self._with_request_id(client_call_details), request_iterator)


def channel_options(
    service: str = "",
    idempotent_methods: Iterable[str] = (),
    settings: CommonSettings | None = None,
) -> list[tuple[str, Any]]:
    """Options of a channel to an internal service: message limits, keepalive,
    reconnect backoff, the load-balancing policy, and retries (on UNAVAILABLE,
    with exponential backoff) of the methods named in `idempotent_methods` of
    `service` (its full proto name)."""
    settings = settings or CommonSettings()
    options: list[tuple[str, Any]] = [
        ("grpc.max_receive_message_length", settings.max_message_bytes),
        ("grpc.max_send_message_length", settings.max_message_bytes),
        ("grpc.enable_retries", 1),
        ("grpc.keepalive_time_ms", 30_000),
        ("grpc.initial_reconnect_backoff_ms", 200),
        ("grpc.max_reconnect_backoff_ms", 5_000),
    ]
    options += [
        ("grpc.service_config", service_config(service, idempotent_methods, settings)),
        (
            "grpc.dns_min_time_between_resolutions_ms",
            int(settings.grpc_dns_min_resolution_interval_s * 1000),
        ),
    ]
    return options


def service_config(
    service: str, idempotent_methods: Iterable[str], settings: CommonSettings
) -> str:
    """The channel's service config: the load-balancing policy over the addresses
    the target resolves to (RAGMESH_GRPC_LB_POLICY), and the retry policy of the
    idempotent methods."""
    config: dict[str, Any] = (
        json.loads(retry_service_config(service, idempotent_methods)) if service else {}
    )
    config["loadBalancingConfig"] = [{settings.grpc_lb_policy: {}}]
    return json.dumps(config)


def create_channel(
    target: str,
    *,
    service: str = "",
    idempotent_methods: Iterable[str] = (),
    settings: CommonSettings | None = None,
) -> grpc.aio.Channel:
    """An insecure aio channel to an internal service (see `channel_options`)."""
    return grpc.aio.insecure_channel(
        target,
        options=channel_options(service, idempotent_methods, settings),
        interceptors=[
            _RequestIdUnaryUnary(),
            _RequestIdUnaryStream(),
            _RequestIdStreamUnary(),
            *aio_client_interceptors(),
        ],
    )


def create_sync_channel(
    target: str,
    *,
    service: str = "",
    idempotent_methods: Iterable[str] = (),
    settings: CommonSettings | None = None,
) -> grpc.Channel:
    """A blocking channel with the same options (the Celery worker's)."""
    return traced_sync_channel(
        grpc.insecure_channel(
            target, options=channel_options(service, idempotent_methods, settings)
        )
    )


def remaining_timeout(
    context: grpc.aio.ServicerContext | None,
    default: float = DEFAULT_TIMEOUT_S,
    reserve: float = 0.0,
) -> float:
    """Timeout for a downstream call: what is left of the caller's deadline
    (minus `reserve` seconds kept for our own work), or `default` without one."""
    if context is None:
        return default
    left = context.time_remaining()
    if left is None:
        return default
    return max(0.001, left - reserve)
