"""`ragmesh mcp`: the MCP tools over stdio, for desktop agents. One gateway client
for the process, its key from RAGMESH_API_KEY or the client config."""

from __future__ import annotations

import anyio

from ragmesh.client.aio import AsyncRagmeshClient
from services.web.mcp_tools import build_mcp


async def serve() -> None:
    client = AsyncRagmeshClient.from_env()
    try:
        await build_mcp(lambda _ctx: client, local_files=True).run_stdio_async()
    finally:
        await client.close()


def run() -> None:
    # stdout is the protocol's: nothing else may print there (logs go to stderr).
    anyio.run(serve)
