"""OpenTelemetry traces end to end: the stack's processes export with the real
OTLP exporter to a collector stand-in in this process (devstack/otlp_collector.py),
and the span trees of one Ask and of one ingestion job are checked: one trace each,
every span linked to its parent across the gateway, the services, the Celery hop
and the llama.cpp call; and one HTTP request through the web service.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from devstack.otlp_collector import OtlpCollector, ReceivedSpan, children, trace_of
from ragmesh.gateway.v1 import gateway_pb2 as pb
from tests.e2e.conftest import ALPHA_KEY, Stack, build_stack
from tests.e2e.web.conftest import start_web

pytestmark = [pytest.mark.slow, pytest.mark.llm]

KB = "traced"
DOCUMENT = (
    b"# Rivers\n\nThe Nile is the longest river in Africa. It flows north through eleven "
    b"countries and empties into the Mediterranean Sea.\n\n"
    b"# Mountains\n\nMount Kilimanjaro in Tanzania is the highest mountain in Africa.\n"
)
GATEWAY = "ragmesh.gateway.v1.RagService"
EMBED = "ragmesh.embedding.v1.EmbeddingService/EmbedTexts"
SEARCH = "ragmesh.retrieval.v1.RetrievalService/SearchChunks"
UPSERT = "ragmesh.retrieval.v1.RetrievalService/UpsertChunks"
CHUNK = "ragmesh.chunking.v1.ChunkingService/ChunkDocument"
GENERATE = "ragmesh.generation.v1.GenerationService/GenerateAnswer"


@pytest.fixture(scope="module")
def collector() -> Iterator[OtlpCollector]:
    c = OtlpCollector().start()
    yield c
    c.stop()


@pytest.fixture(scope="module")
def traced_stack(
    collector: OtlpCollector,
    redis_url: str,
    llm_base_url: str,
    start_ragmesh_service: Any,
    tmp_path_factory: pytest.TempPathFactory,
    log_dir: Path,
) -> Iterator[Stack]:
    """The whole stack with tracing on: every process (services and worker)
    inherits the OTEL_* variables while it starts."""
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("OTEL_SERVICE_NAME", raising=False)
        for key, value in collector.env().items():
            mp.setenv(key, value)
        s = build_stack(
            start_ragmesh_service,
            redis_url,
            tmp_path_factory.mktemp("milvus"),
            log_dir,
            llm_base_url=llm_base_url,
        )
    try:
        yield s
    finally:
        for proc in s.workers:
            proc.stop()


def _rpc(spans: list[ReceivedSpan], method: str, kind: str, service: str) -> ReceivedSpan:
    found = [s for s in spans if s.name == method and s.kind == kind and s.service == service]
    assert len(found) == 1, f"{len(found)} {kind} spans {method} of {service}"
    return found[0]


def _child(spans: list[ReceivedSpan], parent: ReceivedSpan, name: str) -> ReceivedSpan:
    found = [s for s in children(spans, parent) if s.name == name]
    assert len(found) == 1, (
        f"{parent.service}:{parent.name} has {len(found)} children named {name}; "
        f"its children: {[(s.service, s.name) for s in children(spans, parent)]}"
    )
    return found[0]


def _calls_answered(tree: list[ReceivedSpan]) -> bool:
    """Every ragmesh gRPC call in the trace has its server's span. Each process exports
    on its own schedule, so a caller's span can arrive before the callee's; a server's
    inner spans end before it, so they arrive with it or earlier."""
    servers = {s.parent_id for s in tree if s.kind == "SERVER"}
    return all(
        s.span_id in servers
        for s in tree
        if s.kind == "CLIENT" and s.name.startswith("ragmesh.") and "/" in s.name
    )


def _ingestion_done(queue: str) -> Any:
    def check(spans: list[ReceivedSpan]) -> bool:
        required = {
            ("ragmesh-gateway", f"{GATEWAY}/UploadDocument"),
            ("ragmesh-worker", f"{queue} process"),
            ("ragmesh-retrieval", UPSERT),
            ("ragmesh-retrieval", "milvus.upsert"),
        }
        if not required <= {(s.service, s.name) for s in spans}:
            return False
        # The worker's process span ends after all of the worker's other spans of the job.
        process = next(s for s in spans if s.name == f"{queue} process")
        return _calls_answered(trace_of(spans, process.trace_id))

    return check


def test_an_ingestion_job_is_one_trace_across_the_celery_hop(
    traced_stack: Stack, collector: OtlpCollector
) -> None:
    queue = traced_stack.worker_env["RAGMESH_WORKER_QUEUE"]
    traced_stack.call("CreateKnowledgeBase", pb.CreateKnowledgeBaseRequest(knowledge_base_id=KB))
    collector.clear()
    job = traced_stack.wait(traced_stack.upload(KB, "rivers.md", DOCUMENT).job.job_id)
    assert job.state == pb.JOB_STATE_SUCCEEDED, job.error
    spans = collector.wait_for(_ingestion_done(queue))

    upload = _rpc(spans, f"{GATEWAY}/UploadDocument", "SERVER", "ragmesh-gateway")
    assert upload.parent_id == ""  # the client sent no traceparent: the gateway starts the trace
    tree = trace_of(spans, upload.trace_id)
    publish = _child(tree, upload, f"{queue} publish")
    assert publish.kind == "PRODUCER" and publish.attributes["ragmesh.job_id"] == job.job_id

    # The worker continues the gateway's trace from the task message's traceparent.
    wait = _child(tree, publish, "ingest.queue_wait")
    process = _child(tree, publish, f"{queue} process")
    assert wait.service == process.service == "ragmesh-worker"
    assert process.kind == "CONSUMER"
    assert process.attributes["ragmesh.job_id"] == job.job_id
    assert process.attributes["ragmesh.outcome"] == "succeeded"
    assert wait.start_ns <= process.start_ns and wait.end_ns <= process.end_ns

    parse = _child(tree, process, "ingest.parse")
    chunk_client = _child(tree, parse, CHUNK)
    assert chunk_client.kind == "CLIENT" and chunk_client.service == "ragmesh-worker"
    chunk_server = _child(tree, chunk_client, CHUNK)
    assert chunk_server.kind == "SERVER" and chunk_server.service == "ragmesh-chunking"
    document = _child(tree, chunk_server, "chunk.document")
    assert [s.name for s in sorted(children(tree, document), key=lambda s: s.start_ns)] == [
        "chunk.parse",
        "chunk.tokenize",
        "chunk.split",
    ]
    chunks = parse.attributes["ragmesh.chunks"]
    assert chunks == job.chunks_total >= 1

    # Embedding and upserting in batches (the stack's batch size is 4).
    embeds = [s for s in children(tree, process) if s.name == "ingest.embed"]
    upserts = [s for s in children(tree, process) if s.name == "ingest.upsert"]
    assert len(embeds) == len(upserts) == -(-chunks // 4)
    assert sum(s.attributes["ragmesh.batch_size"] for s in embeds) == chunks
    for embed in embeds:
        server = _child(tree, _child(tree, embed, EMBED), EMBED)
        assert server.service == "ragmesh-embedding"
        assert _child(tree, server, "embed.batch").attributes["ragmesh.texts"] >= 1
    for upsert in upserts:
        server = _child(tree, _child(tree, upsert, UPSERT), UPSERT)
        assert server.service == "ragmesh-retrieval"
        _child(tree, server, "milvus.upsert")

    # One trace: every span of it reaches the gateway's root through its parents.
    by_id = {s.span_id: s for s in tree}
    for s in tree:
        seen = s
        while seen.parent_id:
            seen = by_id[seen.parent_id]
        assert seen is upload, f"{s.service}:{s.name} is not under the upload"
    assert not any(s.error for s in tree)


def test_an_ask_is_one_trace_from_the_caller_to_the_llm(
    traced_stack: Stack, collector: OtlpCollector
) -> None:
    # The stack of this module holds the document of the ingestion test; make sure.
    if not traced_stack.search(KB, "Nile"):
        pytest.skip("the knowledge base is empty: the ingestion test failed")
    collector.clear()
    # The caller's own trace: the gateway continues it.
    trace_id, caller_span = secrets.token_hex(16), secrets.token_hex(8)
    stream = traced_stack.rag.Ask(
        # a short answer: the trace is the point, not the prose
        pb.AskRequest(
            knowledge_base_id=KB,
            question="Which is the longest river in Africa?",
            max_tokens=8,
            answer_mode=pb.ANSWER_MODE_GENERATIVE,  # the LLM path (AUTO answers verbatim here)
        ),
        metadata=[
            ("authorization", f"Bearer {ALPHA_KEY}"),
            ("traceparent", f"00-{trace_id}-{caller_span}-01"),
        ],
        timeout=120,
    )
    events = list(stream)
    final = events[-1].final
    assert final.answer and not final.abstained

    def complete(spans: list[ReceivedSpan]) -> bool:
        names = {(s.service, s.name) for s in trace_of(spans, trace_id)}
        return {
            ("ragmesh-gateway", f"{GATEWAY}/Ask"),
            ("ragmesh-generation", GENERATE),
            ("ragmesh-generation", "llm.chat"),
            ("ragmesh-retrieval", SEARCH),
        } <= names and _calls_answered(trace_of(spans, trace_id))

    tree = trace_of(collector.wait_for(complete), trace_id)
    ask = _rpc(tree, f"{GATEWAY}/Ask", "SERVER", "ragmesh-gateway")
    assert ask.parent_id == caller_span
    assert ask.attributes["rpc.grpc.status_code"] == 0

    retrieve = _child(tree, ask, "retrieve")
    # Ask embeds the question itself (the vector serves the search and the scoring of
    # the passages' sentences), then the sentences: two embedding calls under Ask.
    embed_clients = [s for s in children(tree, ask) if s.name == EMBED]
    assert len(embed_clients) == 2, [(s.service, s.name) for s in children(tree, ask)]
    for embed_client in embed_clients:
        embed_server = _child(tree, embed_client, EMBED)
        assert embed_server.service == "ragmesh-embedding"
        _child(tree, embed_server, "embed.batch")
    search_server = _child(tree, _child(tree, retrieve, SEARCH), SEARCH)
    assert search_server.service == "ragmesh-retrieval"
    milvus = _child(tree, search_server, "milvus.search")
    assert milvus.attributes["ragmesh.mode"] in ("dense", "hybrid")

    generate_client = _child(tree, ask, GENERATE)
    assert generate_client.kind == "CLIENT" and generate_client.service == "ragmesh-gateway"
    generate = _child(tree, generate_client, GENERATE)
    assert generate.kind == "SERVER" and generate.service == "ragmesh-generation"
    queue_wait = _child(tree, generate, "llm.queue_wait")
    pack = _child(tree, generate, "prompt.pack")
    chat = _child(tree, generate, "llm.chat")
    first_token = _child(tree, chat, "llm.first_token")
    assert queue_wait.end_ns <= pack.start_ns <= pack.end_ns <= chat.start_ns
    assert chat.kind == "CLIENT" and chat.attributes["gen_ai.request.model"]
    assert chat.attributes["gen_ai.response.finish_reasons"] in (["stop"], ["length"])
    assert first_token.start_ns >= chat.start_ns and first_token.end_ns <= chat.end_ns
    # The streamed answer outlives each step: the client spans end with their streams.
    assert generate_client.end_ns >= chat.end_ns - 5_000_000
    assert ask.end_ns >= generate.end_ns - 5_000_000
    assert not any(s.error for s in tree)
    assert len({s.trace_id for s in tree}) == 1


def test_an_http_request_is_one_trace_from_the_web_service_to_retrieval(
    traced_stack: Stack, collector: OtlpCollector, log_dir: Path
) -> None:
    if not traced_stack.search(KB, "Nile"):
        pytest.skip("the knowledge base is empty: the ingestion test failed")
    web, url = start_web(traced_stack.gateway, log_dir, env=collector.env())
    try:
        collector.clear()
        trace_id, caller_span = secrets.token_hex(16), secrets.token_hex(8)
        resp = httpx.post(
            f"{url}/api/v1/knowledge-bases/{KB}/search",
            json={"query": "Which is the longest river in Africa?"},
            headers={
                "Authorization": f"Bearer {ALPHA_KEY}",
                "traceparent": f"00-{trace_id}-{caller_span}-01",
            },
            timeout=60,
        )
        assert resp.status_code == 200, resp.text
        route = "POST /api/v1/knowledge-bases/{kb}/search"

        def complete(spans: list[ReceivedSpan]) -> bool:
            names = {(s.service, s.name) for s in trace_of(spans, trace_id)}
            return {
                ("ragmesh-web", route),
                ("ragmesh-gateway", f"{GATEWAY}/Search"),
                ("ragmesh-retrieval", SEARCH),
            } <= names and _calls_answered(trace_of(spans, trace_id))

        tree = trace_of(collector.wait_for(complete), trace_id)
    finally:
        web.stop()
    # FastAPI's own span of the request (its native OpenTelemetry support)
    http = _rpc(tree, route, "SERVER", "ragmesh-web")
    assert http.parent_id == caller_span  # the HTTP caller's trace, continued
    assert http.attributes["http.response.status_code"] == 200
    client = _rpc(tree, f"{GATEWAY}/Search", "CLIENT", "ragmesh-web")
    assert http in _ancestors(tree, client)  # the gateway call happened inside it
    search = _child(tree, client, f"{GATEWAY}/Search")
    assert search.kind == "SERVER" and search.service == "ragmesh-gateway"
    assert http.start_ns <= client.start_ns and client.end_ns <= http.end_ns
    assert not any(s.error for s in tree)
    assert len({s.trace_id for s in tree}) == 1


def _ancestors(spans: list[ReceivedSpan], span: ReceivedSpan) -> list[ReceivedSpan]:
    by_id = {s.span_id: s for s in spans}
    found = []
    while span.parent_id in by_id:
        span = by_id[span.parent_id]
        found.append(span)
    return found
