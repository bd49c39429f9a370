"""Default local ports of the ragmesh services (ARCHITECTURE §2). Metrics listen
on 9100 + (port - 50050). Shared by the SDK, the CLI and the servers."""

from __future__ import annotations

DEFAULT_PORTS = {
    "gateway": 50051,
    "chunking": 50052,
    "embedding": 50053,
    "retrieval": 50054,
    "generation": 50055,
}
METRICS_PORT_BASE = 9100
GRPC_PORT_BASE = 50050


def default_metrics_port(grpc_port: int) -> int:
    return METRICS_PORT_BASE + (grpc_port - GRPC_PORT_BASE)
