"""What tracing costs: a Search through the real gateway, embedding and
retrieval services with tracing off and on, and one gRPC call in process.

Two copies of the three services run side by side, one with no OTEL_* variable
(off, the default) and one exporting every span over OTLP/gRPC to a collector
stand-in in this process (devstack/otlp_collector.py: the real exporter,
a receiving end that only counts). Both hold the same 240 chunks (embedded by
their own embedding service, upserted through their retrieval service into
Milvus Lite), and the searches alternate between them in rounds, so that the
load of the machine (shared here) falls on both alike.

`python -m benchmarks.run tracing` writes the section into docs/observability.md.
"""

from __future__ import annotations

import asyncio
import os
import random
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
import redis

from devstack.deps import start_redis
from devstack.otlp_collector import OtlpCollector
from devstack.procs import ManagedProcess, start_service
from ragmesh.chunking.v1 import chunking_pb2, chunking_pb2_grpc
from ragmesh.common.v1 import common_pb2
from ragmesh.embedding.v1 import embedding_pb2, embedding_pb2_grpc
from ragmesh.eval_metrics import percentile
from ragmesh.gateway.v1 import gateway_pb2 as pb
from ragmesh.gateway.v1 import gateway_pb2_grpc
from ragmesh.retrieval.v1 import retrieval_pb2, retrieval_pb2_grpc
from services.jobs.keys import Keys

DOC = "observability.md"
KEY = "bench-key-0001"
KB = "bench"
CHUNKS = 240
ROUNDS = 6
PER_ROUND = 30
WARMUP = 20
TOPICS = [
    "vector databases",
    "river deltas",
    "mountain glaciers",
    "task queues",
    "sourdough bread",
    "solar panels",
    "chess openings",
    "coral reefs",
]


def _text(rnd: random.Random, i: int) -> str:
    topic = TOPICS[i % len(TOPICS)]
    words = " ".join(
        rnd.choice([*topic.split(), "the", "of", "and", "in", "with"]) for _ in range(40)
    )
    return f"Section {i} about {topic}: {words}."


class Stack:
    """Gateway, embedding and retrieval with one environment (tracing off or on);
    `name` picks its Milvus Lite file, which outlives the processes."""

    def __init__(self, name: str, redis_url: str, tmp: Path, env: dict[str, str]) -> None:
        self.procs: list[ManagedProcess] = []
        log_dir = tmp / "logs"
        log_dir.mkdir(exist_ok=True)

        def start(service: str, extra: dict[str, str]) -> str:
            proc, addr = start_service(service, env={**env, **extra}, log_dir=log_dir, timeout=300)
            self.procs.append(proc)
            return addr

        self.embedding = start("embedding", {})
        self.retrieval = start(
            "retrieval", {"RAGMESH_RETRIEVAL_MILVUS_URI": str(tmp / f"{name}.db")}
        )
        self.redis_url = redis_url
        self.gateway = start(
            "gateway",
            {
                "RAGMESH_REDIS_URL": redis_url,
                "RAGMESH_EMBEDDING_ADDR": self.embedding,
                "RAGMESH_RETRIEVAL_ADDR": self.retrieval,
                "RAGMESH_CHUNKING_ADDR": "127.0.0.1:9",
                "RAGMESH_GENERATION_ADDR": "127.0.0.1:9",
                "RAGMESH_GATEWAY_API_KEYS": f"{KEY}:bench",
                "RAGMESH_WORKER_QUEUE": f"bench-{name}",
            },
        )
        self.channel = grpc.insecure_channel(self.gateway)
        self.rag = gateway_pb2_grpc.RagServiceStub(self.channel)

    def fill(self, texts: list[str]) -> None:
        """The knowledge base and its chunks (embedded by this stack's own service)."""
        meta = [("authorization", f"Bearer {KEY}")]
        self.rag.CreateKnowledgeBase(
            pb.CreateKnowledgeBaseRequest(knowledge_base_id=KB), metadata=meta, timeout=60
        )
        client = redis.Redis.from_url(self.redis_url)
        collection = bytes(client.hget(Keys().kb("bench", KB), "collection") or b"").decode()
        client.close()
        with (
            grpc.insecure_channel(self.embedding) as ech,
            grpc.insecure_channel(self.retrieval) as rch,
        ):
            embed = embedding_pb2_grpc.EmbeddingServiceStub(ech)
            store = retrieval_pb2_grpc.RetrievalServiceStub(rch)
            for doc, start in enumerate(range(0, len(texts), 24)):
                batch = texts[start : start + 24]
                vectors = embed.EmbedTexts(
                    embedding_pb2.EmbedTextsRequest(texts=batch), timeout=120
                ).embeddings
                store.UpsertChunks(
                    retrieval_pb2.UpsertChunksRequest(
                        collection=collection,
                        document_id=f"doc{doc}",
                        document_version="1",
                        chunks=[
                            retrieval_pb2.ChunkToUpsert(
                                chunk=common_pb2.Chunk(
                                    document_id=f"doc{doc}", chunk_index=i, text=text
                                ),
                                vector=list(v.values),
                            )
                            for i, (text, v) in enumerate(zip(batch, vectors, strict=True))
                        ],
                    ),
                    timeout=120,
                )

    def search(self, query: str) -> float:
        """Milliseconds of one Search, as a client sees it."""
        start = time.perf_counter()
        resp = self.rag.Search(
            pb.SearchRequest(knowledge_base_id=KB, query=query, top_k=5),
            metadata=[("authorization", f"Bearer {KEY}")],
            timeout=30,
        )
        took = (time.perf_counter() - start) * 1000
        assert resp.hits, "a search found nothing"
        return took

    def stop(self) -> None:
        self.channel.close()
        for proc in reversed(self.procs):
            proc.stop()


