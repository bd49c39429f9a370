"""The OpenAI-compatible API: /v1/models and /v1/chat/completions (protocol.py says
how requests map to the gateway's Ask)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, StreamingResponse

from ragmesh.client.aio import AsyncRagmeshClient
from ragmesh.client.errors import RagmeshError
from ragmesh.client.results import AskResult
from ragmesh.gateway.v1 import gateway_pb2
from services.common.errors import InvalidArgument
from services.web import sse
from services.web.chat import ChunkWriter, completion_json
from services.web.convert import message_json
from services.web.deps import Gateway, state
from services.web.errors import from_exception
from services.web.protocol import (
    ChatCompletionRequest,
    conversation,
    filter_tuples,
    knowledge_base_of,
    model_name,
)

router = APIRouter(prefix="/v1", tags=["OpenAI-compatible"])


def model_json(kb: gateway_pb2.KnowledgeBase, prefix: str) -> dict[str, Any]:
    return {
        "id": model_name(kb.knowledge_base_id, prefix),
        "object": "model",
        "created": kb.create_time.seconds,
        "owned_by": "ragmesh",
        "ragmesh": message_json(kb),
    }


@router.get("/models", summary="One model per knowledge base the API key can see")
async def list_models(request: Request, rag: Gateway) -> dict[str, Any]:
    prefix = state(request).settings.model_prefix
    timeout = state(request).settings.request_timeout_s
    data = []
    token = ""
    while True:
        page = await rag.list_knowledge_bases(page_token=token, timeout=timeout)
        data += [model_json(kb, prefix) for kb in page.knowledge_bases]
        token = page.next_page_token
        if not token:
            return {"object": "list", "data": data}


@router.get("/models/{model:path}", summary="One knowledge base as a model")
async def get_model(model: str, request: Request, rag: Gateway) -> dict[str, Any]:
    settings = state(request).settings
    kb = await rag.get_knowledge_base(
        knowledge_base_of(model, settings.model_prefix), timeout=settings.request_timeout_s
    )
    return model_json(kb, settings.model_prefix)


def ask_stream(
    rag: AsyncRagmeshClient, req: ChatCompletionRequest, kb: str, timeout: float
) -> AsyncIterator[gateway_pb2.AskResponse]:
    conv = conversation(req)
    opts = req.ragmesh
    try:
        return rag.ask(
            kb,
            conv.question,
            top_k=opts.top_k if opts else 0,
            mode=opts.mode if opts else None,
            filters=filter_tuples(opts.filters) if opts else None,
            max_tokens=req.max_completion_tokens or req.max_tokens or 0,
            temperature=req.temperature,
            answer_mode=opts.answer_mode if opts else None,
            rerank=opts.rerank if opts else None,
            history=[(t.role, t.content) for t in conv.history],
            timeout=timeout,
        )
    except ValueError as exc:  # an unknown mode or filter operator (the SDK's builders)
        raise InvalidArgument(
            str(exc), reason="INVALID_OPTION", metadata={"param": "ragmesh"}
        ) from exc


@router.post(
    "/chat/completions",
    summary="A grounded answer from the knowledge base the model names",
    response_model=None,
)
async def chat_completions(
    req: ChatCompletionRequest, request: Request, rag: Gateway
) -> JSONResponse | StreamingResponse:
    settings = state(request).settings
    kb = knowledge_base_of(req.model, settings.model_prefix)
    model = model_name(kb, settings.model_prefix)
    events = ask_stream(rag, req, kb, settings.ask_timeout_s).__aiter__()
    # The first event (the sources, after retrieval) is awaited before answering: a
    # wrong key, an unknown knowledge base or an overloaded gateway is then an HTTP
    # status, not an error in the middle of a 200 stream.
    try:
        first = await events.__anext__()
    except StopAsyncIteration:
        first = None
    if not req.stream:
        result = AskResult()
        if first is not None:
            result.add(first)
            async for event in events:
                result.add(event)
        return JSONResponse(completion_json(model, kb, result))
    include_usage = bool(req.stream_options and req.stream_options.include_usage)
    writer = ChunkWriter(model, kb, include_usage)
    body = sse.with_keepalive(chunks(writer, first, events), settings.sse_keepalive_s)
    return StreamingResponse(body, media_type="text/event-stream", headers=sse.SSE_HEADERS)


async def chunks(
    writer: ChunkWriter,
    first: gateway_pb2.AskResponse | None,
    events: AsyncIterator[gateway_pb2.AskResponse],
) -> AsyncIterator[str]:
    try:
        if first is not None:
            for chunk in writer.on_event(first):
                yield sse.event(chunk)
            async for event in events:
                for chunk in writer.on_event(event):
                    yield sse.event(chunk)
    except RagmeshError as exc:
        # Mid-stream the status is sent already: the error travels as an event, in
        # OpenAI's shape (its client raises APIError for it).
        yield sse.event(from_exception(exc).body())
        return
    finally:
        aclose = getattr(events, "aclose", None)
        if aclose is not None:
            await aclose()
    yield sse.event("[DONE]")
