"""The retrieval service over real gRPC on both backends: Milvus Lite (a `.db`
opened by the service) and the Milvus 2.3 standalone server. The same tests
run on both; only BM25 (SPARSE/HYBRID) differs: the 2.3 server has none, and
there the service must answer FAILED_PRECONDITION."""

from __future__ import annotations

import os
import random
import signal
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import struct_pb2

from devstack.procs import (
    ManagedProcess,
    free_port,
    health_status,
    port_open,
    service_process,
    start_service,
)
from ragmesh.common.v1 import common_pb2 as c
from ragmesh.retrieval.v1 import retrieval_pb2 as pb
from ragmesh.retrieval.v1 import retrieval_pb2_grpc
from services.common.status import error_info_of

DIM = 8
TIMEOUT = 60.0
SERVICE = "ragmesh.retrieval.v1.RetrievalService"


@dataclass
class Backend:
    name: str
    addr: str
    stub: retrieval_pb2_grpc.RetrievalServiceStub
    bm25: bool


@pytest.fixture(
    scope="module",
    params=["lite", pytest.param("server", marks=pytest.mark.milvus_server)],
)
def backend(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, log_dir: Path
) -> Iterator[Backend]:
    if request.param == "lite":
        uri = str(tmp_path_factory.mktemp("milvus-lite") / "ragmesh.db")
    else:
        # An already running server may be named (handy while developing: the
        # server takes ~40 s to start and only one can run on a machine).
        uri = os.environ.get("RAGMESH_TEST_MILVUS_SERVER_URI") or request.getfixturevalue(
            "milvus_server_uri"
        )
    proc, addr = start_service(
        "retrieval",
        env={"RAGMESH_RETRIEVAL_MILVUS_URI": uri, "RAGMESH_LOG_FORMAT": "text"},
        log_dir=log_dir,
        timeout=180,
    )
    channel = grpc.insecure_channel(addr)
    try:
        yield Backend(
            request.param,
            addr,
            retrieval_pb2_grpc.RetrievalServiceStub(channel),
            bm25=request.param == "lite",
        )
    finally:
        channel.close()
        proc.stop()


def _vec(rng: random.Random, dim: int = DIM) -> list[float]:
    """A random unit vector (so that inner product, too, ranks a vector first for itself)."""
    v = [rng.uniform(-1, 1) for _ in range(dim)]
    norm = sum(x * x for x in v) ** 0.5
    return [x / norm for x in v]


def _name() -> str:
    return f"kb_test_{uuid.uuid4().hex[:10]}"


def _struct(d: dict[str, Any]) -> struct_pb2.Struct:
    s = struct_pb2.Struct()
    s.update(d)
    return s


def _value(v: Any) -> struct_pb2.Value:
    value = struct_pb2.Value()
    if isinstance(v, list):
        value.list_value.extend(v)
    elif isinstance(v, bool):
        value.bool_value = v
    elif isinstance(v, (int, float)):
        value.number_value = v
    else:
        value.string_value = v
    return value


def cond(field: str, op: int, v: Any) -> c.FilterCondition:
    return c.FilterCondition(field=field, operator=op, value=_value(v))  # type: ignore[arg-type]


def expect_error(call: Callable[[], Any], code: grpc.StatusCode, reason: str) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as err:
        call()
    assert err.value.code() == code, err.value.details()
    info = error_info_of(err.value)
    assert info is not None and info.reason == reason, (info, err.value.details())
    assert info.domain == "retrieval.ragmesh"
    return err.value


