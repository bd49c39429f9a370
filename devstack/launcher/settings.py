"""Settings of the local launcher (`make run`): RAGMESH_* environment variables.

External dependencies are used instead of starting local ones when their own
settings are given: RAGMESH_RETRIEVAL_MILVUS_URI (any Milvus),
RAGMESH_GENERATION_LLM_BASE_URL (any OpenAI-compatible server) and
RAGMESH_REDIS_URL (any Redis). Without them the stack starts its own, with its
state under RAGMESH_DATA_DIR: it never writes into a Redis it did not start.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from ragmesh.ports import DEFAULT_PORTS, GRPC_PORT_BASE

SERVICE_ORDER = ("chunking", "embedding", "retrieval", "generation", "gateway")


class LauncherSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="RAGMESH_", extra="ignore")

    data_dir: Path = Field(
        Path("data"),
        description="Where the local stack keeps its state: Redis AOF, the Milvus Lite .db or "
        "Milvus server data, logs, the development API key.",
    )
    milvus: Literal["lite", "server"] = Field(
        "lite",
        description="`lite`: Milvus Lite, a .db the retrieval service opens; `server`: the "
        "Milvus 2.3 standalone server of the `milvus` package (no BM25/hybrid in 2.3).",
    )
    milvus_port: int = Field(
        19530, description="Port of the Milvus server (RAGMESH_MILVUS=server)."
    )
    redis_url: str = Field(
        "",
        description="An existing Redis for the stack (records and Celery broker); empty: the "
        "stack starts its own redis-server (AOF under DATA_DIR/redis) on RAGMESH_REDIS_PORT.",
    )
    redis_port: int = Field(
        6390,
        description="Port of the stack's own Redis (not Redis's usual 6379, so that a system "
        "Redis is never written into by accident).",
    )
    llm_port: int = Field(8081, description="Port of the local llama.cpp server (SmolLM2).")
    llm_threads: int = Field(2, description="Threads of the local llama.cpp server.")
    gateway_port: int = Field(DEFAULT_PORTS["gateway"], description="Gateway gRPC port.")
    chunking_port: int = Field(DEFAULT_PORTS["chunking"], description="Chunking gRPC port.")
    embedding_port: int = Field(DEFAULT_PORTS["embedding"], description="Embedding gRPC port.")
    retrieval_port: int = Field(DEFAULT_PORTS["retrieval"], description="Retrieval gRPC port.")
    generation_port: int = Field(DEFAULT_PORTS["generation"], description="Generation gRPC port.")
    web_port: int = Field(
        8080, description="HTTP port of the web service (OpenAI-compatible API, REST, MCP)."
    )
    web: bool = Field(True, description="Start the web service (`ragmesh serve web`).")
    metrics_port_base: int = Field(
        9100,
        description="Prometheus ports: gateway base+1, chunking +2, embedding +3, retrieval +4, "
        "generation +5.",
    )
    worker_concurrency: int = Field(
        2,
        ge=1,
        description="Processes of the one Celery worker (as in the Helm chart and the compose "
        "file): while one document is embedded, the other's service calls go on, and the "
        "embedding service batches the two's texts together.",
    )
    dev_api_key: str = Field(
        "",
        description="API key of the local `dev` tenant; empty: generated on first start and "
        "kept in DATA_DIR/dev-api-key.",
    )
    demo: bool = Field(
        True, description="Create the `demo` knowledge base from examples/ when it is absent."
    )
    health_timeout_s: float = Field(
        900.0, description="How long the launcher waits for every health check at start."
    )
    restart_backoff_max_s: float = Field(
        30.0, description="Longest wait before restarting a process that keeps dying."
    )
    stop_grace_s: float = Field(
        30.0,
        gt=0,
        description="On shutdown, how long a child gets to exit after its stop signal (SIGTERM; "
        "SIGINT for the Milvus server) before it and everything it started are SIGKILLed.",
    )
    config: str = Field(
        "",
        description="Client config file to write (read by the CLI and SDK); empty: "
        "./.ragmesh/config.json and ~/.config/ragmesh/config.json.",
    )

    def port_of(self, service: str) -> int:
        return int(getattr(self, f"{service}_port"))

    def metrics_port_of(self, service: str) -> int:
        # As the services' own default (9100 + port - 50050): gateway +1 ... generation +5.
        return self.metrics_port_base + DEFAULT_PORTS[service] - GRPC_PORT_BASE


class ClientEnvironment(BaseSettings):
    """Variables the `ragmesh` CLI and the SDK read (ragmesh.client.config resolves them,
    with flags before them and the client config file after them). Declared here so that
    the README's configuration table, generated from settings classes, lists them."""

    model_config = SettingsConfigDict(env_prefix="RAGMESH_", extra="ignore")

    api_key: str = Field(
        "", description="API key the CLI and SDK send (default: the client config's key)."
    )
    kb: str = Field(
        "",
        description="Default knowledge base of `ragmesh search`, `ask` and `docs` (default: "
        "the client config's, `demo` after make run).",
    )
