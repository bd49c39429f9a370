"""The whole system: ingestion throughput of the asynchronous pipeline and the
latency the gateway adds to Search and Ask.

1. Documents → searchable: upload N documents through the gateway and wait
   until every job SUCCEEDED (retrieval is read-your-writes, so they are
   searchable), with 1 and with 2 Celery workers; the baseline is the same work
   in one process — the same chunker, the same embedding model, a Milvus Lite
   insert + flush — measured in the same run. Target: ≥ 0.8× with one worker.
2. Search and Ask latency (p50/p99) through the gateway at 1 and 20 concurrent
   clients, against the sum of the services called directly (EmbedTexts +
   SearchChunks [+ GenerateAnswer]) at the same concurrency.

Scale with RAGMESH_BENCH_PIPELINE_DOCS (default 40), _PARAGRAPHS (3 per doc),
_QUERIES (40 per Search setting), _ASKS (6 Asks by one client) and
_ASKS_CONCURRENT (20 Asks by 20 clients); 0 Asks skips that row.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
import redis

from benchmarks.chunking_data import english_text
from devstack.deps import start_llm, start_redis
from devstack.procs import ManagedProcess, start_service, worker_process
from ragmesh.client import RagmeshClient
from ragmesh.client.bulk import Upload
from ragmesh.embedding.v1 import embedding_pb2, embedding_pb2_grpc
from ragmesh.eval_metrics import percentile
from ragmesh.gateway.v1 import gateway_pb2 as pb
from ragmesh.gateway.v1 import gateway_pb2_grpc
from ragmesh.generation.v1 import generation_pb2, generation_pb2_grpc
from ragmesh.retrieval.v1 import retrieval_pb2, retrieval_pb2_grpc
from services.jobs.keys import Keys

KEY = "bench-key-0001"
TENANT = "bench"
AUTH = [("authorization", f"Bearer {KEY}")]
# Passages per Ask: short prompts keep the small LLM's prompt evaluation brief.
ASK_TOP_K = 3


def _env_int(name: str, default: int) -> int:
    return int(os.environ.get(f"RAGMESH_BENCH_PIPELINE_{name}", default))


# --------------------------------------------------------------------- baseline


async def _baseline_async(docs: list[bytes], db_path: Path) -> tuple[float, int]:
    """Seconds to chunk, embed and insert every document in this process."""
    from pymilvus import MilvusClient

    from services.chunking.chunker import Chunker, ChunkRequest, load_counter
    from services.chunking.config import ChunkingSettings
    from services.embedding.config import EmbeddingSettings
    from services.embedding.core import create_embedder, tokenizer_path
    from services.embedding.tokens import TokenCounter

    chunk_settings = ChunkingSettings()  # type: ignore[call-arg]
    chunker = Chunker(chunk_settings, load_counter(chunk_settings))
    embed_settings = EmbeddingSettings()  # type: ignore[call-arg]
    embedder = create_embedder(embed_settings, TokenCounter(tokenizer_path(embed_settings)))
    info = await embedder.info()
    await embedder.embed(["warm up"], truncate=True)
    client = MilvusClient(str(db_path))
    client.create_collection(
        "baseline", dimension=info.dimension, metric_type="COSINE", auto_id=True
    )
    batch = 32
    chunks_total = 0
    start = time.perf_counter()
    for i, data in enumerate(docs):
        chunked = chunker.chunk(
            ChunkRequest(content=data, file_name=f"d{i}.txt", document_id=f"d{i}.txt")
        )
        texts = [c.text for c in chunked.chunks]
        chunks_total += len(texts)
        for s in range(0, len(texts), batch):
            vectors = await embedder.embed(texts[s : s + batch], truncate=True)
            client.insert(
                "baseline",
                [
                    {
                        "vector": vec.tolist(),
                        "text": text,
                        "document_id": f"d{i}.txt",
                        "chunk_index": s + j,
                    }
                    for j, (vec, text) in enumerate(zip(vectors, texts[s : s + batch], strict=True))
                ],
            )
    client.flush("baseline")
    elapsed = time.perf_counter() - start
    client.close()
    await embedder.close()
    return elapsed, chunks_total


# --------------------------------------------------------------------- the stack


class Stack:
    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.procs: list[ManagedProcess] = []
        logs = tmp / "logs"
        redis, self.redis_url = start_redis(tmp / "redis", log_dir=logs)
        self.procs.append(redis)
        llm, llm_url = start_llm(log_dir=logs)
        self.procs.append(llm)
        addrs = {}
        for name, env in [
            ("retrieval", {"RAGMESH_RETRIEVAL_MILVUS_URI": str(tmp / "milvus" / "bench.db")}),
            ("chunking", {}),
            ("embedding", {}),
            ("generation", {"RAGMESH_GENERATION_LLM_BASE_URL": llm_url}),
        ]:
            proc, addrs[name] = start_service(name, env=env, log_dir=logs, timeout=300)
            self.procs.append(proc)
        self.env = {
            "RAGMESH_REDIS_URL": self.redis_url,
            "RAGMESH_CHUNKING_ADDR": addrs["chunking"],
            "RAGMESH_EMBEDDING_ADDR": addrs["embedding"],
            "RAGMESH_RETRIEVAL_ADDR": addrs["retrieval"],
            "RAGMESH_GENERATION_ADDR": addrs["generation"],
        }
        gateway, addrs["gateway"] = start_service(
            "gateway", env={**self.env, "RAGMESH_GATEWAY_API_KEYS": f"{KEY}:{TENANT}"}, log_dir=logs
        )
        self.procs.append(gateway)
        self.addrs = addrs
        self.gateway_addr = addrs["gateway"]
        self.rag = gateway_pb2_grpc.RagServiceStub(grpc.insecure_channel(addrs["gateway"]))
        self.embedding = embedding_pb2_grpc.EmbeddingServiceStub(
            grpc.insecure_channel(addrs["embedding"])
        )
        self.retrieval = retrieval_pb2_grpc.RetrievalServiceStub(
            grpc.insecure_channel(addrs["retrieval"])
        )
        self.generation = generation_pb2_grpc.GenerationServiceStub(
            grpc.insecure_channel(addrs["generation"])
        )

    def start_workers(self, count: int) -> list[ManagedProcess]:
        workers = []
        for i in range(count):
            proc = worker_process(
                f"bench-worker{i}",
                f"bench{i}-{time.monotonic_ns()}@%h",
                env=self.env,
                log_dir=self.tmp / "logs",
            ).start()
            workers.append(proc)
        for proc in workers:
            proc.wait_until(
                lambda p=proc: " ready." in p.log_path.read_text(errors="replace"),
                120,
                "worker ready",
            )
        return workers

    def collection(self, kb: str) -> str:
        """The Milvus collection of one of the benchmark tenant's knowledge bases."""
        client = redis.Redis.from_url(self.redis_url)
        try:
            name = client.hget(Keys().kb(TENANT, kb), "collection")
        finally:
            client.close()
        return bytes(name or b"").decode()

    def close(self) -> None:
        for proc in reversed(self.procs):
            proc.stop()


