"""The MCP server through the official `mcp` client, over streamable HTTP (/mcp on the
web service) and over stdio (`ragmesh mcp` as a subprocess), against the real stack."""

from __future__ import annotations

import asyncio
import json
import math
import os
import sys
from pathlib import Path
from typing import Any

import httpx2
import pytest
from mcp import Client
from mcp.client.stdio import StdioServerParameters
from mcp.client.streamable_http import streamable_http_client

from tests.e2e.conftest import ALPHA_KEY
from tests.e2e.web.conftest import KB, MAX_WEB_UPLOAD, WebStack

DEFAULT_MAX_BODY = 1024 * 1024  # RAGMESH_WEB_MAX_BODY_BYTES, not set by the fixture
REPO = Path(__file__).resolve().parents[3]
TOOLS = {"list_knowledge_bases", "search", "ask", "upload", "get_job"}


def http_client(web: WebStack, key: str = ALPHA_KEY, source: str = "") -> Client:
    """`source`: the address the gateway counts a failed key against (this stack trusts
    the x-forwarded-for entry left of the web service's), so that one test's wrong keys
    lock no other test out."""
    headers = {"Authorization": f"Bearer {key}"}
    if source:
        headers["X-Forwarded-For"] = source
    http = httpx2.AsyncClient(headers=headers, timeout=httpx2.Timeout(30, read=300))
    return Client(streamable_http_client(f"{web.url}/mcp", http_client=http))


def stdio_client(web: WebStack) -> Client:
    env = {
        **os.environ,
        "RAGMESH_GATEWAY_ADDR": web.gateway,
        "RAGMESH_API_KEY": ALPHA_KEY,
        "PYTHONPATH": str(REPO),
    }
    params = StdioServerParameters(
        command=sys.executable, args=["-m", "ragmesh.cli", "mcp"], env=env, cwd=str(REPO)
    )
    return Client(params)


def payload(result: Any) -> Any:
    assert not result.is_error, result.content
    if result.structured_content is not None:
        return result.structured_content
    return json.loads(result.content[0].text)


@pytest.mark.llm
async def test_http_tools(web: WebStack) -> None:
    async with http_client(web) as mcp:
        assert {t.name for t in (await mcp.list_tools()).tools} == TOOLS
        kbs = payload(await mcp.call_tool("list_knowledge_bases", {}))["knowledge_bases"]
        assert KB in {kb["knowledge_base_id"] for kb in kbs}
        hits = payload(
            await mcp.call_tool(
                "search",
                {
                    "knowledge_base": KB,
                    "query": "How often is the ceramic membrane replaced?",
                    "top_k": 2,
                    "filters": [{"field": "document_id", "value": "reactors.md"}],
                },
            )
        )["hits"]
        assert hits and "eleven months" in hits[0]["text"]
        answer = payload(
            await mcp.call_tool(
                "ask",
                {
                    "knowledge_base": KB,
                    "question": "Who invented the Zorblat reactor?",
                    "max_tokens": 40,
                    "top_k": 2,
                },
            )
        )
        assert answer["answer"].strip()
        assert any("Okonkwo" in s["text"] for s in answer["sources"])
        up = payload(
            await mcp.call_tool(
                "upload",
                {
                    "knowledge_base": KB,
                    "text": "The Brindle lighthouse has a green lamp.",
                    "file_name": "lighthouse.txt",
                    "wait": True,
                },
            )
        )
        assert up["job"]["state"] == "JOB_STATE_SUCCEEDED"
        job = payload(await mcp.call_tool("get_job", {"job_id": up["job"]["job_id"]}))
        assert job["document_id"] == "lighthouse.txt"
        # A path is the server's file over HTTP: refused.
        refused = await mcp.call_tool(
            "upload", {"knowledge_base": KB, "path": "/etc/hostname", "file_name": "h"}
        )
        assert refused.is_error and "stdio only" in refused.content[0].text
        missing = await mcp.call_tool("search", {"knowledge_base": "nope-kb", "query": "x"})
        assert missing.is_error and "KNOWLEDGE_BASE_NOT_FOUND" in missing.content[0].text