class KB:
    """A collection plus the vectors written to it, for assertions."""

    def __init__(self, b: Backend, language: int = c.TEXT_LANGUAGE_ENGLISH, **kw: Any) -> None:
        self.b = b
        self.name = _name()
        self.rng = random.Random(self.name)
        self.vectors: dict[str, list[float]] = {}
        resp = b.stub.CreateCollection(
            pb.CreateCollectionRequest(
                name=self.name, dimension=kw.pop("dimension", DIM), language=language, **kw
            ),  # type: ignore[arg-type]
            timeout=TIMEOUT,
        )
        self.collection = resp.collection

    def chunk(self, doc: str, i: int, text: str, **kw: Any) -> pb.ChunkToUpsert:
        vec = kw.pop("vector", None) or _vec(self.rng)
        self.vectors[f"{doc}:{i}"] = vec
        return pb.ChunkToUpsert(
            chunk=c.Chunk(document_id=doc, chunk_index=i, text=text, **kw), vector=vec
        )

    def upsert(
        self,
        doc: str,
        version: str,
        chunks: list[pb.ChunkToUpsert],
        mode: int = pb.UPSERT_MODE_REPLACE,
    ) -> pb.UpsertChunksResponse:
        return self.b.stub.UpsertChunks(
            pb.UpsertChunksRequest(
                collection=self.name,
                document_id=doc,
                document_version=version,
                chunks=chunks,
                mode=mode,
            ),  # type: ignore[arg-type]
            timeout=TIMEOUT,
        )

    def chunks(self, doc: str, version: str = "", **kw: Any) -> list[c.Chunk]:
        out: list[c.Chunk] = []
        token = ""
        while True:
            resp = self.b.stub.ListChunks(
                pb.ListChunksRequest(
                    collection=self.name,
                    document_id=doc,
                    document_version=version,
                    page_token=token,
                    **kw,
                ),
                timeout=TIMEOUT,
            )
            out.extend(resp.chunks)
            token = resp.next_page_token
            if not token:
                return out

    def search(self, **kw: Any) -> pb.SearchChunksResponse:
        return self.b.stub.SearchChunks(
            pb.SearchChunksRequest(collection=self.name, **kw), timeout=TIMEOUT
        )

    def snapshot(self) -> tuple[int, list[tuple[str, str, str]]]:
        """Everything stored, to check that a rejected call changed nothing."""
        count = self.b.stub.GetCollection(
            pb.GetCollectionRequest(name=self.name), timeout=TIMEOUT
        ).collection.chunk_count
        docs = self.b.stub.ListDocuments(
            pb.ListDocumentsRequest(collection=self.name), timeout=TIMEOUT
        ).documents
        rows = [
            (ch.id, ch.document_version, ch.text) for d in docs for ch in self.chunks(d.document_id)
        ]
        return count, sorted(rows)

    def drop(self) -> None:
        self.b.stub.DeleteCollection(pb.DeleteCollectionRequest(name=self.name), timeout=TIMEOUT)


@pytest.fixture
def kb(backend: Backend) -> Iterator[KB]:
    kb = KB(backend)
    yield kb
    kb.drop()


# -- capabilities and collections ------------------------------------------------


def test_capabilities(backend: Backend) -> None:
    caps = backend.stub.GetCapabilities(pb.GetCapabilitiesRequest(), timeout=TIMEOUT)
    assert caps.sparse_supported is backend.bm25
    assert caps.hybrid_supported is backend.bm25
    assert caps.backend == ("milvus-lite" if backend.name == "lite" else "milvus-server")
    assert caps.server_version
    assert "document_id" in caps.filter_fields and "metadata.<key>" in caps.filter_fields
    assert c.INDEX_TYPE_HNSW in caps.index_types
    assert caps.max_top_k == 100
    if backend.bm25:
        assert set(caps.analyzers) == {"standard", "jieba"}


def test_collection_lifecycle(backend: Backend) -> None:
    kb = KB(backend)
    col = kb.collection
    assert (col.name, col.dimension, col.metric, col.index_type, col.language) == (
        kb.name,
        DIM,
        c.METRIC_COSINE,
        c.INDEX_TYPE_HNSW,
        c.TEXT_LANGUAGE_ENGLISH,
    )
    assert col.sparse_enabled is backend.bm25
    assert dict(col.index_params) == {"M": 16, "efConstruction": 200}
    expect_error(
        lambda: backend.stub.CreateCollection(
            pb.CreateCollectionRequest(name=kb.name, dimension=DIM), timeout=TIMEOUT
        ),
        grpc.StatusCode.ALREADY_EXISTS,
        "COLLECTION_EXISTS",
    )
    other = KB(
        backend,
        metric=c.METRIC_L2,
        index_type=c.INDEX_TYPE_IVF_FLAT,
        index_params=_struct({"nlist": 4}),
    )
    got = backend.stub.GetCollection(
        pb.GetCollectionRequest(name=other.name), timeout=TIMEOUT
    ).collection
    assert (got.metric, got.index_type, dict(got.index_params), got.chunk_count) == (
        c.METRIC_L2,
        c.INDEX_TYPE_IVF_FLAT,
        {"nlist": 4},
        0,
    )
    # Paged listing reaches both.
    seen: list[str] = []
    token = ""
    while True:
        resp = backend.stub.ListCollections(
            pb.ListCollectionsRequest(page_size=1, page_token=token), timeout=TIMEOUT
        )
        assert len(resp.collections) <= 1
        seen += [x.name for x in resp.collections]
        token = resp.next_page_token
        if not token:
            break
    assert {kb.name, other.name} <= set(seen)
    assert seen == sorted(seen)
    kb.drop()
    other.drop()
    expect_error(
        lambda: backend.stub.GetCollection(pb.GetCollectionRequest(name=kb.name), timeout=TIMEOUT),
        grpc.StatusCode.NOT_FOUND,
        "COLLECTION_NOT_FOUND",
    )
    expect_error(kb.drop, grpc.StatusCode.NOT_FOUND, "COLLECTION_NOT_FOUND")