def _summary(ms: list[float]) -> tuple[float, float, float]:
    return statistics.median(ms), statistics.fmean(ms), percentile(ms, 0.9)


def _search_rows(tmp: Path, collector: OtlpCollector) -> tuple[list[str], int]:
    rnd = random.Random(11)
    texts = [_text(rnd, i) for i in range(CHUNKS)]
    queries = [f"{rnd.choice(TOPICS)} {rnd.choice(TOPICS).split()[0]}" for _ in range(64)]
    redis_proc, redis_url = start_redis(tmp / "redis", log_dir=tmp)
    base = redis_url.rsplit("/", 1)[0]
    # the environment of the benchmark itself must not turn the "off" stack on
    envs = {
        "off": {"OTEL_TRACES_EXPORTER": "none", "OTEL_SDK_DISABLED": "true"},
        "on": collector.env(schedule_delay_ms=1000),
    }
    times: dict[str, list[float]] = {"off": [], "on": []}
    spans = searches = 0
    try:
        # Two copies, a and b; then each again with the other's setting, so that what
        # differs between the copies (Milvus Lite segments, ...) falls on both settings.
        for phase, modes in enumerate((("off", "on"), ("on", "off"))):
            stacks: dict[str, Stack] = {}
            try:
                for copy, mode in zip(("a", "b"), modes, strict=True):
                    stacks[mode] = Stack(copy, f"{base}/{1 + (copy == 'b')}", tmp, envs[mode])
                    if phase == 0:
                        stacks[mode].fill(texts)
                for stack in stacks.values():
                    for q in queries[:WARMUP]:
                        stack.search(q)
                collector.clear()
                for r in range(ROUNDS):
                    for mode in ("off", "on") if r % 2 == 0 else ("on", "off"):
                        for i in range(PER_ROUND):
                            q = queries[(r * PER_ROUND + i) % len(queries)]
                            times[mode].append(stacks[mode].search(q))
                time.sleep(2.5)  # the last batch of spans
                spans += len(collector.snapshot())
                searches += ROUNDS * PER_ROUND
            finally:
                for stack in stacks.values():
                    stack.stop()
    finally:
        redis_proc.stop()
    off, on = _summary(times["off"]), _summary(times["on"])
    rows = [
        f"| tracing off (no OTEL_* variable) | {off[0]:.1f} | {off[1]:.1f} | {off[2]:.1f} |",
        f"| tracing on (OTLP/gRPC, every span exported) | {on[0]:.1f} | {on[1]:.1f} | "
        f"{on[2]:.1f} |",
        f"| difference | {on[0] - off[0]:+.1f} ({(on[0] / off[0] - 1) * 100:+.0f} %) | "
        f"{on[1] - off[1]:+.1f} ({(on[1] / off[1] - 1) * 100:+.0f} %) | "
        f"{on[2] - off[2]:+.1f} |",
    ]
    return rows, round(spans / searches)


# --- one call in process -----------------------------------------------------------------


class _EchoChunking(chunking_pb2_grpc.ChunkingServiceServicer):
    async def ChunkDocument(
        self, request: chunking_pb2.ChunkDocumentRequest, context: grpc.aio.ServicerContext
    ) -> chunking_pb2.ChunkDocumentResponse:
        return chunking_pb2.ChunkDocumentResponse(title=request.text)


class _Echo:
    """A service on the real server bootstrap (interceptor included) that does nothing."""

    name = "echo"
    service_names = ("ragmesh.chunking.v1.ChunkingService",)

    def register(self, server: grpc.aio.Server) -> None:
        chunking_pb2_grpc.add_ChunkingServiceServicer_to_server(_EchoChunking(), server)

    async def start(self) -> None:
        return None

    async def ready(self) -> bool:
        return True

    async def close(self) -> None:
        return None


