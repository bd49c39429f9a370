"""REST + SSE over the gateway, for pages and scripts without gRPC: knowledge bases,
documents (multipart upload), ingestion jobs (watched as server-sent events) and
search. Bodies and answers are the gateway's messages as JSON (convert.py)."""

from __future__ import annotations

import io
import json
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, File, Form, Query, Request, Response, UploadFile
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, Field

from ragmesh.client.builders import job_is_done
from ragmesh.client.errors import RagmeshError
from services.common.errors import InvalidArgument
from services.web import sse
from services.web.convert import citation_json, message_json
from services.web.deps import Gateway, state
from services.web.errors import from_exception
from services.web.protocol import FilterSpec, filter_tuples

router = APIRouter(prefix="/api/v1", tags=["REST"])
PageSize = Annotated[int, Query(ge=0, description="0: the server default.")]
PageToken = Annotated[str, Query(description="next_page_token of the previous page.")]


def timeout_of(request: Request) -> float:
    return state(request).settings.request_timeout_s


def bad_option(exc: ValueError, param: str) -> InvalidArgument:
    return InvalidArgument(str(exc), reason="INVALID_OPTION", metadata={"param": param})


# -- knowledge bases --------------------------------------------------------------------


class CreateKnowledgeBase(BaseModel):
    knowledge_base_id: str = Field(description="[a-z0-9][a-z0-9_-]{0,62}")
    description: str = ""
    language: str | None = Field(None, description="english, chinese, ... (text analysis)")
    metric: str | None = Field(None, description="cosine, l2 or ip")
    index_type: str | None = Field(None, description="flat, ivf_flat, hnsw, autoindex")
    index_params: dict[str, Any] | None = None


@router.get("/knowledge-bases")
async def list_knowledge_bases(
    request: Request, rag: Gateway, page_size: PageSize = 0, page_token: PageToken = ""
) -> dict[str, Any]:
    page = await rag.list_knowledge_bases(
        page_size=page_size, page_token=page_token, timeout=timeout_of(request)
    )
    return message_json(page)


@router.post("/knowledge-bases", status_code=201)
async def create_knowledge_base(
    body: CreateKnowledgeBase, request: Request, rag: Gateway
) -> dict[str, Any]:
    try:
        kb = await rag.create_knowledge_base(
            body.knowledge_base_id,
            description=body.description,
            language=body.language,
            metric=body.metric,
            index_type=body.index_type,
            index_params=body.index_params,
            timeout=timeout_of(request),
        )
    except ValueError as exc:
        raise bad_option(exc, "body") from exc
    return message_json(kb)


@router.get("/knowledge-bases/{kb}")
async def get_knowledge_base(kb: str, request: Request, rag: Gateway) -> dict[str, Any]:
    return message_json(await rag.get_knowledge_base(kb, timeout=timeout_of(request)))


@router.delete("/knowledge-bases/{kb}", status_code=204)
async def delete_knowledge_base(kb: str, request: Request, rag: Gateway) -> Response:
    await rag.delete_knowledge_base(kb, timeout=timeout_of(request))
    return Response(status_code=204)


# -- documents --------------------------------------------------------------------------


def metadata_of(raw: str | None) -> dict[str, Any] | None:
    if not raw:
        return None
    try:
        value = json.loads(raw)
    except ValueError as exc:
        raise InvalidArgument(
            f"metadata is not JSON: {exc}", reason="MALFORMED_JSON", metadata={"param": "metadata"}
        ) from exc
    if not isinstance(value, dict):
        raise InvalidArgument(
            "metadata must be a JSON object",
            reason="INVALID_REQUEST_BODY",
            metadata={"param": "metadata"},
        )
    return value


@router.post("/knowledge-bases/{kb}/documents", status_code=202)
async def upload_document(
    kb: str,
    request: Request,
    rag: Gateway,
    file: Annotated[UploadFile | None, File(description="The document.")] = None,
    text: Annotated[str | None, Form(description="Plain text instead of a file.")] = None,
    file_name: Annotated[str, Form(description="Name of the document (default: the file's).")] = "",
    document_id: Annotated[str, Form(description="Default: derived from the name.")] = "",
    media_type: Annotated[str, Form(description="Default: detected.")] = "",
    metadata: Annotated[str | None, Form(description="A JSON object.")] = None,
) -> dict[str, Any]:
    """Multipart: `file` (or `text` with a `file_name`), optional `document_id`,
    `media_type` and `metadata`. Answers 202 once the bytes are stored and the
    ingestion job is queued; follow the job at /api/v1/jobs/{job_id}/events."""
    if (file is None) == (text is None):
        raise InvalidArgument(
            "send either a `file` part or a `text` field",
            reason="MISSING_UPLOAD",
            metadata={"param": "file"},
        )
    meta = metadata_of(metadata)
    if file is not None:
        source: Any = file.file
        name = file_name or file.filename or ""
    else:
        source = io.BytesIO((text or "").encode())
        name = file_name or "text.txt"
    if not name:
        raise InvalidArgument(
            "the file part has no file name: send `file_name`",
            reason="MISSING_FILE_NAME",
            metadata={"param": "file_name"},
        )
    resp = await rag.upload_document(
        kb,
        source,
        file_name=name,
        document_id=document_id,
        media_type=media_type,
        metadata=meta,
    )
    return message_json(resp)