@pytest.mark.parametrize(
    ("metric", "index", "params"),
    [
        (c.METRIC_COSINE, c.INDEX_TYPE_FLAT, {}),
        (c.METRIC_L2, c.INDEX_TYPE_HNSW, {"M": 8, "efConstruction": 64}),
        (c.METRIC_IP, c.INDEX_TYPE_AUTOINDEX, {}),
    ],
)
def test_metrics_and_index_types_find_the_nearest(
    backend: Backend, metric: int, index: int, params: dict[str, int]
) -> None:
    kb = KB(backend, metric=metric, index_type=index, index_params=_struct(params))
    try:
        chunks = [kb.chunk("d", i, f"text {i}") for i in range(20)]
        kb.upsert("d", "v1", chunks)
        target = kb.vectors["d:7"]
        res = kb.search(query_vector=target, top_k=3).results
        assert res[0].chunk.id == "d:7"
        assert [r.dense_rank for r in res] == [1, 2, 3]
        assert res[0].score >= res[1].score >= res[2].score
        if metric == c.METRIC_L2:
            assert res[0].score == pytest.approx(0.0, abs=1e-4)  # negated distance
    finally:
        kb.drop()


# -- writes ---------------------------------------------------------------------


def test_replace_leaves_exactly_the_new_version_and_reads_see_it(kb: KB) -> None:
    first = kb.upsert("doc", "v1", [kb.chunk("doc", i, f"old text {i}") for i in range(5)])
    assert (first.upserted_count, first.deleted_count) == (5, 0)
    new = [
        kb.chunk(
            "doc",
            i,
            f"new text {i}",
            title="T",
            heading_path=["A", "B"],
            start_offset=i * 10,
            end_offset=i * 10 + 8,
            token_count=3,
            source="s.md",
            language="en",
            media_type="text/markdown",
            metadata=_struct({"team": "blue", "year": 2024}),
        )
        for i in range(3)
    ]
    second = kb.upsert("doc", "v2", new)
    assert (second.upserted_count, second.deleted_count) == (3, 2)
    # Read-your-writes: the very next calls see exactly the new chunks.
    stored = kb.chunks("doc")
    assert [(x.id, x.document_version, x.text) for x in stored] == [
        (f"doc:{i}", "v2", f"new text {i}") for i in range(3)
    ]
    first_chunk = stored[0]
    assert (
        first_chunk.title,
        list(first_chunk.heading_path),
        first_chunk.start_offset,
        first_chunk.end_offset,
        first_chunk.token_count,
        first_chunk.source,
        first_chunk.language,
        first_chunk.media_type,
    ) == ("T", ["A", "B"], 0, 8, 3, "s.md", "en", "text/markdown")
    assert dict(first_chunk.metadata) == {"team": "blue", "year": 2024}
    hits = kb.search(query_vector=kb.vectors["doc:2"], top_k=10).results
    assert hits[0].chunk.id == "doc:2" and hits[0].chunk.text == "new text 2"
    assert sorted(h.chunk.id for h in hits) == ["doc:0", "doc:1", "doc:2"]
    # Replacing with the same version and fewer chunks drops the stale indexes.
    third = kb.upsert("doc", "v2", [kb.chunk("doc", 0, "only")])
    assert third.deleted_count == 2
    assert [x.id for x in kb.chunks("doc")] == ["doc:0"]
    assert len(kb.search(query_vector=kb.vectors["doc:0"], top_k=10).results) == 1


def test_append_batches_resume_and_version_change(kb: KB) -> None:
    append = pb.UPSERT_MODE_APPEND_BATCH
    kb.upsert("doc", "v1", [kb.chunk("doc", i, f"a{i}") for i in (0, 1)], append)
    kb.upsert("doc", "v1", [kb.chunk("doc", i, f"a{i}") for i in (2, 3, 4)], append)
    kb.upsert("other", "v1", [kb.chunk("other", 0, "x")])
    # The worker's resume question: which indexes of v1 are stored already?
    light = kb.chunks("doc", "v1", omit_text=True, page_size=2)
    assert [x.chunk_index for x in light] == [0, 1, 2, 3, 4]
    assert all(x.text == "" for x in light)
    assert kb.chunks("doc", "v0") == []
    # A batch of a new version removes the old version's chunks.
    resp = kb.upsert("doc", "v2", [kb.chunk("doc", 0, "b0")], append)
    assert resp.deleted_count == 4  # doc:1..4 of v1; doc:0 was overwritten
    assert [(x.id, x.document_version) for x in kb.chunks("doc")] == [("doc:0", "v2")]
    assert [x.id for x in kb.chunks("other")] == ["other:0"]


