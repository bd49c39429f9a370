"""Web service settings (RAGMESH_WEB_*). The gateway's address and TLS are the SDK's
(RAGMESH_GATEWAY_ADDR, RAGMESH_TLS, RAGMESH_TLS_CA_FILE); the bind address is
RAGMESH_BIND_HOST like every server's."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

MIB = 1024 * 1024
DEFAULT_WEB_PORT = 8080


class WebSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="RAGMESH_WEB_", extra="ignore")

    port: int = Field(DEFAULT_WEB_PORT, description="HTTP port of the web service.")
    max_body_bytes: int = Field(
        1 * MIB,
        ge=1024,
        description="Largest JSON request body (bytes); larger ones are refused with 413 "
        "before they are read whole.",
    )
    max_upload_bytes: int = Field(
        32 * MIB,
        ge=1024,
        description="Largest multipart upload body (bytes), the file and its form fields "
        "together; the gateway's RAGMESH_GATEWAY_MAX_UPLOAD_BYTES still applies to the file.",
    )
    model_prefix: str = Field(
        "ragmesh/",
        description="Prefix of the OpenAI model names: `ragmesh/<knowledge base>` selects the "
        "knowledge base (a bare knowledge base id is accepted too).",
    )
    request_timeout_s: float = Field(
        30.0, gt=0, description="Deadline of the gateway calls behind one HTTP request."
    )
    ask_timeout_s: float = Field(
        300.0, gt=0, description="Deadline of an answer (chat completion, MCP `ask`)."
    )
    sse_keepalive_s: float = Field(
        15.0,
        gt=0,
        description="An SSE stream that has sent nothing for this long sends a comment line, "
        "so that proxies keep it open (job watches, answers waiting for the LLM).",
    )
    gateway_tls: bool = Field(
        False,
        description="Talk TLS to the gateway (RAGMESH_TLS works too, as for the SDK); the chart "
        "sets it when the gateway serves TLS.",
    )
    gateway_ca_file: str = Field(
        "",
        description="PEM CA bundle to verify the gateway's certificate with (empty: "
        "RAGMESH_TLS_CA_FILE, else the system's roots); implies TLS.",
    )
    mcp_enabled: bool = Field(True, description="Serve MCP over streamable HTTP at /mcp.")
    mcp_allowed_hosts: str = Field(
        "",
        description="Comma-separated `Host` values /mcp accepts (DNS-rebinding protection, "
        "e.g. `rag.example.com,127.0.0.1:*`); empty: any host (every call needs an API key).",
    )