@router.get("/knowledge-bases/{kb}/documents")
async def list_documents(
    kb: str, request: Request, rag: Gateway, page_size: PageSize = 0, page_token: PageToken = ""
) -> dict[str, Any]:
    page = await rag.list_documents(
        kb, page_size=page_size, page_token=page_token, timeout=timeout_of(request)
    )
    return message_json(page)


@router.get("/knowledge-bases/{kb}/documents/{document_id}")
async def get_document(kb: str, document_id: str, request: Request, rag: Gateway) -> dict[str, Any]:
    return message_json(await rag.get_document(kb, document_id, timeout=timeout_of(request)))


@router.delete("/knowledge-bases/{kb}/documents/{document_id}", status_code=204)
async def delete_document(kb: str, document_id: str, request: Request, rag: Gateway) -> Response:
    await rag.delete_document(kb, document_id, timeout=timeout_of(request))
    return Response(status_code=204)


@router.get("/knowledge-bases/{kb}/documents/{document_id}/text")
async def document_text(
    kb: str,
    document_id: str,
    request: Request,
    rag: Gateway,
    offset: Annotated[int, Query(ge=0)] = 0,
    max_chars: Annotated[int, Query(ge=0, description="0: the server default.")] = 0,
) -> dict[str, Any]:
    """A page of the normalised text that citation offsets refer to."""
    page = await rag.get_document_text(
        kb, document_id, offset=offset, max_chars=max_chars, timeout=timeout_of(request)
    )
    return message_json(page)


# -- search -----------------------------------------------------------------------------


class SearchBody(BaseModel):
    query: str
    top_k: int = Field(0, ge=0, description="0: the server default.")
    mode: str | None = Field(None, description="dense, sparse or hybrid.")
    min_score: float | None = None
    filters: list[FilterSpec] = Field(default_factory=list)


@router.post("/knowledge-bases/{kb}/search")
async def search(kb: str, body: SearchBody, request: Request, rag: Gateway) -> dict[str, Any]:
    try:
        resp = await rag.search(
            kb,
            body.query,
            top_k=body.top_k,
            mode=body.mode,
            min_score=body.min_score,
            filters=filter_tuples(body.filters),
            timeout=timeout_of(request),
        )
    except ValueError as exc:
        raise bad_option(exc, "body") from exc
    out = message_json(resp)
    out["hits"] = [citation_json(h) for h in resp.hits]
    return out


# -- jobs -------------------------------------------------------------------------------


@router.get("/jobs")
async def list_jobs(
    request: Request,
    rag: Gateway,
    knowledge_base_id: str = "",
    state_: Annotated[str, Query(alias="state", description="queued, running, ...")] = "",
    page_size: PageSize = 0,
    page_token: PageToken = "",
) -> dict[str, Any]:
    try:
        page = await rag.list_ingestion_jobs(
            knowledge_base_id=knowledge_base_id,
            state=state_ or None,
            page_size=page_size,
            page_token=page_token,
            timeout=timeout_of(request),
        )
    except ValueError as exc:
        raise bad_option(exc, "state") from exc
    return message_json(page)


@router.get("/jobs/{job_id}")
async def get_job(job_id: str, request: Request, rag: Gateway) -> dict[str, Any]:
    return message_json(await rag.get_ingestion_job(job_id, timeout=timeout_of(request)))


@router.get(
    "/jobs/{job_id}/events",
    response_class=StreamingResponse,
    responses={200: {"content": {"text/event-stream": {}}}},
)
async def watch_job(job_id: str, request: Request, rag: Gateway) -> StreamingResponse:
    """Server-sent events: `job` with the job now and on every change, then `end`
    once it is SUCCEEDED, FAILED or CANCELLED (an EventSource should close then)."""
    job = await rag.get_ingestion_job(job_id, timeout=timeout_of(request))

    async def events() -> AsyncIterator[str]:
        yield sse.event(message_json(job), "job")
        if not job_is_done(job):
            stream = rag.watch_ingestion_job(job_id)
            try:
                # The stream ends right after the job does; read to its end rather than
                # cancel it (a cancelled watch is logged CANCELLED by the gateway).
                async for update in stream:
                    yield sse.event(message_json(update), "job")
            except RagmeshError as exc:
                yield sse.event(from_exception(exc).body(), "error")
                return
            finally:
                await stream.aclose()  # type: ignore[attr-defined]
        yield sse.event({}, "end")

    body = sse.with_keepalive(events(), state(request).settings.sse_keepalive_s)
    return StreamingResponse(body, media_type="text/event-stream", headers=sse.SSE_HEADERS)
