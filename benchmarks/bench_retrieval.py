"""Retrieval latency and throughput (issue 4, item 8).

For Milvus Lite and the Milvus 2.3 server, at each corpus size (384-d
embedding-like unit vectors, one short text per chunk): insert throughput through
UpsertChunks (documents of 100 chunks), search latency p50/p99 over gRPC
against direct pymilvus calls on the same data with the same parameters (the
baseline: what the service adds is the difference), and HNSW recall@10 against
exact search (what a FLAT index returns).

`python -m benchmarks.run retrieval`; environment for a quick check:
RAGMESH_BENCH_RETRIEVAL_SIZES (default 10000,100000), RAGMESH_BENCH_RETRIEVAL_QUERIES
(default 200), RAGMESH_BENCH_RETRIEVAL_BACKENDS (default lite,server).
"""

from __future__ import annotations

import os
import random
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import grpc
import numpy as np

from devstack.deps import start_milvus_server
from devstack.procs import ManagedProcess, start_service
from ragmesh.common.v1 import common_pb2 as c
from ragmesh.eval_metrics import percentile
from ragmesh.retrieval.v1 import retrieval_pb2 as pb
from ragmesh.retrieval.v1 import retrieval_pb2_grpc
from services.retrieval.schema import F_DENSE, OUTPUT_FIELDS

DIM = 384
TOP_K = 10
DOC_CHUNKS = 100
COLLECTION = "kb_bench_latency"
HNSW_EF = 128  # the service default (RAGMESH_RETRIEVAL_HNSW_EF)
TIMEOUT = 600.0
WORDS = [
    "vector",
    "search",
    "milvus",
    "index",
    "chunk",
    "document",
    "query",
    "latency",
    "recall",
    "fusion",
    "retrieval",
    "grpc",
    "service",
    "python",
    "lite",
    "server",
    "segment",
    "shard",
    "replica",
    "token",
    "embedding",
    "model",
]


@dataclass
class Row:
    backend: str
    size: int
    insert_per_s: float
    direct_insert_per_s: float
    grpc_p50: float
    grpc_p99: float
    direct_p50: float
    direct_p99: float
    recall: float
    after_write_ms: float


# Sentence embeddings occupy a low-dimensional part of their space; uniformly random
# 384-d vectors have no structure at all and are the worst case for any ANN index
# (faiss HNSW M 16 / efConstruction 200 / ef 128 finds 0.47 of the true top 10 on 20k of
# them, against 0.996 on the vectors below). The bench's vectors: a 32-d Gaussian latent
# projected to 384-d plus noise, normalised; their similarities look like MiniLM's
# (best match ~0.6, tenth ~0.5, typical pair ~0).
LATENT_DIM = 32
NOISE = 0.3
_PROJECTION = np.random.default_rng(2024).standard_normal((LATENT_DIM, DIM)).astype(
    np.float32
) / np.sqrt(LATENT_DIM)


