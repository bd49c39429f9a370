"""The grpc.aio server bootstrap every ragmesh service runs on.

It adds the standard health service (NOT_SERVING until the service says it is
ready, and again while shutting down), reflection, the interceptor (request id,
access log, metrics, exception → status), Prometheus metrics over HTTP, and a
graceful shutdown on SIGTERM/SIGINT.

A service that names TLS files (its `tls` attribute, a services.common.tls.ServerTLS)
is served over TLS only, with the certificate re-read when its files change; its
`health_port`, when not 0, serves grpc.health.v1 alone in plaintext for probes
that cannot speak TLS (Kubernetes' gRPC probes). Other services stay plaintext:
inside a cluster their traffic is fenced by NetworkPolicies (docs/security.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1.health import aio as health_aio
from grpc_reflection.v1alpha import reflection

from services.common.config import CommonSettings, default_metrics_port
from services.common.interceptors import ServerInterceptor
from services.common.logs import configure_logging
from services.common.metrics import start_metrics_server
from services.common.tls import CertificateFiles, ServerTLS, TLSMaterial
from services.common.tracing import configure as configure_tracing
from services.common.tracing import shutdown as flush_traces

log = logging.getLogger("ragmesh.server")

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


class GrpcService(Protocol):
    """What a service module hands to `run_service`."""

    #: short name: "chunking", "embedding", ...
    name: str
    #: fully-qualified proto service names, for health and reflection
    service_names: Sequence[str]

    def register(self, server: grpc.aio.Server) -> None:
        """Add the servicer(s) to the server."""

    async def start(self) -> None:
        """Load models, open connections. Runs after the port is bound, before SERVING."""

    async def ready(self) -> bool:
        """Whether dependencies are reachable now; polled while serving."""

    async def close(self) -> None:
        """Release resources after the server stopped."""


def server_options(
    settings: CommonSettings, max_receive_bytes: int | None = None
) -> list[tuple[str, int]]:
    """`max_receive_bytes`: a service's own, smaller limit (the public gateway
    takes upload pieces, never whole documents)."""
    return [
        ("grpc.max_receive_message_length", max_receive_bytes or settings.max_message_bytes),
        ("grpc.max_send_message_length", settings.max_message_bytes),
        ("grpc.so_reuseport", 0),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.min_ping_interval_without_data_ms", 5000),
        # Clients keep idle channels alive with pings (30 s); never answer a long,
        # quiet call's pings with GOAWAY "too_many_pings".
        ("grpc.http2.max_ping_strikes", 0),
        # Clients come back through a new resolution: replicas added since get calls.
        *(
            [("grpc.max_connection_age_ms", int(settings.grpc_max_connection_age_s * 1000))]
            if settings.grpc_max_connection_age_s
            else []
        ),
    ]


def _certificate_configuration(material: TLSMaterial) -> Any:
    return grpc.ssl_server_certificate_configuration(
        [(material.private_key, material.certificate_chain)],
        root_certificates=material.client_ca,
    )


def server_credentials(files: CertificateFiles) -> grpc.ServerCredentials:
    """TLS credentials whose certificate follows the files: gRPC asks before every
    new handshake, and gets new material only when the files changed."""

    def fetch() -> Any:
        try:
            material = files.changed_material()
        except Exception:  # never fail a handshake over a reload check
            log.exception("TLS reload check failed")
            return None
        return _certificate_configuration(material) if material is not None else None

    return grpc.dynamic_ssl_server_credentials(
        _certificate_configuration(files.material),
        fetch,
        require_client_authentication=files.material.client_ca is not None,
    )


@dataclass
class RunningServer:
    """A started server; `stop()` drains it gracefully."""

    server: grpc.aio.Server
    health: health_aio.HealthServicer
    service: GrpcService
    port: int
    settings: CommonSettings
    #: the certificate files when the server speaks TLS
    certificates: CertificateFiles | None = None
    #: the plaintext health-only server and its port, when there is one
    health_server: grpc.aio.Server | None = None
    health_port: int = 0
    _watch: asyncio.Task[None] | None = field(default=None, repr=False)

    async def set_serving(self, serving: bool) -> None:
        status = SERVING if serving else NOT_SERVING
        for name in ("", *self.service.service_names):
            await self.health.set(name, status)

    async def watch_readiness(self) -> None:
        """Mirror the service's dependency readiness into the health status."""
        last: bool | None = None
        while True:
            try:
                ok = await asyncio.wait_for(
                    self.service.ready(), timeout=self.settings.readiness_interval_s * 2 + 1
                )
            except Exception as exc:  # a failing check means not ready, never a crash
                log.warning("readiness check failed: %s", exc)
                ok = False
            if ok != last:
                await self.set_serving(ok)
                log.info("health: %s", "SERVING" if ok else "NOT_SERVING")
                last = ok
            await asyncio.sleep(self.settings.readiness_interval_s)

    async def stop(self) -> None:
        log.info("shutting down (grace %.1fs)", self.settings.shutdown_grace_s)
        if self._watch:
            self._watch.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watch
        await self.set_serving(False)
        await self.health.enter_graceful_shutdown()
        await self.server.stop(self.settings.shutdown_grace_s)
        if self.health_server is not None:
            await self.health_server.stop(0)
        await self.service.close()
        log.info("stopped")


