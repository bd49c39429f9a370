"""Trace propagation over real sockets, spans collected in memory: the server
interceptor's SERVER span continues the caller's trace from `traceparent`, the
aio and blocking channels add a CLIENT span per call (ended when a stream
ends), status codes mark the right spans ERROR, and the ingestion producer puts
`traceparent` in the task message that sits in Redis. With tracing off nothing
is recorded and nothing is sent."""

from __future__ import annotations

import asyncio
import base64
import json
import time
import uuid
from collections.abc import AsyncIterator, Iterator

import grpc
import pytest
import redis
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from ragmesh.chunking.v1 import chunking_pb2, chunking_pb2_grpc
from ragmesh.generation.v1 import generation_pb2, generation_pb2_grpc
from services.common import tracing
from services.common.channels import create_channel, create_sync_channel
from services.common.config import CommonSettings
from services.common.errors import ResourceExhausted
from services.common.logs import request_id_var
from services.common.server import RunningServer, start_server
from services.generation.config import GenerationSettings
from services.generation.server import GenerationService
from services.generation.types import AnswerRequest, FinalAnswer, Passage
from services.jobs.queue import ENQUEUED_AT_HEADER, INGEST_TASK, CeleryQueue
from services.jobs.settings import JobsSettings
from tests.support.llm_standin import StandInLLM, good_stream
from tests.support.toy_service import ToyService

CHUNK = "ragmesh.chunking.v1.ChunkingService/ChunkDocument"
GENERATE = "ragmesh.generation.v1.GenerationService/GenerateAnswer"


@pytest.fixture
def exporter() -> Iterator[InMemorySpanExporter]:
    memory = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(memory))
    tracing.install(provider)
    yield memory
    tracing.install(None)


@pytest.fixture
async def toy() -> AsyncIterator[RunningServer]:
    running = await start_server(
        ToyService(), 0, CommonSettings(metrics_enabled=False, shutdown_grace_s=0.5)
    )
    yield running
    await running.stop()


async def _spans(exporter: InMemorySpanExporter, count: int) -> list[ReadableSpan]:
    """The finished spans once there are `count` (client spans end a tick after their call)."""
    for _ in range(200):
        spans = list(exporter.get_finished_spans())
        if len(spans) >= count:
            return spans
        await asyncio.sleep(0.01)
    raise AssertionError(f"{len(spans)} spans, expected {count}: {[s.name for s in spans]}")


def _by(spans: list[ReadableSpan], name: str, kind: SpanKind) -> ReadableSpan:
    found = [s for s in spans if s.name == name and s.kind == kind]
    assert len(found) == 1, [(s.name, s.kind) for s in spans]
    return found[0]


def _parent_of(span: ReadableSpan) -> int:
    assert span.parent is not None, f"{span.name} has no parent"
    return span.parent.span_id


async def test_a_call_continues_the_callers_trace(
    exporter: InMemorySpanExporter, toy: RunningServer
) -> None:
    channel = create_channel(f"127.0.0.1:{toy.port}")
    stub = chunking_pb2_grpc.ChunkingServiceStub(channel)
    with tracing.span("caller") as caller:
        resp = await stub.ChunkDocument(chunking_pb2.ChunkDocumentRequest(text="hi"), timeout=5)
    await channel.close()
    spans = await _spans(exporter, 3)
    client = _by(spans, CHUNK, SpanKind.CLIENT)
    server = _by(spans, CHUNK, SpanKind.SERVER)
    assert _parent_of(client) == caller.get_span_context().span_id
    assert _parent_of(server) == client.context.span_id
    assert server.parent is not None and server.parent.is_remote
    assert {s.context.trace_id for s in spans} == {caller.get_span_context().trace_id}
    assert server.attributes is not None
    assert server.attributes["rpc.system"] == "grpc"
    assert server.attributes["rpc.service"] == "ragmesh.chunking.v1.ChunkingService"
    assert server.attributes["rpc.method"] == "ChunkDocument"
    assert server.attributes["rpc.grpc.status_code"] == 0
    # the toy echoes its request id: the span carries the same one
    assert server.attributes["ragmesh.request_id"] == resp.title
    assert server.status.status_code is StatusCode.UNSET


