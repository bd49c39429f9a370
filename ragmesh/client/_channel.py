"""Channel options shared by the sync and asyncio clients."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import grpc

from ragmesh.client.errors import RagmeshError
from ragmesh.rpc import retry_service_config

SERVICE = "ragmesh.gateway.v1.RagService"
# Retried on UNAVAILABLE with backoff: reads only. Writes are not retried
# blindly (a Create or Upload that reached the server must not run twice).
IDEMPOTENT_METHODS = (
    "GetKnowledgeBase",
    "ListKnowledgeBases",
    "GetIngestionJob",
    "ListIngestionJobs",
    "WatchIngestionJob",
    "GetDocument",
    "ListDocuments",
    "Search",
)
MAX_MESSAGE_BYTES = 64 * 1024 * 1024
DEFAULT_TIMEOUT_S = 30.0
# Streams run longer than unary calls: an answer is generated token by token,
# a watched job lasts as long as its ingestion.
DEFAULT_ASK_TIMEOUT_S = 300.0
DEFAULT_WATCH_TIMEOUT_S = 3600.0
DEFAULT_UPLOAD_TIMEOUT_S = 300.0


def channel_options() -> list[tuple[str, Any]]:
    return [
        ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
        ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
        ("grpc.enable_retries", 1),
        ("grpc.keepalive_time_ms", 30_000),
        ("grpc.initial_reconnect_backoff_ms", 200),
        ("grpc.max_reconnect_backoff_ms", 5_000),
        ("grpc.service_config", retry_service_config(SERVICE, IDEMPOTENT_METHODS)),
    ]


def auth_metadata(api_key: str | None) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {api_key}"),) if api_key else ()


def channel_credentials(
    tls: bool,
    ca_file: str | os.PathLike[str] | None = None,
    root_certificates: bytes | None = None,
) -> grpc.ChannelCredentials | None:
    """TLS credentials, or None for plaintext (`tls` False). With TLS the gateway's
    certificate is verified against `root_certificates`, else the CA file, else
    the system's roots."""
    if not tls:
        return None
    if root_certificates is None and ca_file:
        try:
            root_certificates = Path(ca_file).read_bytes()
        except OSError as exc:
            raise RagmeshError(
                f"cannot read the CA file {os.fspath(ca_file)}: {exc.strerror or exc}",
                code=grpc.StatusCode.INVALID_ARGUMENT,
                reason="UNREADABLE_CA_FILE",
            ) from exc
    return grpc.ssl_channel_credentials(root_certificates)