def _health_only_server(
    health: health_aio.HealthServicer, host: str, port: int, settings: CommonSettings
) -> tuple[grpc.aio.Server, int]:
    """grpc.health.v1 alone, in plaintext: it tells a prober SERVING or NOT_SERVING
    and nothing else (no reflection, no API)."""
    server = grpc.aio.server(options=server_options(settings))
    health_pb2_grpc.add_HealthServicer_to_server(health, server)
    bound = server.add_insecure_port(f"{host}:{port}")
    if bound == 0:
        raise OSError(f"cannot bind the health port {host}:{port}")
    return server, bound


async def start_server(
    service: GrpcService,
    port: int,
    settings: CommonSettings,
    metrics_port: int | None = None,
    *,
    tls: ServerTLS | None = None,
    health_port: int | None = None,
) -> RunningServer:
    """Bind, start and return the server. `tls` and `health_port` default to the
    service's attributes of those names (absent: plaintext, no health port)."""
    tls = tls if tls is not None else getattr(service, "tls", None)
    health_port = health_port if health_port is not None else getattr(service, "health_port", 0)
    # Read and check the certificate before binding anything: a bad file stops startup.
    certificates = CertificateFiles(tls) if tls is not None else None
    interceptor = ServerInterceptor(
        service.name,
        translate=getattr(service, "translate_error", None),
        public=bool(getattr(service, "public", False)),
        max_concurrent=settings.max_concurrent_rpcs,
    )
    server = grpc.aio.server(
        interceptors=[interceptor],
        options=server_options(settings, getattr(service, "max_receive_bytes", None)),
    )
    service.register(server)
    health = health_aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health, server)
    reflection.enable_server_reflection(
        (
            *service.service_names,
            health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
            reflection.SERVICE_NAME,
        ),
        server,
    )
    address = f"{settings.bind_host}:{port}"
    if certificates is not None:
        bound = server.add_secure_port(address, server_credentials(certificates))
    else:
        bound = server.add_insecure_port(address)
    if bound == 0:
        raise OSError(f"cannot bind {address}")
    running = RunningServer(server, health, service, bound, settings, certificates)
    if health_port:
        running.health_server, running.health_port = _health_only_server(
            health, settings.bind_host, health_port, settings
        )
    await running.set_serving(False)
    await server.start()
    if running.health_server is not None:
        await running.health_server.start()
        log.info("plaintext health on %s:%d", settings.bind_host, running.health_port)
    if settings.metrics_enabled:
        mport = metrics_port if metrics_port is not None else default_metrics_port(bound)
        try:
            start_metrics_server(settings.bind_host, mport)
            log.info("metrics on http://%s:%d/metrics", settings.bind_host, mport)
        except OSError as exc:
            log.warning("metrics port %d unavailable: %s", mport, exc)
    log.info(
        "%s listening on %s:%d (%s), starting up",
        service.name,
        settings.bind_host,
        bound,
        "plaintext"
        if certificates is None
        else "TLS" + (", client certificates required" if certificates.material.client_ca else ""),
    )
    await service.start()
    running._watch = asyncio.create_task(running.watch_readiness())
    return running


async def serve_until_signal(
    service: GrpcService, port: int, settings: CommonSettings, metrics_port: int | None = None
) -> None:
    """Run until SIGTERM or SIGINT, then drain and stop."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    running = await start_server(service, port, settings, metrics_port)
    await stop.wait()
    await running.stop()


def run(service: GrpcService, port: int, metrics_port: int | None = None) -> None:
    settings = CommonSettings()
    configure_logging(service.name, settings.log_level, settings.log_format)
    # Before the service builds its channels: they carry traceparent only when tracing is on.
    configure_tracing(service.name)
    try:
        asyncio.run(serve_until_signal(service, port, settings, metrics_port))
    finally:
        flush_traces()