def test_list_documents_delete_document_and_counts(kb: KB) -> None:
    for d, n in (("a", 3), ("b", 1), ("c", 2)):
        kb.upsert(d, f"{d}-v", [kb.chunk(d, i, f"{d} {i}") for i in range(n)])
    first = kb.b.stub.ListDocuments(
        pb.ListDocumentsRequest(collection=kb.name, page_size=2), timeout=TIMEOUT
    )
    assert [(x.document_id, x.chunk_count, x.document_version) for x in first.documents] == [
        ("a", 3, "a-v"),
        ("b", 1, "b-v"),
    ]
    assert first.total_size == 3 and first.next_page_token
    rest = kb.b.stub.ListDocuments(
        pb.ListDocumentsRequest(collection=kb.name, page_size=2, page_token=first.next_page_token),
        timeout=TIMEOUT,
    )
    assert [x.document_id for x in rest.documents] == ["c"] and not rest.next_page_token
    deleted = kb.b.stub.DeleteDocumentChunks(
        pb.DeleteDocumentChunksRequest(collection=kb.name, document_id="a"), timeout=TIMEOUT
    )
    assert deleted.deleted_count == 3
    assert kb.snapshot()[0] == 3
    assert (
        kb.search(
            query_vector=kb.vectors["a:0"],
            top_k=10,
            filters=[cond("document_id", c.FILTER_OPERATOR_EQ, "a")],
        ).results
        == []
    )
    again = kb.b.stub.DeleteDocumentChunks(
        pb.DeleteDocumentChunksRequest(collection=kb.name, document_id="a"), timeout=TIMEOUT
    )
    assert again.deleted_count == 0


# -- search -----------------------------------------------------------------------


@pytest.fixture
def corpus(kb: KB) -> KB:
    texts = {
        "milvus": [
            "Milvus stores vectors for similarity search.",
            "Collections hold the chunks of a knowledge base.",
        ],
        "redis": [
            "Redis is an in-memory key value store.",
            "Celery uses Redis as its message broker.",
        ],
        "cats": ["Cats sleep for most of the day.", "A kitten drinks milk."],
    }
    meta = {
        "milvus": {"team": "db", "year": 2023, "public": True},
        "redis": {"team": "db", "year": 2021, "public": False},
        "cats": {"team": "pets", "year": 2024, "public": True},
    }
    for doc, chunks in texts.items():
        kb.upsert(
            doc,
            "v1",
            [
                kb.chunk(doc, i, t, source=f"{doc}.md", language="en", metadata=_struct(meta[doc]))
                for i, t in enumerate(chunks)
            ],
        )
    return kb


def _ids(resp: pb.SearchChunksResponse) -> list[str]:
    return [r.chunk.id for r in resp.results]


def test_dense_search_with_filters(corpus: KB) -> None:
    q = corpus.vectors["redis:1"]
    everything = corpus.search(query_vector=q, top_k=10)
    assert everything.mode == c.SEARCH_MODE_DENSE
    assert _ids(everything)[0] == "redis:1" and len(everything.results) == 6
    eq = c.FILTER_OPERATOR_EQ
    cases: list[tuple[list[c.FilterCondition], set[str]]] = [
        ([cond("source", eq, "cats.md")], {"cats:0", "cats:1"}),
        (
            [
                cond("document_id", c.FILTER_OPERATOR_IN, ["milvus", "cats"]),
                cond("chunk_index", c.FILTER_OPERATOR_GE, 1),
            ],
            {"milvus:1", "cats:1"},
        ),
        (
            [
                cond("chunk_index", c.FILTER_OPERATOR_LT, 1),
                cond("document_id", c.FILTER_OPERATOR_NE, "redis"),
            ],
            {"milvus:0", "cats:0"},
        ),
        ([cond("metadata.team", eq, "db")], {"milvus:0", "milvus:1", "redis:0", "redis:1"}),
        (
            [cond("metadata.year", c.FILTER_OPERATOR_GT, 2022), cond("metadata.public", eq, True)],
            {"milvus:0", "milvus:1", "cats:0", "cats:1"},
        ),
        ([cond("metadata.team", c.FILTER_OPERATOR_IN, ["pets", "none"])], {"cats:0", "cats:1"}),
    ]
    for filters, want in cases:
        assert set(_ids(corpus.search(query_vector=q, top_k=10, filters=filters))) == want
    top2 = corpus.search(query_vector=q, top_k=2)
    assert _ids(top2) == _ids(everything)[:2]
    cut = everything.results[2].score
    above = corpus.search(query_vector=q, top_k=10, min_score=cut)
    assert _ids(above) == _ids(everything)[:3]