async def _calls_per_mode(collector: OtlpCollector, n: int, rounds: int) -> dict[str, float]:
    """Microseconds of one unary call (client and server in this process)."""
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    from services.common import tracing
    from services.common.channels import create_channel
    from services.common.config import CommonSettings
    from services.common.server import start_server

    provider = TracerProvider()
    provider.add_span_processor(
        BatchSpanProcessor(OTLPSpanExporter(endpoint=collector.endpoint, insecure=True))
    )
    running = await start_server(
        _Echo(), 0, CommonSettings(metrics_enabled=False, shutdown_grace_s=0.5)
    )
    target = f"127.0.0.1:{running.port}"
    results: dict[str, list[float]] = {"off": [], "on": []}

    async def measure(mode: str) -> None:
        tracing.install(provider if mode == "on" else None)
        channel = create_channel(target)  # the interceptors are chosen when it is made
        stub = chunking_pb2_grpc.ChunkingServiceStub(channel)
        request = chunking_pb2.ChunkDocumentRequest(text="hi")
        for _ in range(50):
            await stub.ChunkDocument(request, timeout=5)
        start = time.perf_counter()
        for _ in range(n):
            await stub.ChunkDocument(request, timeout=5)
        results[mode].append((time.perf_counter() - start) / n * 1e6)
        await channel.close()

    try:
        for r in range(rounds):
            for mode in ("off", "on") if r % 2 == 0 else ("on", "off"):
                await measure(mode)
    finally:
        tracing.install(None)
        await running.stop()
        provider.shutdown()
    return {mode: statistics.median(us) for mode, us in results.items()}


def _span_site_ns(fn: Callable[[], Any], n: int = 200_000) -> float:
    start = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - start) / n * 1e9


def _off_site() -> float:
    """Nanoseconds an instrumented step costs with tracing off."""
    from services.common import tracing

    def step() -> None:
        with tracing.span("step", {"k": 1}):
            pass

    return _span_site_ns(step)


def _on_site() -> float:
    """Nanoseconds one span costs with the SDK installed (batched, exported nowhere)."""
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import (
        BatchSpanProcessor,
        SpanExporter,
        SpanExportResult,
    )

    from services.common import tracing

    class _Nowhere(SpanExporter):
        def export(self, spans: Any) -> SpanExportResult:
            return SpanExportResult.SUCCESS

    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(_Nowhere()))
    tracing.install(provider)

    def step() -> None:
        with tracing.span("step", {"k": 1}):
            pass

    try:
        return _span_site_ns(step, n=20_000)
    finally:
        tracing.install(None)
        provider.shutdown()


def run() -> str:
    load_before = os.getloadavg()[0]
    collector = OtlpCollector().start()
    try:
        with tempfile.TemporaryDirectory(prefix="bench-tracing-") as d:
            rows, per_search = _search_rows(Path(d), collector)
        calls = asyncio.run(_calls_per_mode(collector, n=1000, rounds=10))
    finally:
        collector.stop()
    site, site_on = _off_site(), _on_site()
    load = (load_before + os.getloadavg()[0]) / 2
    return "\n".join(
        [
            "## Overhead",
            "",
            f"A Search (top 5 of {CHUNKS} chunks, the bundled embedding model, Milvus Lite) "
            "through the real gateway, embedding and retrieval services, two copies side by "
            f"side — tracing off and on — searched alternately: {ROUNDS} rounds of "
            f"{PER_ROUND} sequential searches each, after {WARMUP} warm-up searches; then the "
            "two copies restarted with their settings swapped and measured again, so that "
            "a difference between the copies themselves falls on both columns "
            f"(`python -m benchmarks.run tracing`). On, each Search made {per_search} spans, "
            "exported over OTLP/gRPC in batches to a collector stand-in.",
            "",
            "| Search, ms as the client sees it | p50 | mean | p90 |",
            "|---|---|---|---|",
            *rows,
            "",
            "One unary gRPC call, client and server in one process (the part tracing adds to "
            f"every hop: a CLIENT and a SERVER span, `traceparent` in the metadata): "
            f"{calls['off']:.0f} µs off, {calls['on']:.0f} µs on "
            f"({calls['on'] - calls['off']:+.0f} µs a hop). One span costs "
            f"{site_on / 1000:.0f} µs in the OpenTelemetry SDK (started, ended, batched); "
            f"off, an instrumented step (`with tracing.span(...)`) costs {site:.0f} ns, and "
            "no interceptor is installed at all.",
            "",
            f"The machine (2 cores) was shared with other work: load average {load:.0f} "
            "during the run. At that load every figure moves by several milliseconds from "
            "run to run, in both columns alike; what tracing adds to a Search is about its "
            f"{per_search} spans times the SDK's cost of one, within that noise. Off, the "
            "cost is the instrumented steps' checks: nanoseconds.",
        ]
    )