def _pipeline(stack: Stack, kb: str, docs: list[bytes], workers: int) -> tuple[float, int]:
    """Seconds from the first upload to the last job SUCCEEDED."""
    stack.rag.CreateKnowledgeBase(
        pb.CreateKnowledgeBaseRequest(knowledge_base_id=kb), metadata=AUTH, timeout=60
    )
    procs = stack.start_workers(workers)
    try:
        uploads = [Upload(d, file_name=f"d{i}.txt") for i, d in enumerate(docs)]
        with RagmeshClient(stack.gateway_addr, KEY) as client:
            start = time.perf_counter()
            outcomes = client.ingest_many(kb, uploads, concurrency=16)
            elapsed = time.perf_counter() - start
    finally:
        for proc in procs:
            proc.stop()
    failed = [o for o in outcomes if not o.succeeded]
    if failed:
        raise RuntimeError(f"{len(failed)} jobs did not succeed: {failed[0]}")
    return elapsed, sum(o.job.chunks_total for o in outcomes if o.job is not None)


# ---------------------------------------------------------------------- latency


def _latencies(
    fn: Callable[[str], object], queries: list[str], clients: int
) -> tuple[list[float], int]:
    def one(query: str) -> float | None:
        start = time.perf_counter()
        try:
            fn(query)
        except grpc.RpcError:
            return None
        return (time.perf_counter() - start) * 1000

    with concurrent.futures.ThreadPoolExecutor(clients) as pool:
        results = list(pool.map(one, queries))
    return [r for r in results if r is not None], sum(r is None for r in results)


def _search_gateway(stack: Stack, kb: str) -> Callable[[str], None]:
    def call(query: str) -> None:
        stack.rag.Search(
            pb.SearchRequest(knowledge_base_id=kb, query=query, top_k=5), metadata=AUTH, timeout=120
        )

    return call


def _search_direct(stack: Stack, kb: str, top_k: int = 5) -> Callable[[str], list[Any]]:
    def call(query: str) -> list[Any]:
        vector = (
            stack.embedding.EmbedTexts(
                embedding_pb2.EmbedTextsRequest(
                    texts=[query], input_type=embedding_pb2.INPUT_TYPE_QUERY, truncate=True
                ),
                timeout=120,
            )
            .embeddings[0]
            .values
        )
        resp = stack.retrieval.SearchChunks(
            retrieval_pb2.SearchChunksRequest(
                collection=stack.collection(kb),
                query_vector=vector,
                query_text=query,
                top_k=5,
            ),
            timeout=120,
        )
        return list(resp.results)

    return call


def _ask_gateway(stack: Stack, kb: str) -> Callable[[str], None]:
    def call(question: str) -> None:
        for _ in stack.rag.Ask(
            pb.AskRequest(knowledge_base_id=kb, question=question, max_tokens=16, temperature=0.0),
            metadata=AUTH,
            timeout=600,
        ):
            pass

    return call