async def test_http_needs_the_key(web: WebStack) -> None:
    async with http_client(web, key="wrong-key-456", source="203.0.113.70") as mcp:
        result = await mcp.call_tool("list_knowledge_bases", {})
        assert result.is_error and "UNAUTHENTICATED" in result.content[0].text


async def test_http_refuses_a_body_over_its_limit_before_reading_it(web: WebStack) -> None:
    # The limit fits an `upload` of a file at the web upload limit (as base64, in its
    # envelope); one byte more is refused from the declared length, in JSON-RPC's shape.
    # Only the headers are sent (over a raw socket): the answer must come without the body,
    # and a client still writing a body the server will not read may see the connection
    # reset before it reads the answer.
    limit = 4 * math.ceil(MAX_WEB_UPLOAD / 3) + DEFAULT_MAX_BODY
    host, port = web.url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    head = (
        f"POST /mcp HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {ALPHA_KEY}\r\n"
        "Content-Type: application/json\r\nAccept: application/json, text/event-stream\r\n"
        f"Content-Length: {limit + 1}\r\n\r\n"
    )
    writer.write(head.encode())
    await writer.drain()
    try:
        answer = await asyncio.wait_for(reader.read(), timeout=30)
    finally:
        writer.close()
    status, _, rest = answer.partition(b"\r\n")
    assert status.split()[1] == b"413", answer[:200]
    body = json.loads(rest.partition(b"\r\n\r\n")[2])
    assert body["error"]["data"] == {"reason": "BODY_TOO_LARGE", "limit_bytes": limit}


async def test_http_headers_grpc_cannot_carry_are_a_wrong_key(web: WebStack) -> None:
    # A key with bytes that are not printable ASCII used to fail the gRPC call itself
    # (a traceback in the log, the tool failing with an internal error).
    http = httpx2.AsyncClient(
        headers={
            "Authorization": "Bearer café-key-0001".encode(),
            "X-Forwarded-For": "203.0.113.71",
        },
        timeout=30,
    )
    async with Client(streamable_http_client(f"{web.url}/mcp", http_client=http)) as mcp:
        result = await mcp.call_tool("list_knowledge_bases", {})
    assert result.is_error and "UNAUTHENTICATED" in result.content[0].text


async def test_http_wrong_keys_lock_out_their_caller_only(web: WebStack) -> None:
    """MCP calls did not carry the caller's address: every caller's failed keys counted
    against the web service itself, so one caller's wrong keys locked out every MCP user."""
    async with http_client(web, key="wrong-key-789", source="203.0.113.72") as mcp:
        results = [await mcp.call_tool("list_knowledge_bases", {}) for _ in range(4)]
    assert all(r.is_error for r in results)
    assert "RESOURCE_EXHAUSTED" in results[-1].content[0].text  # this stack allows 3
    async with http_client(web, source="203.0.113.73") as mcp:
        result = await mcp.call_tool("list_knowledge_bases", {})
    assert not result.is_error, result.content


async def test_stdio_tools(web: WebStack, tmp_path: Path) -> None:
    note = tmp_path / "stdio-note.md"
    note.write_text("# Kettles\n\nThe Varnley kettle whistles in B flat.\n")
    async with stdio_client(web) as mcp:
        assert {t.name for t in (await mcp.list_tools()).tools} == TOOLS
        up = payload(
            await mcp.call_tool("upload", {"knowledge_base": KB, "path": str(note), "wait": True})
        )
        assert up["job"]["state"] == "JOB_STATE_SUCCEEDED"
        hits = payload(
            await mcp.call_tool(
                "search", {"knowledge_base": KB, "query": "Which kettle whistles in B flat?"}
            )
        )["hits"]
        assert hits[0]["document_id"] == "stdio-note.md"
