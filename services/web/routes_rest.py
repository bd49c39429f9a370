"""REST + SSE over the gateway, for pages and scripts without gRPC: knowledge bases,
documents (multipart upload), ingestion jobs (watched as server-sent events) and
search. Bodies and answers are the gateway's messages as JSON (convert.py)."""

from __future__ import annotations

import io
import json
from collections.abc import AsyncIterator, Callable
from typing import Annotated, Any

from fastapi import APIRouter, File, Form, Query, Request, Response, UploadFile
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, Field

from ragmesh.client import builders
from ragmesh.client.builders import job_is_done
from ragmesh.client.document_ids import folder_document_id
from ragmesh.client.errors import RagmeshError
from services.common.errors import InvalidArgument
from services.web import sse
from services.web.convert import citation_json, message_json
from services.web.deps import Gateway, state
from services.web.errors import from_exception
from services.web.protocol import INT32_MAX, INT64_MAX, FilterSpec, filter_tuples

router = APIRouter(prefix="/api/v1", tags=["REST"])
PageSize = Annotated[int, Query(ge=0, le=INT32_MAX, description="0: the server default.")]
PageToken = Annotated[str, Query(description="next_page_token of the previous page.")]


def timeout_of(request: Request) -> float:
    return state(request).settings.request_timeout_s


def bad_option(exc: ValueError, param: str) -> InvalidArgument:
    return InvalidArgument(str(exc), reason="INVALID_OPTION", metadata={"param": param})


def check_option(param: str, convert: Callable[[Any], object], value: Any) -> None:
    """One option as the SDK's builders will convert it (an enum's name, a filter), so
    that an unknown one is refused naming its field."""
    try:
        convert(value)
    except ValueError as exc:
        raise bad_option(exc, param) from exc


def check_struct(param: str, value: dict[str, Any] | None) -> None:
    """A JSON object that becomes a protobuf Struct (index_params, metadata): its
    numbers must fit a double."""
    try:
        builders.to_struct(value)
    except ValueError as exc:
        raise InvalidArgument(
            f"{param}: {exc}", reason="INVALID_REQUEST_BODY", metadata={"param": param}
        ) from exc


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
    check_option("language", builders.text_language, body.language)
    check_option("metric", builders.metric, body.metric)
    check_option("index_type", builders.index_type, body.index_type)
    check_struct("index_params", body.index_params)
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
    except ValueError as exc:  # anything else protobuf refuses (a lone surrogate: \ud800)
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
    except (ValueError, RecursionError) as exc:
        problem = exc if isinstance(exc, ValueError) else "nested too deeply"
        raise InvalidArgument(
            f"metadata is not JSON: {problem}",
            reason="MALFORMED_JSON",
            metadata={"param": "metadata"},
        ) from exc
    if not isinstance(value, dict):
        raise InvalidArgument(
            "metadata must be a JSON object",
            reason="INVALID_REQUEST_BODY",
            metadata={"param": "metadata"},
        )
    check_struct("metadata", value)
    return value


#: The upload's form fields: each at most once (FastAPI would keep the last of two).
UPLOAD_FIELDS = (
    "file",
    "text",
    "file_name",
    "document_id",
    "media_type",
    "metadata",
    "path_in_folder",
)


async def check_single_fields(request: Request) -> None:
    """One document per request: a repeated `file` part (or any other field) is refused
    rather than all but the last being dropped unseen."""
    form = await request.form()  # already parsed for the parameters: the same form
    for name in UPLOAD_FIELDS:
        count = len(form.getlist(name))
        if count > 1:
            what = "one file per request" if name in ("file", "text") else "one value each"
            raise InvalidArgument(
                f"{what}: the form has {count} `{name}` fields",
                reason="INVALID_REQUEST_BODY",
                metadata={"param": name},
            )


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
    path_in_folder: Annotated[
        str,
        Form(
            description="The file's path inside a folder being uploaded (`sub/intro.md`): "
            "without a document_id, the id is derived from it as `ragmesh ingest` does, so "
            "equal names in two sub-folders stay two documents."
        ),
    ] = "",
) -> dict[str, Any]:
    """Multipart: `file` (or `text` with a `file_name`), optional `document_id`,
    `media_type`, `metadata` and `path_in_folder`. Answers 202 once the bytes are stored
    and the ingestion job is queued; follow the job at /api/v1/jobs/{job_id}/events."""
    await check_single_fields(request)
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
        document_id=document_id or folder_document_id(path_in_folder),
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
    offset: Annotated[int, Query(ge=0, le=INT64_MAX)] = 0,
    max_chars: Annotated[int, Query(ge=0, le=INT32_MAX, description="0: the server default.")] = 0,
) -> dict[str, Any]:
    """A page of the normalised text that citation offsets refer to."""
    page = await rag.get_document_text(
        kb, document_id, offset=offset, max_chars=max_chars, timeout=timeout_of(request)
    )
    return message_json(page)


# -- search -----------------------------------------------------------------------------


class SearchBody(BaseModel):
    query: str
    top_k: int = Field(0, ge=0, le=INT32_MAX, description="0: the server default.")
    mode: str | None = Field(None, description="dense, sparse or hybrid.")
    min_score: float | None = None
    filters: list[FilterSpec] = Field(default_factory=list)


@router.post("/knowledge-bases/{kb}/search")
async def search(kb: str, body: SearchBody, request: Request, rag: Gateway) -> dict[str, Any]:
    check_option("mode", builders.search_mode, body.mode)
    filters = filter_tuples(body.filters)
    for i, spec in enumerate(filters):
        check_option(f"filters.{i}.op", lambda f: builders.filter_condition(*f), spec)
    try:
        resp = await rag.search(
            kb,
            body.query,
            top_k=body.top_k,
            mode=body.mode,
            min_score=body.min_score,
            filters=filters,
            timeout=timeout_of(request),
        )
    except ValueError as exc:  # anything else protobuf refuses (a lone surrogate: \ud800)
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
    newest_first: Annotated[
        bool, Query(description="The newest job first (default: the oldest first).")
    ] = False,
) -> dict[str, Any]:
    check_option("state", builders.job_state, state_)
    page = await rag.list_ingestion_jobs(
        knowledge_base_id=knowledge_base_id,
        state=state_ or None,
        page_size=page_size,
        page_token=page_token,
        newest_first=newest_first,
        timeout=timeout_of(request),
    )
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
