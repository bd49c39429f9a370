"""Retrieval quality (issue 4, item 7): recall@1/5/10 and MRR@10 of DENSE,
SPARSE (BM25) and HYBRID search on ../shared/data/cmrc2018-trial (Chinese) and
../shared/data/squad2-sample-a (English), through the real services: chunking
→ embedding → retrieval (Milvus Lite). A question is a hit at k when its gold
passage is among the first k distinct documents of the retrieved chunks.

Also measures how Milvus Lite's BM25 query latency grows with the corpus size.

`python -m benchmarks.run quality`; `RAGMESH_BENCH_QUALITY_QUESTIONS=N` caps the
questions per data set and `RAGMESH_BENCH_BM25_SIZES=256,1024` sets the corpus
sizes of the growth measurement (for a quick check).
"""

from __future__ import annotations

import json
import os
import statistics
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

import grpc

from devstack.procs import start_service
from ragmesh.chunking.v1 import chunking_pb2, chunking_pb2_grpc
from ragmesh.common.v1 import common_pb2 as c
from ragmesh.embedding.v1 import embedding_pb2, embedding_pb2_grpc
from ragmesh.retrieval.v1 import retrieval_pb2 as pb
from ragmesh.retrieval.v1 import retrieval_pb2_grpc

DATA = Path(
    os.environ.get("RAGMESH_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data")
)
DATASETS = [
    # name, analyzer language, reference recall@1 / recall@5 / MRR@10 (../shared/data/README.md)
    ("cmrc2018-trial", c.TEXT_LANGUAGE_CHINESE, "BM25 (bm25s, jieba) 0.970 / 0.988 / 0.978"),
    (
        "squad2-sample-a",
        c.TEXT_LANGUAGE_ENGLISH,
        "BM25 0.929 / 0.980 / 0.953; dense 0.806 / 0.956 / 0.870; RRF 0.901 / 0.988 / 0.941",
    ),
]
TARGET_RECALL_AT_5 = 0.98
MODES = [
    ("DENSE", c.SEARCH_MODE_DENSE),
    ("SPARSE", c.SEARCH_MODE_SPARSE),
    ("HYBRID", c.SEARCH_MODE_HYBRID),
]
RETRIEVED_CHUNKS = 30  # chunks fetched per question, then reduced to distinct documents
EMBED_BATCH = 32
TIMEOUT = 120.0


@dataclass
class Scores:
    r1: float
    r5: float
    r10: float
    mrr10: float
    p50_ms: float

    def row(self) -> list[float]:
        return [self.r1, self.r5, self.r10, self.mrr10]