def test_injection_attempts_match_nothing(corpus: KB) -> None:
    q = corpus.vectors["cats:0"]
    for field in ("document_id", "source", "metadata.team"):
        for hostile in (
            'x" or id != "',
            "x' or id != '",
            'x\\" or chunk_index >= 0 or \\"',
            '") or (chunk_index >= 0',
        ):
            resp = corpus.search(
                query_vector=q, top_k=10, filters=[cond(field, c.FILTER_OPERATOR_EQ, hostile)]
            )
            assert resp.results == [], (field, hostile)
    # A document id full of quote characters is stored, found and deleted exactly.
    odd = "we\"ird\\ 'id' or id != \""
    corpus.upsert(odd, "v1", [corpus.chunk(odd, 0, "odd one")])
    hits = corpus.search(
        query_vector=q, top_k=10, filters=[cond("document_id", c.FILTER_OPERATOR_EQ, odd)]
    )
    assert _ids(hits) == [f"{odd}:0"]
    deleted = corpus.b.stub.DeleteDocumentChunks(
        pb.DeleteDocumentChunksRequest(collection=corpus.name, document_id=odd), timeout=TIMEOUT
    )
    assert deleted.deleted_count == 1
    assert corpus.snapshot()[0] == 6


def test_sparse_and_hybrid(corpus: KB) -> None:
    b = corpus.b
    q = corpus.vectors["cats:1"]
    if not b.bm25:
        for mode in (c.SEARCH_MODE_SPARSE, c.SEARCH_MODE_HYBRID):
            err = expect_error(
                lambda m=mode: corpus.search(query_vector=q, query_text="kitten", mode=m),
                grpc.StatusCode.FAILED_PRECONDITION,
                "SPARSE_UNSUPPORTED",
            )
            assert "BM25" in (err.details() or "")
        # Unspecified mode with text and vector falls back to dense on this server.
        assert corpus.search(query_vector=q, query_text="kitten").mode == c.SEARCH_MODE_DENSE
        return
    sparse = corpus.search(query_text="Which broker does Celery use?", top_k=3)
    assert sparse.mode == c.SEARCH_MODE_SPARSE
    assert _ids(sparse)[0] == "redis:1"
    assert sparse.results[0].score > 0 and sparse.results[0].sparse_rank == 1
    assert all(r.dense_rank == 0 for r in sparse.results)
    filtered = corpus.search(
        query_text="Redis store broker",
        top_k=5,
        mode=c.SEARCH_MODE_SPARSE,
        filters=[cond("chunk_index", c.FILTER_OPERATOR_EQ, 0)],
    )
    assert _ids(filtered) == ["redis:0"]
    # Hybrid: the dense vector points at cats:1, the text at redis:1; both fused.
    for fusion in (
        c.Fusion(),
        c.Fusion(method=c.FUSION_METHOD_RRF, rrf_k=10),
        c.Fusion(method=c.FUSION_METHOD_WEIGHTED, dense_weight=1, sparse_weight=1),
    ):
        hybrid = corpus.search(
            query_vector=q, query_text="Which broker does Celery use?", top_k=6, fusion=fusion
        )
        assert hybrid.mode == c.SEARCH_MODE_HYBRID
        top2 = set(_ids(hybrid)[:2])
        assert top2 == {"cats:1", "redis:1"}, _ids(hybrid)
        by_id = {r.chunk.id: r for r in hybrid.results}
        assert by_id["cats:1"].dense_rank == 1 and by_id["redis:1"].sparse_rank == 1
        scores = [r.score for r in hybrid.results]
        assert scores == sorted(scores, reverse=True)
    dense_heavy = corpus.search(
        query_vector=q,
        query_text="Which broker does Celery use?",
        fusion=c.Fusion(method=c.FUSION_METHOD_WEIGHTED, dense_weight=10, sparse_weight=1),
    )
    assert _ids(dense_heavy)[0] == "cats:1"
    sparse_heavy = corpus.search(
        query_vector=q,
        query_text="Which broker does Celery use?",
        fusion=c.Fusion(method=c.FUSION_METHOD_WEIGHTED, dense_weight=1, sparse_weight=10),
    )
    assert _ids(sparse_heavy)[0] == "redis:1"