def _ask_direct(stack: Stack, kb: str) -> Callable[[str], None]:
    search = _search_direct(stack, kb, ASK_TOP_K)

    def call(question: str) -> None:
        results = search(question)
        request = generation_pb2.GenerateAnswerRequest(
            question=question,
            max_tokens=16,
            temperature=0.0,
            passages=[
                generation_pb2.Passage(
                    id=r.chunk.id,
                    text=r.chunk.text,
                    score=r.score,
                    title=r.chunk.title,
                    source=r.chunk.source,
                )
                for r in results
            ],
        )
        for _ in stack.generation.GenerateAnswer(request, timeout=600):
            pass

    return call


def _row(
    what: str, clients: int, via: tuple[list[float], int], direct: tuple[list[float], int]
) -> str:
    (g, g_err), (d, d_err) = via, direct
    if not g or not d:
        return f"| {what} | {clients} | failed ({g_err} errors) | failed ({d_err} errors) | – | – |"
    g50, g99, d50, d99 = (
        percentile(g, 0.5),
        percentile(g, 0.99),
        percentile(d, 0.5),
        percentile(d, 0.99),
    )
    errors = f" ({g_err}/{d_err} errors)" if g_err or d_err else ""
    return (
        f"| {what} | {clients} | {g50:.0f} / {g99:.0f} | {d50:.0f} / {d99:.0f} | "
        f"{g50 / d50:.2f}× | {g50 - d50:+.0f} ms{errors} |"
    )


def run() -> str:
    n_docs = _env_int("DOCS", 40)
    paragraphs = _env_int("PARAGRAPHS", 3)
    n_queries = _env_int("QUERIES", 40)
    n_asks = _env_int("ASKS", 6)
    n_asks_concurrent = _env_int("ASKS_CONCURRENT", 20)
    docs = [english_text(paragraphs, seed=1000 + i).encode() for i in range(n_docs)]
    words = english_text(n_queries, seed=5).split()
    queries = [" ".join(words[i * 7 : i * 7 + 7]) for i in range(n_queries)]
    with tempfile.TemporaryDirectory(prefix="ragmesh-bench-pipeline-") as tmp_name:
        tmp = Path(tmp_name)
        base_s, base_chunks = asyncio.run(_baseline_async(docs, tmp / "baseline.db"))
        stack = Stack(tmp)
        try:
            one_s, one_chunks = _pipeline(stack, "one-worker", docs, 1)
            two_s, two_chunks = _pipeline(stack, "two-workers", docs, 2)
            rows = []
            for clients in (1, 20):
                count = max(n_queries, clients)
                rows.append(
                    _row(
                        "Search",
                        clients,
                        _latencies(_search_gateway(stack, "one-worker"), queries[:count], clients),
                        _latencies(_search_direct(stack, "one-worker"), queries[:count], clients),
                    )
                )
            for max_clients, count in ((1, n_asks), (20, n_asks_concurrent)):
                if not count:
                    continue
                ask_clients = min(max_clients, count)
                qs = [f"What is said about {q}?" for q in (queries * 20)[:count]]
                rows.append(
                    _row(
                        "Ask (16 tokens)",
                        ask_clients,
                        _latencies(_ask_gateway(stack, "one-worker"), qs, ask_clients),
                        _latencies(_ask_direct(stack, "one-worker"), qs, ask_clients),
                    )
                )
        finally:
            stack.close()
    base_dps, one_dps, two_dps = n_docs / base_s, n_docs / one_s, n_docs / two_s
    assert one_chunks == two_chunks == base_chunks, (one_chunks, two_chunks, base_chunks)
    return "\n".join(
        [
            "## Pipeline: documents → searchable, and gateway latency",
            "",
            f"{n_docs} English text documents of {paragraphs} paragraphs ({base_chunks} chunks). "
            "Pipeline: upload through the gateway (16 at a time) until every job SUCCEEDED, with "
            "Celery workers (prefork, concurrency 1 each) calling the chunking, embedding and "
            "retrieval services (Milvus Lite). Baseline: the same chunker and embedding model "
            "and a Milvus Lite insert + flush, in one process.",
            "",
            "| ingestion | seconds | documents/s | chunks/s | vs baseline |",
            "|---|---:|---:|---:|---:|",
            f"| baseline (in process) | {base_s:.1f} | {base_dps:.2f} | {base_chunks / base_s:.1f} "
            "| 1.00× |",
            f"| pipeline, 1 worker | {one_s:.1f} | {one_dps:.2f} | {one_chunks / one_s:.1f} "
            f"| {one_dps / base_dps:.2f}× (target ≥ 0.8×) |",
            f"| pipeline, 2 workers | {two_s:.1f} | {two_dps:.2f} | {two_chunks / two_s:.1f} "
            f"| {two_dps / base_dps:.2f}× |",
            "",
            "Latency in ms (p50 / p99) through the gateway vs the same services called directly "
            "in sequence (EmbedTexts + SearchChunks, + GenerateAnswer for Ask), at the same "
            "number of concurrent clients:",
            "",
            "| call | clients | gateway p50 / p99 | direct p50 / p99 | p50 ratio | p50 overhead |",
            "|---|---:|---:|---:|---:|---:|",
            *rows,
        ]
    )


if __name__ == "__main__":
    print(run())
