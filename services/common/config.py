"""Settings from RAGMESH_* environment variables.

Each service has its own settings class deriving from `ServiceSettings` with
its own prefix (RAGMESH_CHUNKING_, RAGMESH_EMBEDDING_, ...); settings every
process shares (log level, message size) use the bare RAGMESH_ prefix.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from ragmesh.ports import DEFAULT_PORTS, default_metrics_port

__all__ = ["DEFAULT_PORTS", "CommonSettings", "ServiceAddresses", "default_metrics_port"]


class CommonSettings(BaseSettings):
    """Settings shared by every process."""

    model_config = SettingsConfigDict(env_prefix="RAGMESH_", extra="ignore")

    log_level: str = Field("INFO", description="Log level (DEBUG, INFO, WARNING, ERROR).")
    log_format: str = Field("json", description="`json` (one object a line) or `text`.")
    max_message_bytes: int = Field(
        40 * 1024 * 1024,
        description="Largest gRPC message a server or client accepts (bytes); "
        "above the largest document plus protobuf overhead.",
    )
    bind_host: str = Field("127.0.0.1", description="Address the gRPC servers bind to.")
    metrics_enabled: bool = Field(True, description="Serve Prometheus metrics over HTTP.")
    shutdown_grace_s: float = Field(
        10.0, description="Seconds in-flight calls get to finish on SIGTERM."
    )
    readiness_interval_s: float = Field(
        2.0, description="How often a server re-checks its dependencies for the health status."
    )
    max_concurrent_rpcs: int = Field(
        1000,
        ge=1,
        description="Calls one server handles at once (open streams included; health checks "
        "not counted); more are refused at once with RESOURCE_EXHAUSTED (SERVER_BUSY) and a "
        "retry delay, before they take memory or a dependency's time.",
    )
    grpc_lb_policy: Literal["round_robin", "pick_first"] = Field(
        "round_robin",
        description="How a channel to an internal service spreads calls over the addresses "
        "the service's name resolves to: `round_robin` sends each call to the next ready one "
        "(behind a headless Kubernetes Service: every ready replica), `pick_first` keeps one "
        "connection.",
    )
    grpc_max_connection_age_s: float = Field(
        0.0,
        ge=0,
        description="A server ends each client connection after about this long (GOAWAY; calls "
        "in flight finish), so that clients resolve the service's name again and spread calls "
        "over replicas added since; 0: never (the chart sets 300).",
    )
    grpc_dns_min_resolution_interval_s: float = Field(
        30.0,
        gt=0,
        description="Shortest time between two DNS resolutions of a service's name by one "
        "channel (gRPC's default).",
    )


# Addresses of the internal services, used by the gateway, the worker and tests.
class ServiceAddresses(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="RAGMESH_", extra="ignore")

    chunking_addr: str = Field("127.0.0.1:50052", description="Chunking service address.")
    embedding_addr: str = Field("127.0.0.1:50053", description="Embedding service address.")
    retrieval_addr: str = Field("127.0.0.1:50054", description="Retrieval service address.")
    generation_addr: str = Field("127.0.0.1:50055", description="Generation service address.")
    gateway_addr: str = Field("127.0.0.1:50051", description="Gateway address (CLI, SDK).")