async def test_a_call_without_traceparent_starts_a_trace(
    exporter: InMemorySpanExporter, toy: RunningServer
) -> None:
    # A plain channel (no interceptor): the caller is outside any trace.
    async with grpc.aio.insecure_channel(f"127.0.0.1:{toy.port}") as channel:
        await chunking_pb2_grpc.ChunkingServiceStub(channel).ChunkDocument(
            chunking_pb2.ChunkDocumentRequest(text="hi"), timeout=5
        )
    (server,) = await _spans(exporter, 1)
    assert server.kind is SpanKind.SERVER and server.parent is None


@pytest.mark.parametrize(
    ("text", "code", "server_error"),
    [("invalid", 3, False), ("crash", 13, True), ("timeout", 4, True)],
)
async def test_status_codes_mark_the_spans(
    exporter: InMemorySpanExporter, toy: RunningServer, text: str, code: int, server_error: bool
) -> None:
    channel = create_channel(f"127.0.0.1:{toy.port}")
    with pytest.raises(grpc.aio.AioRpcError):
        await chunking_pb2_grpc.ChunkingServiceStub(channel).ChunkDocument(
            chunking_pb2.ChunkDocumentRequest(text=text), timeout=5
        )
    await channel.close()
    spans = await _spans(exporter, 2)
    client = _by(spans, CHUNK, SpanKind.CLIENT)
    server = _by(spans, CHUNK, SpanKind.SERVER)
    for s in (client, server):
        assert s.attributes is not None and s.attributes["rpc.grpc.status_code"] == code
    # a caller's mistake is the client's error, not the server's (OpenTelemetry's gRPC rules)
    assert client.status.status_code is StatusCode.ERROR
    assert (server.status.status_code is StatusCode.ERROR) is server_error


async def test_a_stream_span_ends_with_the_stream(
    exporter: InMemorySpanExporter, toy: RunningServer
) -> None:
    channel = create_channel(f"127.0.0.1:{toy.port}")
    stub = generation_pb2_grpc.GenerationServiceStub(channel)
    token = request_id_var.set("rid-stream-1")
    with tracing.span("caller"):
        call = stub.GenerateAnswer(generation_pb2.GenerateAnswerRequest(question="q"), timeout=5)
        first = await call.read()
        await asyncio.sleep(0.05)
        assert not [s for s in exporter.get_finished_spans() if s.kind is SpanKind.CLIENT]
        assert first.delta.text == "a"
        second = await call.read()
        assert await call.read() is grpc.aio.EOF
    assert second.delta.text == "b"
    request_id_var.reset(token)
    spans = await _spans(exporter, 3)
    client = _by(spans, GENERATE, SpanKind.CLIENT)
    server = _by(spans, GENERATE, SpanKind.SERVER)
    assert _parent_of(server) == client.context.span_id
    assert client.end_time is not None and server.end_time is not None
    assert client.end_time >= server.end_time
    # the channel's interceptors see streaming calls too: the request id travelled
    assert server.attributes is not None
    assert server.attributes["ragmesh.request_id"] == "rid-stream-1"

    exporter.clear()
    with pytest.raises(grpc.aio.AioRpcError) as failed:
        async for _ in stub.GenerateAnswer(
            generation_pb2.GenerateAnswerRequest(question="fail"), timeout=5
        ):
            pass
    assert failed.value.code() is grpc.StatusCode.UNAVAILABLE
    spans = await _spans(exporter, 2)
    await channel.close()
    for kind in (SpanKind.CLIENT, SpanKind.SERVER):
        span = _by(spans, GENERATE, kind)
        assert span.status.status_code is StatusCode.ERROR
        assert span.attributes is not None and span.attributes["rpc.grpc.status_code"] == 14


