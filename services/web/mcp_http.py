"""MCP over streamable HTTP at /mcp: stateless (any replica serves any request; no
session is kept), the API key from each request's Authorization header."""

from __future__ import annotations

from collections.abc import Callable

from mcp.server.mcpserver import Context, MCPServer
from mcp.server.transport_security import TransportSecuritySettings
from starlette.applications import Starlette

from ragmesh.client.aio import AsyncRagmeshClient
from services.web.config import WebSettings
from services.web.deps import forwarded_metadata
from services.web.limits import mcp_body_limit
from services.web.mcp_tools import build_mcp

PATH = "/mcp"


def build_http_mcp(
    settings: WebSettings, base: Callable[[], AsyncRagmeshClient]
) -> tuple[MCPServer, Starlette]:
    def client_for(ctx: Context) -> AsyncRagmeshClient:
        # As for every other route (deps.py): only what gRPC metadata can carry (a key
        # with bytes that are not printable ASCII failed the gateway call itself), and
        # the caller's address appended to x-forwarded-for, so that the gateway counts
        # failed keys against the caller, not against this web service (every MCP user
        # locked out by one caller's wrong keys).
        headers = {name.lower(): str(value) for name, value in (ctx.headers or {}).items()}
        request = ctx.request_context.request
        client = getattr(request, "client", None)
        return base().with_metadata(forwarded_metadata(headers, getattr(client, "host", None)))

    mcp = build_mcp(client_for, local_files=False)
    hosts = [h.strip() for h in settings.mcp_allowed_hosts.split(",") if h.strip()]
    security = TransportSecuritySettings(
        enable_dns_rebinding_protection=bool(hosts), allowed_hosts=hosts, allowed_origins=[]
    )
    app = mcp.streamable_http_app(
        streamable_http_path=PATH,
        stateless_http=True,
        json_response=True,
        transport_security=security,
        # The SDK's default (4 MiB) would cap `upload` at a ~3 MiB file, under REST's limit.
        max_request_body_size=mcp_body_limit(settings),
        host="0.0.0.0",
    )
    return mcp, app