def test_chinese_collection(backend: Backend) -> None:
    kb = KB(backend, language=c.TEXT_LANGUAGE_CHINESE)
    try:
        assert kb.collection.language == c.TEXT_LANGUAGE_CHINESE
        texts = [
            "北京是中华人民共和国的首都。",
            "上海是中国最大的城市和经济中心。",
            "熊猫主要生活在四川的山区。",
        ]
        for i, t in enumerate(texts):
            kb.upsert(f"zh{i}", "v1", [kb.chunk(f"zh{i}", 0, t)])
        if backend.bm25:
            res = kb.search(query_text="熊猫生活在哪里？", top_k=2)
            assert _ids(res)[0] == "zh2:0"
            res = kb.search(query_text="中国的经济中心", top_k=1)
            assert _ids(res) == ["zh1:0"]
        else:
            assert not kb.collection.sparse_enabled
    finally:
        kb.drop()


# -- bad input: precise status, reason, and no change to the data -------------------


def test_bad_inputs_are_rejected_without_effect(corpus: KB) -> None:
    stub, name = corpus.b.stub, corpus.name
    before = corpus.snapshot()
    q = corpus.vectors["cats:0"]
    bad = grpc.StatusCode.INVALID_ARGUMENT
    good_chunk = corpus.chunk("milvus", 0, "replacement that must not land")
    cases: list[tuple[Callable[[], Any], grpc.StatusCode, str]] = [
        (
            lambda: corpus.upsert(
                "milvus", "v9", [corpus.chunk("milvus", 0, "x", vector=[0.1] * 3)]
            ),
            bad,
            "DIMENSION_MISMATCH",
        ),
        (
            lambda: corpus.upsert(
                "milvus", "v9", [good_chunk, corpus.chunk("milvus", 1, "x", vector=[0.1] * 9)]
            ),
            bad,
            "DIMENSION_MISMATCH",
        ),
        (lambda: corpus.upsert("milvus", "v9", []), bad, "EMPTY_UPSERT"),
        (
            lambda: corpus.upsert(
                "milvus", "v9", [good_chunk, corpus.chunk("milvus", 1, "é" * 40_000)]
            ),
            bad,
            "FIELD_TOO_LONG",
        ),
        (
            lambda: corpus.upsert("milvus", "v9", [corpus.chunk("redis", 0, "x")]),
            bad,
            "DOCUMENT_ID_MISMATCH",
        ),
        (lambda: corpus.upsert("", "v9", [good_chunk]), bad, "INVALID_DOCUMENT_ID"),
        (
            lambda: stub.UpsertChunks(
                pb.UpsertChunksRequest(
                    collection="kb_missing_xyz",
                    document_id="milvus",
                    document_version="v9",
                    chunks=[good_chunk],
                ),
                timeout=TIMEOUT,
            ),
            grpc.StatusCode.NOT_FOUND,
            "COLLECTION_NOT_FOUND",
        ),
        (
            lambda: stub.UpsertChunks(
                pb.UpsertChunksRequest(
                    collection="kb-bad name", document_id="milvus", chunks=[good_chunk]
                ),
                timeout=TIMEOUT,
            ),
            bad,
            "INVALID_COLLECTION_NAME",
        ),
        (lambda: corpus.search(query_vector=[0.1] * 3), bad, "DIMENSION_MISMATCH"),
        (
            lambda: stub.SearchChunks(
                pb.SearchChunksRequest(collection="kb_missing_xyz", query_vector=q), timeout=TIMEOUT
            ),
            grpc.StatusCode.NOT_FOUND,
            "COLLECTION_NOT_FOUND",
        ),
        (lambda: corpus.search(query_vector=q, top_k=-1), bad, "TOP_K_OUT_OF_RANGE"),
        (lambda: corpus.search(query_vector=q, top_k=101), bad, "TOP_K_OUT_OF_RANGE"),
        (corpus.search, bad, "EMPTY_QUERY"),
        (
            lambda: corpus.search(query_text="x", mode=c.SEARCH_MODE_DENSE),
            bad,
            "MISSING_QUERY_VECTOR",
        ),
        (
            lambda: corpus.search(
                query_vector=q, filters=[cond("text", c.FILTER_OPERATOR_EQ, "x")]
            ),
            bad,
            "UNKNOWN_FILTER_FIELD",
        ),
        (
            lambda: corpus.search(
                query_vector=q, filters=[cond("chunk_index", c.FILTER_OPERATOR_EQ, "one")]
            ),
            bad,
            "INVALID_FILTER_VALUE",
        ),
        (
            lambda: corpus.search(
                query_vector=q, filters=[cond("source", c.FILTER_OPERATOR_IN, "not-a-list")]
            ),
            bad,
            "INVALID_FILTER_VALUE",
        ),
        (
            lambda: corpus.search(
                query_vector=q, filters=[c.FilterCondition(field="source", value=_value("x"))]
            ),
            bad,
            "INVALID_ENUM",
        ),
        (
            lambda: corpus.search(
                query_vector=q, filters=[cond('metadata.a"]) or (id', c.FILTER_OPERATOR_EQ, "x")]
            ),
            bad,
            "UNKNOWN_FILTER_FIELD",
        ),
        (
            lambda: stub.CreateCollection(
                pb.CreateCollectionRequest(name="kb_dim0", dimension=0), timeout=TIMEOUT
            ),
            bad,
            "INVALID_DIMENSION",
        ),
        (
            lambda: stub.CreateCollection(
                pb.CreateCollectionRequest(
                    name="kb_badidx",
                    dimension=4,
                    index_type=c.INDEX_TYPE_FLAT,
                    index_params=_struct({"M": 4}),
                ),
                timeout=TIMEOUT,
            ),
            bad,
            "INVALID_INDEX_PARAMS",
        ),
        (
            lambda: stub.ListChunks(
                pb.ListChunksRequest(collection=name, document_id="milvus", page_token="garbage"),
                timeout=TIMEOUT,
            ),
            bad,
            "INVALID_PAGE_TOKEN",
        ),
        (
            lambda: stub.ListDocuments(
                pb.ListDocumentsRequest(collection="kb_missing_xyz"), timeout=TIMEOUT
            ),
            grpc.StatusCode.NOT_FOUND,
            "COLLECTION_NOT_FOUND",
        ),
    ]
    for call, code, reason in cases:
        expect_error(call, code, reason)
    assert corpus.snapshot() == before
    names = [
        x.name
        for x in stub.ListCollections(
            pb.ListCollectionsRequest(page_size=1000), timeout=TIMEOUT
        ).collections
    ]
    assert "kb_dim0" not in names and "kb_badidx" not in names