async def test_the_blocking_channel_carries_the_trace(
    exporter: InMemorySpanExporter, toy: RunningServer
) -> None:
    channel = create_sync_channel(f"127.0.0.1:{toy.port}")
    stub = chunking_pb2_grpc.ChunkingServiceStub(channel)

    def call(text: str) -> None:
        with tracing.span("worker step"):
            stub.ChunkDocument(chunking_pb2.ChunkDocumentRequest(text=text), timeout=5)

    await asyncio.to_thread(call, "hi")
    with pytest.raises(grpc.RpcError):
        await asyncio.to_thread(call, "invalid")
    channel.close()
    spans = await _spans(exporter, 6)
    steps = [s for s in spans if s.name == "worker step"]
    clients = [s for s in spans if s.name == CHUNK and s.kind is SpanKind.CLIENT]
    servers = [s for s in spans if s.name == CHUNK and s.kind is SpanKind.SERVER]
    assert len(steps) == len(clients) == len(servers) == 2
    for step in steps:
        (client,) = [c for c in clients if _parent_of(c) == step.context.span_id]
        (server,) = [s for s in servers if _parent_of(s) == client.context.span_id]
        assert step.context.trace_id == client.context.trace_id == server.context.trace_id
    codes = sorted(c.attributes["rpc.grpc.status_code"] for c in clients if c.attributes)
    assert codes == [0, 3]


async def test_tracing_off_records_nothing(toy: RunningServer) -> None:
    memory = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(memory))
    tracing.install(provider)
    made_on = create_sync_channel(f"127.0.0.1:{toy.port}")  # with the tracing interceptor
    tracing.install(None)
    try:
        made_off = create_channel(f"127.0.0.1:{toy.port}")  # without it
        with tracing.span("caller") as caller:
            assert caller is tracing.INVALID_SPAN
            assert tracing.inject({}) == {}
            await chunking_pb2_grpc.ChunkingServiceStub(made_off).ChunkDocument(
                chunking_pb2.ChunkDocumentRequest(text="hi"), timeout=5
            )
            await asyncio.to_thread(
                chunking_pb2_grpc.ChunkingServiceStub(made_on).ChunkDocument,
                chunking_pb2.ChunkDocumentRequest(text="hi"),
                timeout=5,
            )
        await made_off.close()
        made_on.close()
    finally:
        tracing.install(None)
    await asyncio.sleep(0.05)
    assert memory.get_finished_spans() == ()


# --- the ingestion queue ----------------------------------------------------------------


@pytest.fixture
def celery_queue(redis_url: str) -> Iterator[tuple[CeleryQueue, redis.Redis]]:
    name = f"test-trace-{uuid.uuid4().hex[:8]}"
    queue = CeleryQueue(JobsSettings(redis_url=redis_url, worker_queue=name))
    client = redis.Redis.from_url(redis_url)
    yield queue, client
    client.delete(name)
    client.close()
    queue.close()


def _waiting_headers(client: redis.Redis, queue: str) -> list[dict[str, object]]:
    envelopes = [json.loads(raw) for raw in client.lrange(queue, 0, -1)]
    for envelope in envelopes:
        body = json.loads(base64.b64decode(envelope["body"]))
        assert body[0] == ["job-1"]  # the job id stays the only argument
    return [e["headers"] for e in envelopes]


def test_the_task_message_carries_traceparent(
    exporter: InMemorySpanExporter, celery_queue: tuple[CeleryQueue, redis.Redis]
) -> None:
    queue, client = celery_queue
    before = time.time()
    with tracing.span("upload") as upload:
        queue.send("job-1")
    (headers,) = _waiting_headers(client, queue.queue)
    publish = _by(list(exporter.get_finished_spans()), f"{queue.queue} publish", SpanKind.PRODUCER)
    assert _parent_of(publish) == upload.get_span_context().span_id
    ctx = publish.context
    assert headers["traceparent"].startswith(f"00-{ctx.trace_id:032x}-{ctx.span_id:016x}-")
    sent_at = headers[ENQUEUED_AT_HEADER]
    assert isinstance(sent_at, float) and before <= sent_at <= time.time()
    # The reaper's broker scan still finds the job's message.
    assert queue.snapshot().waiting == {"job-1"}


