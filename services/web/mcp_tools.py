"""The MCP server: tools over the gateway for agents (list knowledge bases, search,
ask, upload, get a job). Two transports share these tools: stdio (`ragmesh mcp`,
the API key from RAGMESH_API_KEY or the client config) and streamable HTTP at /mcp
on the web service (the key from each request's Authorization header)."""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from pydantic import Field

from ragmesh.client.aio import AsyncRagmeshClient
from ragmesh.client.errors import RagmeshError
from ragmesh.client.results import AskResult
from services.web.convert import citation_json, message_json
from services.web.protocol import FilterSpec, HistoryTurn, filter_tuples

ClientFor = Callable[[Context], AsyncRagmeshClient]

INSTRUCTIONS = (
    "ragmesh answers questions from knowledge bases of documents, with numbered citations. "
    "Call list_knowledge_bases first; then `ask` for a grounded answer with its sources, or "
    "`search` for the passages alone. `upload` adds a document (ingestion runs in the "
    "background: follow it with get_job)."
)


def _fail(err: RagmeshError | ValueError) -> ToolError:
    if isinstance(err, RagmeshError):
        reason = f" [{err.reason}]" if err.reason else ""
        return ToolError(f"{err.code_name}{reason}: {err.message}")
    return ToolError(f"INVALID_ARGUMENT: {err}")