def _unit(rng: np.random.Generator, n: int) -> np.ndarray:
    """n embedding-like unit vectors (see above)."""
    z = rng.standard_normal((n, LATENT_DIM)).astype(np.float32)
    v = z @ _PROJECTION + NOISE * rng.standard_normal((n, DIM)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def _text(rnd: random.Random) -> str:
    return " ".join(rnd.choice(WORDS) for _ in range(12))


def _time_ms(fn: Callable[[], object]) -> float:
    t0 = time.perf_counter()
    fn()
    return (time.perf_counter() - t0) * 1000


class Corpus:
    """The vectors stored so far (for the exact ground truth)."""

    def __init__(self, seed: int = 7) -> None:
        self.rng = np.random.default_rng(seed)
        self.rnd = random.Random(seed)
        self.vectors = np.zeros((0, DIM), dtype=np.float32)
        self.ids: list[str] = []

    def grow(self, stub: retrieval_pb2_grpc.RetrievalServiceStub, size: int) -> float:
        """Insert up to `size` chunks through the service; chunks per second."""
        new = size - len(self.ids)
        vectors = _unit(self.rng, new)
        start = time.perf_counter()
        for offset in range(0, new, DOC_CHUNKS):
            doc = f"doc{(len(self.ids) + offset) // DOC_CHUNKS}"
            batch = vectors[offset : offset + DOC_CHUNKS]
            stub.UpsertChunks(
                pb.UpsertChunksRequest(
                    collection=COLLECTION,
                    document_id=doc,
                    document_version="1",
                    chunks=[
                        pb.ChunkToUpsert(
                            chunk=c.Chunk(document_id=doc, chunk_index=i, text=_text(self.rnd)),
                            vector=v.tolist(),
                        )
                        for i, v in enumerate(batch)
                    ],
                ),
                timeout=TIMEOUT,
            )
        took = time.perf_counter() - start
        self.ids += [
            f"doc{(len(self.ids) + j) // DOC_CHUNKS}:{(len(self.ids) + j) % DOC_CHUNKS}"
            for j in range(new)
        ]
        self.vectors = np.vstack([self.vectors, vectors])
        return new / took

    def exact_top(self, queries: np.ndarray) -> list[set[str]]:
        scores = queries @ self.vectors.T
        top = np.argsort(-scores, axis=1)[:, :TOP_K]
        return [{self.ids[j] for j in row} for row in top]


def _direct_search(client: Any, q: np.ndarray, **kw: Any) -> list[str]:
    res = client.search(
        COLLECTION,
        data=[q.tolist()],
        anns_field=F_DENSE,
        limit=TOP_K,
        output_fields=OUTPUT_FIELDS,
        search_params={"metric_type": "COSINE", "params": {"ef": HNSW_EF}},
        **kw,
    )
    return [str(h["id"]) for h in res[0]]


def _direct_insert_rate(client: Any, n: int = 2_000) -> float:
    """Rows per second of plain pymilvus upserts (then one flush) into the same collection."""
    rng = np.random.default_rng(99)
    rnd = random.Random(99)
    vectors = _unit(rng, n)
    rows = [
        {
            "id": f"direct:{i}",
            "document_id": "direct",
            "chunk_index": i,
            "document_version": "1",
            "text": _text(rnd),
            "title": "",
            "heading_path": "[]",
            "start_offset": 0,
            "end_offset": 0,
            "token_count": 0,
            "source": "",
            "language": "",
            "media_type": "",
            "metadata": {},
            F_DENSE: v.tolist(),
        }
        for i, v in enumerate(vectors)
    ]
    # The fields newer collections have beside the original ones (pages, BM25 index text).
    fields = {f["name"] for f in client.describe_collection(COLLECTION)["fields"]}
    extra = {"page_start": 0, "page_end": 0, "page_label": "", "bm25_text": None}
    for row in rows:
        row.update({k: (row["text"] if v is None else v) for k, v in extra.items() if k in fields})
    start = time.perf_counter()
    for i in range(0, n, DOC_CHUNKS):
        client.upsert(COLLECTION, rows[i : i + DOC_CHUNKS])
    client.flush(COLLECTION)  # searchable at full speed, as the service leaves its writes
    took = time.perf_counter() - start
    client.delete(COLLECTION, filter='document_id == "direct"')
    return n / took


def _write_then_search(
    stub: retrieval_pb2_grpc.RetrievalServiceStub,
    search: Callable[[np.ndarray], list[str]],
    q: np.ndarray,
    i: int,
) -> float:
    """Milliseconds of a search issued right after an UpsertChunks returned (the
    read-your-writes wait), checking that it sees the write."""
    doc = f"fresh{i}"
    stub.UpsertChunks(
        pb.UpsertChunksRequest(
            collection=COLLECTION,
            document_id=doc,
            document_version="1",
            chunks=[
                pb.ChunkToUpsert(
                    chunk=c.Chunk(document_id=doc, chunk_index=0, text="fresh"),
                    vector=q.tolist(),
                )
            ],
        ),
        timeout=TIMEOUT,
    )
    t0 = time.perf_counter()
    found = search(q)
    took = (time.perf_counter() - t0) * 1000
    if found[:1] != [f"{doc}:0"]:
        raise AssertionError(f"a search right after the write did not see it: {found}")
    stub.DeleteDocumentChunks(
        pb.DeleteDocumentChunksRequest(collection=COLLECTION, document_id=doc), timeout=TIMEOUT
    )
    return took


def bench_backend(backend: str, sizes: Sequence[int], n_queries: int, tmp: Path) -> list[Row]:  # noqa: C901, PLR0912, PLR0915 - one benchmark's steps in order, read top to bottom
    from pymilvus import MilvusClient

    rows: list[Row] = []
    milvus: ManagedProcess | None = None
    if backend == "server":
        milvus, uri = start_milvus_server(tmp / "milvus", log_dir=tmp)
    else:
        uri = str(tmp / "lite" / "bench.db")
        (tmp / "lite").mkdir()
    env = {
        "RAGMESH_RETRIEVAL_MILVUS_URI": uri,
        "RAGMESH_LOG_FORMAT": "text",
        "RAGMESH_LOG_LEVEL": "WARNING",
    }
    corpus = Corpus()
    queries = _unit(np.random.default_rng(1), n_queries)
    service: ManagedProcess | None = None
    try:
        for size in sorted(sizes):
            service, addr = start_service("retrieval", env=env, log_dir=tmp, timeout=600)
            with grpc.insecure_channel(addr) as channel:
                stub = retrieval_pb2_grpc.RetrievalServiceStub(channel)
                if not corpus.ids:
                    stub.CreateCollection(
                        pb.CreateCollectionRequest(
                            name=COLLECTION,
                            dimension=DIM,
                            metric=c.METRIC_COSINE,
                            index_type=c.INDEX_TYPE_HNSW,
                        ),
                        timeout=TIMEOUT,
                    )
                rate = corpus.grow(stub, size)

                def search(q: np.ndarray, stub: Any = stub) -> list[str]:
                    resp = stub.SearchChunks(
                        pb.SearchChunksRequest(
                            collection=COLLECTION,
                            query_vector=q.tolist(),
                            top_k=TOP_K,
                            mode=c.SEARCH_MODE_DENSE,
                        ),
                        timeout=TIMEOUT,
                    )
                    return [r.chunk.id for r in resp.results]

                for q in queries[:10]:  # warm up (segment loading, caches)
                    search(q)
                found = [search(q) for q in queries]
                client: Any = None
                kw: dict[str, Any] = {"consistency_level": "Eventually"}
                if backend == "server":
                    # Alternate the two, so that both see the same load on the machine.
                    client = MilvusClient(uri)
                    for q in queries[:10]:
                        _direct_search(client, q, **kw)
                    grpc_ms, direct_ms = [], []
                    for q in queries:
                        grpc_ms.append(_time_ms(partial(search, q)))
                        direct_ms.append(_time_ms(partial(_direct_search, client, q, **kw)))
                else:
                    grpc_ms = [_time_ms(partial(search, q)) for q in queries]
                after_write = [_write_then_search(stub, search, queries[i], i) for i in range(5)]
            if client is None:  # Milvus Lite: the .db is locked by one process, hand it over
                service.stop()
                service = None
                client = MilvusClient(uri)
                client.load_collection(COLLECTION)  # a reopened Milvus Lite starts released
                kw = {}
                for q in queries[:10]:
                    _direct_search(client, q, **kw)
                direct_ms = [_time_ms(partial(_direct_search, client, q, **kw)) for q in queries]
            direct_rate = _direct_insert_rate(client)
            client.close()
            if backend == "lite":
                from milvus_lite.server_manager import server_manager_instance

                server_manager_instance.release_server(uri)
            if service is not None:
                service.stop()
                service = None
            truth = corpus.exact_top(queries)
            recall = statistics.mean(
                len(set(f) & t) / TOP_K for f, t in zip(found, truth, strict=True)
            )
            rows.append(
                Row(
                    backend,
                    size,
                    rate,
                    direct_rate,
                    percentile(grpc_ms, 0.5),
                    percentile(grpc_ms, 0.99),
                    percentile(direct_ms, 0.5),
                    percentile(direct_ms, 0.99),
                    recall,
                    statistics.median(after_write),
                )
            )
    finally:
        if service is not None:
            service.stop()
        if milvus is not None:
            milvus.stop(timeout=30)
    return rows


def run() -> str:
    sizes = [
        int(s) for s in os.environ.get("RAGMESH_BENCH_RETRIEVAL_SIZES", "10000,100000").split(",")
    ]
    n_queries = int(os.environ.get("RAGMESH_BENCH_RETRIEVAL_QUERIES", "200"))
    backends = os.environ.get("RAGMESH_BENCH_RETRIEVAL_BACKENDS", "lite,server").split(",")
    rows: list[Row] = []
    for backend in backends:
        tmp = Path(tempfile.mkdtemp(prefix=f"ragmesh-bench-retrieval-{backend}-"))
        try:
            rows += bench_backend(backend, sizes, n_queries, tmp)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    lines = [
        "## Retrieval latency",
        "",
        f"{DIM}-d embedding-like unit vectors (a {LATENT_DIM}-d Gaussian latent projected to "
        f"{DIM}-d plus noise {NOISE}, normalised: best-match cosine ~0.6 like MiniLM's; "
        "uniformly random 384-d vectors defeat any ANN index), HNSW (M 16, efConstruction "
        f"200, ef {HNSW_EF}), COSINE, "
        f"top {TOP_K} with every stored field, {n_queries} queries one at a time after a "
        "warm-up. *gRPC* is SearchChunks through the retrieval service (DENSE, Session "
        "consistency); *direct* is pymilvus `MilvusClient.search` on the same collection with "
        "the same parameters (Milvus Lite: the service is stopped first, as the `.db` is "
        "locked by one process). Inserts go through UpsertChunks (REPLACE, documents of "
        f"{DOC_CHUNKS} chunks; on Milvus Lite each call ends with a flush), against plain "
        "pymilvus upserts of the same batches followed by one flush. *First search after a "
        "write*: median of 5 searches each issued right after a one-chunk UpsertChunks "
        "returned (the read-your-writes wait; each must find the new chunk). Recall@10 is "
        "against exact search (what a FLAT index returns).",
        "",
        "| backend | chunks | insert via service (chunks/s) | direct upsert + flush (rows/s) | "
        "search p50 gRPC / direct (ms) | added at p50 (target ≤ 2 ms) | "
        "search p99 gRPC / direct (ms) | first search after a write (ms) | "
        "HNSW recall@10 vs FLAT (target ≥ 0.95) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        added = r.grpc_p50 - r.direct_p50
        lines.append(
            f"| {r.backend} | {r.size:,} | {r.insert_per_s:,.0f} "
            f"({r.insert_per_s / r.direct_insert_per_s:.2f}× direct) | "
            f"{r.direct_insert_per_s:,.0f} | {r.grpc_p50:.1f} / {r.direct_p50:.1f} | "
            f"{added:+.1f} ms ({'ok' if added <= 2.0 else 'MISSED'}) | "
            f"{r.grpc_p99:.1f} / {r.direct_p99:.1f} | {r.after_write_ms:.1f} | {r.recall:.3f} "
            f"({'ok' if r.recall >= 0.95 else 'MISSED'}) |"
        )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(run())