def test_a_retry_gets_its_own_send_time(
    exporter: InMemorySpanExporter, celery_queue: tuple[CeleryQueue, redis.Redis]
) -> None:
    """Celery copies a message's headers into its retry; the worker's hook
    (services.worker.trace.restamp) gives the retry the time it is sent again."""
    import services.worker.trace  # noqa: F401 - connects the hook, as the worker does

    queue, client = celery_queue
    first = "00-" + "a" * 32 + "-" + "b" * 16 + "-01"
    before = time.time()
    with tracing.span("failed run") as run:
        queue.app.send_task(
            INGEST_TASK,
            args=["job-1"],
            queue=queue.queue,
            headers={"traceparent": first, ENQUEUED_AT_HEADER: 1.0},
        )
    (headers,) = _waiting_headers(client, queue.queue)
    ctx = run.get_span_context()
    assert str(headers["traceparent"]).startswith(f"00-{ctx.trace_id:032x}-{ctx.span_id:016x}-")
    sent_at = headers[ENQUEUED_AT_HEADER]
    assert isinstance(sent_at, float) and sent_at >= before


def test_no_trace_headers_when_off(celery_queue: tuple[CeleryQueue, redis.Redis]) -> None:
    queue, client = celery_queue
    queue.send("job-1")
    (headers,) = _waiting_headers(client, queue.queue)
    assert "traceparent" not in headers and ENQUEUED_AT_HEADER not in headers


# --- the generation service's steps ----------------------------------------------------------


async def test_generation_spans_and_traceparent_to_the_llm(
    exporter: InMemorySpanExporter,
) -> None:
    with StandInLLM([good_stream("Paris [1].")]) as llm:
        service = GenerationService(
            GenerationSettings(
                llm_base_url=llm.base_url, llm_max_retries=0, token_counting="estimate"
            )
        )
        request = AnswerRequest(
            question="What is the capital of France?",
            passages=(Passage("fr:0", "Paris is the capital of France.", 0.9),),
            tenant="alpha",
        )
        try:
            with tracing.span("GenerateAnswer") as root:
                events = [e async for e in service.generator.generate(request)]
        finally:
            await service.close()
        headers = llm.received_headers[-1]
    assert isinstance(events[-1], FinalAnswer) and events[-1].answer == "Paris [1]."
    spans = list(exporter.get_finished_spans())
    named = {s.name: s for s in spans}
    assert set(named) == {
        "GenerateAnswer",
        "llm.queue_wait",
        "prompt.pack",
        "llm.chat",
        "llm.first_token",
    }
    root_id = root.get_span_context().span_id
    for name in ("llm.queue_wait", "prompt.pack", "llm.chat"):
        assert _parent_of(named[name]) == root_id, name
    chat = named["llm.chat"]
    assert _parent_of(named["llm.first_token"]) == chat.context.span_id
    assert chat.kind is SpanKind.CLIENT
    assert chat.attributes is not None
    assert chat.attributes["gen_ai.response.finish_reasons"] == ("stop",)
    assert named["prompt.pack"].attributes == {
        "ragmesh.passages": 1,
        "ragmesh.passages_used": 1,
        "ragmesh.prompt_tokens": named["prompt.pack"].attributes["ragmesh.prompt_tokens"],
    }
    # the LLM server could continue the trace: the request names the llm.chat span
    ctx = chat.context
    assert headers["traceparent"].startswith(f"00-{ctx.trace_id:032x}-{ctx.span_id:016x}-")


async def test_a_refused_request_ends_its_queue_wait_in_error(
    exporter: InMemorySpanExporter,
) -> None:
    service = GenerationService(
        GenerationSettings(
            llm_base_url="http://127.0.0.1:9/v1",
            token_counting="estimate",
            llm_max_concurrency=1,
            llm_max_queued=0,
        )
    )
    request = AnswerRequest(question="q", passages=(Passage("p", "text", 0.9),), tenant="alpha")
    holder = service.generator.admission.enter("beta", None)  # the only slot is taken
    try:
        with pytest.raises(ResourceExhausted):
            async for _ in service.generator.generate(request):
                pass
    finally:
        service.generator.admission.release(holder)
        await service.close()
    (wait,) = exporter.get_finished_spans()
    assert wait.name == "llm.queue_wait"
    assert wait.status.status_code is StatusCode.ERROR
    assert wait.status.description == "LLM_QUEUE_FULL"