# -- Milvus down and back -------------------------------------------------------------


def _milvus_lite_server(data_dir: Path, port: int, log_dir: Path) -> ManagedProcess:
    # milvus-lite's own server, with ragmesh's fixes to Lite installed first
    exe = [sys.executable, "-m", "services.retrieval.lite_server"]
    argv = [*exe, "server", "--data-dir", str(data_dir), "--host", "127.0.0.1", "--port", str(port)]
    proc = ManagedProcess("milvus-lite", argv, log_dir=log_dir, stop_signal=signal.SIGINT)
    proc.start()
    proc.wait_until(lambda: port_open("127.0.0.1", port), 60, "Milvus Lite port")
    return proc


def _wait_health(addr: str, want: str, timeout: float) -> float:
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if health_status(addr, SERVICE) == want:
            return time.monotonic() - start
        time.sleep(0.1)
    raise AssertionError(f"health never became {want} within {timeout} s")


def test_milvus_down_fails_fast_then_recovers(tmp_path: Path, log_dir: Path) -> None:
    """Milvus Lite as a separate server process, killed and restarted under the service."""
    port = free_port()
    milvus = _milvus_lite_server(tmp_path / "lite", port, log_dir)
    service = None
    try:
        service, addr = start_service(
            "retrieval",
            env={
                "RAGMESH_RETRIEVAL_MILVUS_URI": f"http://127.0.0.1:{port}",
                "RAGMESH_READINESS_INTERVAL_S": "0.5",
                "RAGMESH_LOG_FORMAT": "text",
            },
            log_dir=log_dir,
            timeout=120,
        )
        with grpc.insecure_channel(addr) as channel:
            backend = Backend(
                "lite-server", addr, retrieval_pb2_grpc.RetrievalServiceStub(channel), bm25=True
            )
            kb = KB(backend)
            kb.upsert("d", "v1", [kb.chunk("d", i, f"t{i}") for i in range(3)])
            q = kb.vectors["d:1"]
            assert _ids(kb.search(query_vector=q, top_k=1)) == ["d:1"]

            milvus.kill()
            # A call with a 3 s deadline gets UNAVAILABLE, not DEADLINE_EXCEEDED, in time.
            start = time.monotonic()
            with pytest.raises(grpc.RpcError) as err:
                backend.stub.SearchChunks(
                    pb.SearchChunksRequest(collection=kb.name, query_vector=q), timeout=3.0
                )
            took = time.monotonic() - start
            assert err.value.code() == grpc.StatusCode.UNAVAILABLE, err.value.details()
            info = error_info_of(err.value)
            assert info is not None and info.reason == "MILVUS_UNAVAILABLE"
            assert took < 3.0
            _wait_health(addr, "NOT_SERVING", 30)
            # Once the service knows Milvus is down, calls fail within about a second.
            start = time.monotonic()
            with pytest.raises(grpc.RpcError) as err:
                backend.stub.SearchChunks(
                    pb.SearchChunksRequest(collection=kb.name, query_vector=q), timeout=20.0
                )
            assert err.value.code() == grpc.StatusCode.UNAVAILABLE
            assert time.monotonic() - start < 3.0
            assert service.alive()

            milvus = _milvus_lite_server(tmp_path / "lite", port, log_dir)
            _wait_health(addr, "SERVING", 60)
            assert _ids(kb.search(query_vector=q, top_k=1)) == ["d:1"]
            kb.upsert("d", "v2", [kb.chunk("d", 0, "after the restart")])
            assert [x.text for x in kb.chunks("d")] == ["after the restart"]
            kb.drop()
    finally:
        if service is not None:
            service.stop()
        milvus.stop()


