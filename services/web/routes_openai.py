"""The OpenAI-compatible API: /v1/models and /v1/chat/completions (protocol.py says
how requests map to the gateway's Ask)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.background import BackgroundTask

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
async def chat_completions(req: ChatCompletionRequest, request: Request, rag: Gateway) -> Response:
    settings = state(request).settings
    kb = knowledge_base_of(req.model, settings.model_prefix)
    model = model_name(kb, settings.model_prefix)
    events = ask_stream(rag, req, kb, settings.ask_timeout_s)
    try:
        if not req.stream:
            answer = asyncio.ensure_future(collect(events))
            await while_connected(request, answer)
            return JSONResponse(completion_json(model, kb, answer.result()))
        # The first event (the sources, once retrieval is done) is awaited before the
        # status is sent: a wrong key, an unknown knowledge base or an overloaded
        # gateway is then an HTTP status, not an error in the middle of a 200 stream.
        # Not longer than a keep-alive interval, though: then the stream starts, and
        # keep-alive comments cover the wait.
        head = asyncio.ensure_future(next_event(events))
        arrived = await while_connected(request, head, settings.sse_keepalive_s)
    except ClientGone:
        return Response(status_code=CLIENT_CLOSED_REQUEST)
    if arrived:
        head.result()  # the gateway's error, as the HTTP status
    include_usage = bool(req.stream_options and req.stream_options.include_usage)
    writer = ChunkWriter(model, kb, include_usage)
    body = sse.with_keepalive(
        chunks(writer, head, events), settings.sse_keepalive_s, comment_first=not arrived
    )
    return StreamingResponse(
        body,
        media_type="text/event-stream",
        headers=sse.SSE_HEADERS,
        # Run once the response ended, however it ended: a client gone before the body
        # was read at all leaves the gateway call to nobody else.
        background=BackgroundTask(end_answer, body, head, events),
    )


async def collect(events: AsyncIterator[gateway_pb2.AskResponse]) -> AskResult:
    result = AskResult()
    async for event in events:
        result.add(event)
    return result


async def next_event(
    events: AsyncIterator[gateway_pb2.AskResponse],
) -> gateway_pb2.AskResponse | None:
    return await anext(events, None)


class ClientGone(Exception):
    """The HTTP client disconnected before the response started."""


#: nginx's status for a request its client closed (never sent: nobody is listening)
CLIENT_CLOSED_REQUEST = 499


async def while_connected(
    request: Request, work: asyncio.Future[Any], within_s: float | None = None
) -> bool:
    """Waits for `work`: True once it is done, False when `within_s` passed first.
    When the HTTP client disconnects first, `work` is cancelled (and with it the
    gateway call under it, at once) and ClientGone raised.

    Until the response starts nobody else reads the request's messages: the body
    was read, so the next one is `http.disconnect` (once the response has started,
    StreamingResponse watches for it itself)."""
    gone = asyncio.ensure_future(disconnected(request))
    try:
        await asyncio.wait({work, gone}, timeout=within_s, return_when=asyncio.FIRST_COMPLETED)
        if work.done():
            return True
        if gone.done():
            raise ClientGone
        return False
    except BaseException:
        # The client went away, or this handler was cancelled (shutdown): end the call.
        await cancel(work)
        raise
    finally:
        await cancel(gone)


async def disconnected(request: Request) -> None:
    while (await request.receive())["type"] != "http.disconnect":
        pass


async def cancel(task: asyncio.Future[Any]) -> None:
    """Cancels `task` and waits until it ended; its outcome is dropped (not this
    task's own cancellation, should it come meanwhile)."""
    task.cancel()
    await asyncio.wait({task})
    if not task.cancelled():
        task.exception()  # retrieved, so that asyncio does not log it


async def end_answer(
    body: AsyncGenerator[str, None],
    head: asyncio.Future[gateway_pb2.AskResponse | None],
    events: AsyncIterator[gateway_pb2.AskResponse],
) -> None:
    """Ends what the stream did not: its body (closed, if a disconnect left it
    suspended), the read of the first event and the gateway call."""
    await body.aclose()
    await cancel(head)
    aclose = getattr(events, "aclose", None)
    if aclose is not None:
        await aclose()


async def chunks(
    writer: ChunkWriter,
    head: asyncio.Future[gateway_pb2.AskResponse | None],
    events: AsyncIterator[gateway_pb2.AskResponse],
) -> AsyncIterator[str]:
    """The answer's chunks: `head` is the first event's read, `events` the rest."""
    try:
        first = await head
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
        await cancel(head)  # (a client gone while the first event was awaited)
        aclose = getattr(events, "aclose", None)
        if aclose is not None:
            await aclose()
    yield sse.event("[DONE]")