def build_mcp(client_for: ClientFor, *, local_files: bool) -> MCPServer:  # noqa: C901 - a nested function per tool
    """The server and its tools; `client_for(ctx)` is the gateway client for the call.
    `local_files`: `upload` may read a path (stdio only: over HTTP a path would be
    the server's file, never the agent's)."""
    mcp = MCPServer("ragmesh", instructions=INSTRUCTIONS, version="0.1.0")

    @mcp.tool()
    async def list_knowledge_bases(ctx: Context) -> dict[str, Any]:
        """The knowledge bases this API key can use, with their document counts."""
        rag = client_for(ctx)
        try:
            kbs = [kb async for kb in rag.iter_knowledge_bases()]
        except RagmeshError as err:
            raise _fail(err) from err
        return {
            "knowledge_bases": [
                {
                    "knowledge_base_id": kb.knowledge_base_id,
                    "description": kb.description,
                    "document_count": kb.document_count,
                    "chunk_count": kb.chunk_count,
                }
                for kb in kbs
            ]
        }

    @mcp.tool()
    async def search(
        knowledge_base: Annotated[str, Field(description="Knowledge base id.")],
        query: Annotated[str, Field(description="What to look for.")],
        ctx: Context,
        top_k: Annotated[int, Field(ge=0, description="Passages (0: default).")] = 5,
        mode: Annotated[str | None, Field(description="dense, sparse or hybrid.")] = None,
        filters: Annotated[
            list[FilterSpec] | None,
            Field(description='Metadata conditions, e.g. [{"field": "language", "value": "en"}].'),
        ] = None,
    ) -> dict[str, Any]:
        """The passages of a knowledge base that match a query best, with their documents
        and locations (retrieval only: no answer)."""
        rag = client_for(ctx)
        try:
            resp = await rag.search(
                knowledge_base,
                query,
                top_k=top_k,
                mode=mode,
                filters=filter_tuples(filters or []),
            )
        except (RagmeshError, ValueError) as err:
            raise _fail(err) from err
        return {"hits": [citation_json(h) for h in resp.hits]}

    @mcp.tool()
    async def ask(
        knowledge_base: Annotated[str, Field(description="Knowledge base id.")],
        question: Annotated[str, Field(description="The question.")],
        ctx: Context,
        top_k: Annotated[int, Field(ge=0, description="Passages for the answer (0: default).")] = 0,
        filters: Annotated[list[FilterSpec] | None, Field(description="As for search.")] = None,
        max_tokens: Annotated[int, Field(ge=0, description="Answer length (0: default).")] = 0,
        history: Annotated[
            list[HistoryTurn] | None,
            Field(
                description="The conversation so far, oldest first, for a follow-up question: "
                '[{"role": "user", "content": "..."}, {"role": "assistant", "content": "..."}].'
            ),
        ] = None,
    ) -> dict[str, Any]:
        """A grounded answer from the knowledge base, with [n] markers that refer to the
        numbered sources returned with it; `abstained` is true when the knowledge base
        does not contain the answer. With `history`, a follow-up is searched as the
        standalone query returned in `search_query`."""
        rag = client_for(ctx)
        result = AskResult()
        try:
            async for event in rag.ask(
                knowledge_base,
                question,
                top_k=top_k,
                filters=filter_tuples(filters or []),
                max_tokens=max_tokens,
                history=[(t.role, t.content) for t in history or []],
            ):
                result.add(event)
        except (RagmeshError, ValueError) as err:
            raise _fail(err) from err
        final = result.final
        return {
            "answer": result.answer,
            "abstained": result.abstained,
            "grounded": bool(final and final.grounded),
            "citations": [citation_json(c) for c in result.citations],
            "sources": [citation_json(s) for s in result.sources],
            "search_query": result.search_query,
            "search_query_source": result.search_query_source,
        }

    @mcp.tool()
    async def upload(
        knowledge_base: Annotated[str, Field(description="Knowledge base id.")],
        ctx: Context,
        text: Annotated[str | None, Field(description="Plain text or Markdown to add.")] = None,
        content_base64: Annotated[
            str | None, Field(description="A file's bytes, base64 (PDF, HTML, Word, ...).")
        ] = None,
        path: Annotated[
            str | None, Field(description="A local file (stdio transport only).")
        ] = None,
        file_name: Annotated[
            str, Field(description="The document's name (needed with text or content).")
        ] = "",
        document_id: Annotated[str, Field(description="Default: derived from the name.")] = "",
        wait: Annotated[bool, Field(description="Wait until the document is searchable.")] = False,
    ) -> dict[str, Any]:
        """Add a document (exactly one of text, content_base64 or path) to a knowledge
        base. Returns the ingestion job; with wait=true, once it has ended."""
        source, name = _upload_source(text, content_base64, path, file_name, local_files)
        rag = client_for(ctx)
        try:
            resp = await rag.upload_document(
                knowledge_base, source, file_name=name, document_id=document_id
            )
            job = resp.job
            if wait:
                job = await rag.wait_for_job(job.job_id, timeout=600)
        except (RagmeshError, ValueError) as err:
            raise _fail(err) from err
        return {"job": message_json(job), "document": message_json(resp.document)}

    @mcp.tool()
    async def get_job(
        job_id: Annotated[str, Field(description="The job id `upload` returned.")],
        ctx: Context,
    ) -> dict[str, Any]:
        """An ingestion job's state (QUEUED, RUNNING, SUCCEEDED, FAILED, CANCELLED), its
        progress and, when it failed, why."""
        rag = client_for(ctx)
        try:
            return message_json(await rag.get_ingestion_job(job_id))
        except RagmeshError as err:
            raise _fail(err) from err

    return mcp


def _upload_source(
    text: str | None,
    content_base64: str | None,
    path: str | None,
    file_name: str,
    local_files: bool,
) -> tuple[Any, str]:
    given = [x for x in (text, content_base64, path) if x is not None]
    if len(given) != 1:
        raise ToolError("INVALID_ARGUMENT: give exactly one of text, content_base64 or path")
    if path is not None:
        if not local_files:
            raise ToolError(
                "INVALID_ARGUMENT: `path` works over stdio only; send text or content_base64"
            )
        p = Path(path).expanduser()
        if not p.is_file():
            raise ToolError(f"NOT_FOUND: no such file: {p}")
        return str(p), file_name or p.name
    if not file_name:
        raise ToolError("INVALID_ARGUMENT: file_name is needed with text or content_base64")
    if text is not None:
        return text.encode(), file_name
    try:
        return base64.b64decode(content_base64 or "", validate=True), file_name
    except (binascii.Error, ValueError) as exc:
        raise ToolError(f"INVALID_ARGUMENT: content_base64 is not base64: {exc}") from exc