def test_service_starts_while_milvus_is_down(tmp_path: Path, log_dir: Path) -> None:
    """No crash loop: the service runs NOT_SERVING until Milvus appears."""
    port = free_port()
    grpc_port = free_port()
    addr = f"127.0.0.1:{grpc_port}"
    service = service_process(
        "retrieval",
        grpc_port,
        env={
            "RAGMESH_RETRIEVAL_MILVUS_URI": f"http://127.0.0.1:{port}",
            "RAGMESH_READINESS_INTERVAL_S": "0.5",
            "RAGMESH_LOG_FORMAT": "text",
            "RAGMESH_RETRIEVAL_CONNECT_TIMEOUT_S": "1",
        },
        log_dir=log_dir,
        metrics_port=free_port(),
    ).start()
    milvus = None
    try:
        service.wait_until(lambda: health_status(addr) == "NOT_SERVING", 60, "NOT_SERVING")
        with grpc.insecure_channel(addr) as channel:
            stub = retrieval_pb2_grpc.RetrievalServiceStub(channel)
            with pytest.raises(grpc.RpcError) as err:
                stub.GetCapabilities(pb.GetCapabilitiesRequest(), timeout=5)
            assert err.value.code() == grpc.StatusCode.UNAVAILABLE
            milvus = _milvus_lite_server(tmp_path / "lite", port, log_dir)
            _wait_health(addr, "SERVING", 60)
            caps = stub.GetCapabilities(pb.GetCapabilitiesRequest(), timeout=10)
            assert caps.backend == "milvus-lite"
        assert service.alive()
    finally:
        service.stop()
        if milvus is not None:
            milvus.stop()


def test_every_read_loads_a_released_collection(tmp_path: Path, log_dir: Path) -> None:
    """After a Milvus restart a collection is released; every RPC that reads it
    (lists, counts, search) loads it again instead of failing."""
    from pymilvus import MilvusClient

    port = free_port()
    milvus = _milvus_lite_server(tmp_path / "lite", port, log_dir)
    service = None
    try:
        service, addr = start_service(
            "retrieval",
            env={"RAGMESH_RETRIEVAL_MILVUS_URI": f"http://127.0.0.1:{port}"},
            log_dir=log_dir,
            timeout=120,
        )
        with grpc.insecure_channel(addr) as channel:
            backend = Backend(
                "lite-server", addr, retrieval_pb2_grpc.RetrievalServiceStub(channel), bm25=True
            )
            kb = KB(backend)
            kb.upsert("d", "v1", [kb.chunk("d", i, f"t{i}") for i in range(3)])
            reads: list[Callable[[], Any]] = [
                lambda: backend.stub.ListDocuments(
                    pb.ListDocumentsRequest(collection=kb.name), timeout=30
                ),
                lambda: kb.chunks("d"),
                lambda: backend.stub.GetCollection(
                    pb.GetCollectionRequest(name=kb.name), timeout=30
                ),
                lambda: kb.search(query_vector=kb.vectors["d:1"], top_k=1),
            ]
            for read in reads:
                client = MilvusClient(uri=f"http://127.0.0.1:{port}")
                client.release_collection(kb.name)
                client.close()
                read()  # would fail with "call load() before search/get/query"
            assert [c.chunk_index for c in kb.chunks("d")] == [0, 1, 2]
            kb.drop()
    finally:
        if service is not None:
            service.stop()
        milvus.stop()