def _jsonl(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def distinct_documents(chunk_document_ids: Sequence[str]) -> list[str]:
    seen: dict[str, None] = {}
    for doc in chunk_document_ids:
        seen.setdefault(doc, None)
    return list(seen)


def score(
    rankings: Sequence[Sequence[str]], gold: Sequence[str], latencies: Sequence[float]
) -> Scores:
    hits = {1: 0, 5: 0, 10: 0}
    mrr = 0.0
    for ranked, want in zip(rankings, gold, strict=True):
        top = list(ranked[:10])
        if want in top:
            pos = top.index(want) + 1
            for k in hits:
                hits[k] += pos <= k
            mrr += 1 / pos
    n = max(1, len(gold))
    return Scores(
        hits[1] / n,
        hits[5] / n,
        hits[10] / n,
        mrr / n,
        statistics.median(latencies) * 1000 if latencies else 0.0,
    )


@contextmanager
def services(tmp: Path) -> Iterator[dict[str, grpc.Channel]]:
    env = {"RAGMESH_LOG_FORMAT": "text", "RAGMESH_RETRIEVAL_MILVUS_URI": str(tmp / "q.db")}
    with ExitStack() as stack:
        channels: dict[str, grpc.Channel] = {}
        for name in ("chunking", "embedding", "retrieval"):
            proc, addr = start_service(name, env=env, log_dir=tmp, timeout=300)
            stack.callback(proc.stop)
            channels[name] = stack.enter_context(grpc.insecure_channel(addr))
        yield channels


def embed(
    stub: embedding_pb2_grpc.EmbeddingServiceStub, texts: Sequence[str], input_type: int
) -> list[list[float]]:
    out: list[list[float]] = []
    for i in range(0, len(texts), EMBED_BATCH):
        resp = stub.EmbedTexts(
            embedding_pb2.EmbedTextsRequest(
                texts=list(texts[i : i + EMBED_BATCH]),
                input_type=input_type,  # type: ignore[arg-type]
                truncate=True,
            ),
            timeout=TIMEOUT,
        )
        out.extend(list(e.values) for e in resp.embeddings)
    return out


def evaluate(
    channels: dict[str, grpc.Channel], name: str, language: int, max_questions: int | None
) -> tuple[dict[str, Scores], int, int, float]:
    chunker = chunking_pb2_grpc.ChunkingServiceStub(channels["chunking"])
    embedder = embedding_pb2_grpc.EmbeddingServiceStub(channels["embedding"])
    retrieval = retrieval_pb2_grpc.RetrievalServiceStub(channels["retrieval"])
    corpus = _jsonl(DATA / name / "corpus.jsonl")
    questions = _jsonl(DATA / name / "qa.jsonl")[:max_questions]
    info = embedder.GetModelInfo(embedding_pb2.GetModelInfoRequest(), timeout=TIMEOUT)
    collection = "kb_bench_" + name.replace("-", "_")
    retrieval.CreateCollection(
        pb.CreateCollectionRequest(
            name=collection,
            dimension=info.dimension,
            metric=c.METRIC_COSINE,
            index_type=c.INDEX_TYPE_HNSW,
            language=language,  # type: ignore[arg-type]
        ),
        timeout=TIMEOUT,
    )
    start = time.perf_counter()
    n_chunks = 0
    for passage in corpus:
        doc_id, text = str(passage["id"]), str(passage["text"])
        chunks = chunker.ChunkDocument(
            chunking_pb2.ChunkDocumentRequest(
                text=text, media_type="text/plain", document_id=doc_id
            ),
            timeout=TIMEOUT,
        ).chunks
        vectors = embed(embedder, [ch.text for ch in chunks], embedding_pb2.INPUT_TYPE_DOCUMENT)
        for ch in chunks:
            ch.title = str(passage.get("title", ""))
        retrieval.UpsertChunks(
            pb.UpsertChunksRequest(
                collection=collection,
                document_id=doc_id,
                document_version="1",
                chunks=[
                    pb.ChunkToUpsert(chunk=ch, vector=v)
                    for ch, v in zip(chunks, vectors, strict=True)
                ],
            ),
            timeout=TIMEOUT,
        )
        n_chunks += len(chunks)
    index_s = time.perf_counter() - start
    gold = [str(q["doc_id"]) for q in questions]
    # A blank question (cmrc2018-trial has two) retrieves nothing: it counts as a miss.
    asked = [q for q in questions if str(q["question"]).strip()]
    query_vectors = embed(
        embedder, [str(q["question"]) for q in asked], embedding_pb2.INPUT_TYPE_QUERY
    )
    results: dict[str, Scores] = {}
    for label, mode in MODES:
        ranked_by_id: dict[str, list[str]] = {}
        latencies: list[float] = []
        for q, vec in zip(asked, query_vectors, strict=True):
            t0 = time.perf_counter()
            resp = retrieval.SearchChunks(
                pb.SearchChunksRequest(
                    collection=collection,
                    query_vector=vec,
                    query_text=str(q["question"]),
                    mode=mode,
                    top_k=RETRIEVED_CHUNKS,
                ),
                timeout=TIMEOUT,
            )  # type: ignore[arg-type]
            latencies.append(time.perf_counter() - t0)
            ranked_by_id[str(q["id"])] = distinct_documents(
                [r.chunk.document_id for r in resp.results]
            )
        rankings = [ranked_by_id.get(str(q["id"]), []) for q in questions]
        results[label] = score(rankings, gold, latencies)
    retrieval.DeleteCollection(pb.DeleteCollectionRequest(name=collection), timeout=TIMEOUT)
    return results, len(corpus), n_chunks, index_s


def bm25_growth(
    retrieval: retrieval_pb2_grpc.RetrievalServiceStub, sizes: Sequence[int], queries: int = 30
) -> list[tuple[int, float, float]]:
    """BM25 p50/p99 query latency on Milvus Lite as the Chinese corpus grows
    (the passages repeated; 8-d dummy vectors, BM25 needs none)."""
    corpus = _jsonl(DATA / "cmrc2018-trial" / "corpus.jsonl")
    questions = [str(q["question"]) for q in _jsonl(DATA / "cmrc2018-trial" / "qa.jsonl")]
    collection = "kb_bench_bm25_growth"
    retrieval.CreateCollection(
        pb.CreateCollectionRequest(
            name=collection,
            dimension=8,
            language=c.TEXT_LANGUAGE_CHINESE,
            index_type=c.INDEX_TYPE_FLAT,
        ),
        timeout=TIMEOUT,
    )
    stored = 0
    out: list[tuple[int, float, float]] = []
    for size in sorted(sizes):
        # Passages go in as chunks of synthetic 64-passage documents: the growth of
        # query latency is the point here, not ingestion (one flush per call).
        while stored < size:
            doc = f"growth{stored // 64}"
            count = min(64 - stored % 64, size - stored)
            chunks = [
                pb.ChunkToUpsert(
                    chunk=c.Chunk(
                        document_id=doc,
                        chunk_index=(stored + i) % 64,
                        text=str(corpus[(stored + i) % len(corpus)]["text"]),
                    ),
                    vector=[0.1] * 8,
                )
                for i in range(count)
            ]
            retrieval.UpsertChunks(
                pb.UpsertChunksRequest(
                    collection=collection,
                    document_id=doc,
                    document_version="1",
                    chunks=chunks,
                    mode=pb.UPSERT_MODE_APPEND_BATCH,
                ),
                timeout=TIMEOUT,
            )
            stored += count
        for q in questions[-3:]:  # warm up: the first searches after writes load segments
            retrieval.SearchChunks(
                pb.SearchChunksRequest(
                    collection=collection, query_text=q, mode=c.SEARCH_MODE_SPARSE, top_k=10
                ),
                timeout=TIMEOUT,
            )
        lat = []
        for q in questions[:queries]:
            t0 = time.perf_counter()
            retrieval.SearchChunks(
                pb.SearchChunksRequest(
                    collection=collection, query_text=q, mode=c.SEARCH_MODE_SPARSE, top_k=10
                ),
                timeout=TIMEOUT,
            )
            lat.append(time.perf_counter() - t0)
        lat.sort()
        out.append(
            (
                size,
                statistics.median(lat) * 1000,
                lat[min(len(lat) - 1, int(0.99 * len(lat)))] * 1000,
            )
        )
    retrieval.DeleteCollection(pb.DeleteCollectionRequest(name=collection), timeout=TIMEOUT)
    return out


def _fmt(x: float) -> str:
    return f"{x:.3f}"


def run() -> str:
    if not DATA.is_dir():
        return f"## Retrieval quality\n\nSkipped: no evaluation data at {DATA}.\n"
    limit_env = os.environ.get("RAGMESH_BENCH_QUALITY_QUESTIONS")
    max_questions = int(limit_env) if limit_env else None
    sizes = [int(s) for s in os.environ.get("RAGMESH_BENCH_BM25_SIZES", "256,1024,4096").split(",")]
    lines = [
        "## Retrieval quality",
        "",
        "Chunking → embedding (all-MiniLM-L6-v2, 384-d) → retrieval on Milvus Lite (HNSW, "
        "COSINE; BM25 with the `standard` analyzer and English stop words, or `jieba`). "
        f"{RETRIEVED_CHUNKS} chunks per question, reduced to distinct documents; a question "
        "is a hit at k when its gold passage is among the first k documents. HYBRID uses the "
        "service default (WEIGHTED fusion of bound-normalised scores, weights 1:1, "
        "20 candidates per retriever).",
        "",
    ]
    verdicts: list[str] = []
    with (
        tempfile.TemporaryDirectory(prefix="ragmesh-bench-quality-") as tmp,
        services(Path(tmp)) as channels,
    ):
        for name, language, reference in DATASETS:
            results, n_docs, n_chunks, index_s = evaluate(channels, name, language, max_questions)
            n_q = max_questions or len(_jsonl(DATA / name / "qa.jsonl"))
            lines += [
                f"### {name} ({n_docs} passages → {n_chunks} chunks, {min(n_q, 10**9)} "
                f"questions; indexed in {index_s:.0f} s)",
                "",
                "| mode | recall@1 | recall@5 | recall@10 | MRR@10 | p50 search (ms) |",
                "|---|---|---|---|---|---|",
            ]
            for label, s in results.items():
                lines.append(
                    f"| {label} | {_fmt(s.r1)} | {_fmt(s.r5)} | {_fmt(s.r10)} | "
                    f"{_fmt(s.mrr10)} | {s.p50_ms:.1f} |"
                )
            hybrid = results["HYBRID"].row()
            best = [
                max(a, b)
                for a, b in zip(results["DENSE"].row(), results["SPARSE"].row(), strict=True)
            ]
            margin = [h - b for h, b in zip(hybrid, best, strict=True)]
            ok = all(m >= -1e-9 for m in margin)
            r5_ok = results["HYBRID"].r5 >= TARGET_RECALL_AT_5
            lines += [
                "",
                "HYBRID minus the better of DENSE and SPARSE (recall@1/5/10, MRR@10): "
                + " / ".join(f"{m:+.3f}" for m in margin)
                + f" → {'never worse' if ok else 'WORSE on some metric'}; HYBRID recall@5 "
                f"{results['HYBRID'].r5:.3f} vs target {TARGET_RECALL_AT_5} "
                f"({results['HYBRID'].r5 / TARGET_RECALL_AT_5:.3f}×). Reference (plain "
                f"libraries, whole passages, recall@1 / recall@5 / MRR@10): {reference}.",
                "",
            ]
            verdicts.append(f"{name}: {'ok' if ok and r5_ok else 'MISSED'}")
        growth = bm25_growth(retrieval_pb2_grpc.RetrievalServiceStub(channels["retrieval"]), sizes)
    base = growth[0][1]
    lines += [
        "### BM25 query latency on Milvus Lite vs corpus size (Chinese, jieba)",
        "",
        "| passages | p50 (ms) | p99 (ms) | p50 vs smallest |",
        "|---|---|---|---|",
        *[f"| {n} | {p50:.1f} | {p99:.1f} | {p50 / base:.2f}× |" for n, p50, p99 in growth],
        "",
        "Targets: " + "; ".join(verdicts) + ".",
    ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(run())
