"""BM25 on Milvus Lite scores with the collection's statistics, not each segment's
(services.retrieval.lite_bm25): on Milvus Lite in process, through the retrieval logic.
The same chunks written in one segment or in several (a flush after every write) get the
same scores and order, and those are BM25's over the whole collection."""

from __future__ import annotations

import logging
import math
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from services.retrieval import lite_bm25
from services.retrieval.config import RetrievalSettings
from services.retrieval.retriever import Retriever
from services.retrieval.schema import (
    ChunkRecord,
    CollectionSpec,
    SearchMode,
    SearchQuery,
    UpsertMode,
)

DIM = 4
# Several segments make a term's frequency differ between them: "ember" is common in the
# first three documents' segment and rare over the whole collection.
DOCUMENTS = {  # no English stop words (the analyzer drops them)
    "d1": "ember ember glow hearth",
    "d2": "ember lights dark room",
    "d3": "ember ash smoke",
    "d4": "harbor ships dawn ember lanterns",
    "d5": "harbor fog quiet water",
    "d6": "mountain trail winter",
    "d7": "mountain lake dawn",
    "d8": "city lights harbor cranes",
}
QUERY = "ember harbor dawn"


def _chunk(doc: str, document_id: str = "", index: int = 0) -> ChunkRecord:
    text = DOCUMENTS[doc]
    return ChunkRecord(
        document_id=document_id or doc,
        chunk_index=index,
        text=text,
        start_offset=0,
        end_offset=len(text),
        vector=[1.0, 0.0, 0.0, 0.0],
    )


async def _write(r: Retriever, collection: str, docs: list[str]) -> None:
    for doc in docs:
        await r.upsert_chunks(
            collection=collection,
            document_id=doc,
            version="1",
            chunks=[_chunk(doc)],
            mode=UpsertMode.APPEND_BATCH,
            deadline=None,
        )


async def _bm25(r: Retriever, collection: str) -> list[tuple[str, float]]:
    hits, mode = await r.search(
        SearchQuery(collection, text=QUERY, mode=SearchMode.SPARSE, top_k=8), None
    )
    assert mode is SearchMode.SPARSE
    return [(h.chunk.document_id, h.score) for h in hits]


@pytest.fixture
async def retriever(tmp_path: Path) -> AsyncIterator[Retriever]:
    # A flush inside every write: one segment a write call.
    r = Retriever(
        RetrievalSettings(milvus_uri=str(tmp_path / "bm25.db"), flush_after_upsert="always")
    )
    await r.connect()
    yield r
    r.close()


def _expected() -> list[tuple[str, float]]:
    """BM25 (k1 1.5, b 0.75, Lite's IDF) over all eight documents, by hand: the
    standard analyzer keeps these lower-case words as they are."""
    docs = {d: t.split() for d, t in DOCUMENTS.items()}
    n, avgdl = len(docs), sum(len(w) for w in docs.values()) / len(docs)
    scores = {}
    for doc, words in docs.items():
        score = 0.0
        for term in QUERY.split():
            tf = words.count(term)
            if tf:
                df = sum(term in w for w in docs.values())
                idf = math.log((n - df + 0.5) / (df + 0.5) + 1.0)
                score += idf * tf * 2.5 / (tf + 1.5 * (0.25 + 0.75 * len(words) / avgdl))
        if score:
            scores[doc] = score
    return sorted(scores.items(), key=lambda kv: -kv[1])


async def test_segments_do_not_change_bm25_scores(
    retriever: Retriever, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    assert lite_bm25.install()  # the pinned Lite has what the patch needs
    await retriever.create_collection(CollectionSpec("kb_one", DIM), None)
    await retriever.create_collection(CollectionSpec("kb_many", DIM), None)
    # kb_one: every chunk in one write; kb_many: a write and a segment each, the last
    # two written without a flush (growing rows, in memory) when the search runs
    await retriever.upsert_chunks(
        collection="kb_one",
        document_id="all",
        version="1",
        chunks=[_chunk(d, "all", i) for i, d in enumerate(DOCUMENTS)],
        mode=UpsertMode.APPEND_BATCH,
        deadline=None,
    )
    await _write(retriever, "kb_many", ["d1", "d2", "d3", "d4", "d5", "d6"])
    retriever.settings.flush_after_upsert = "never"  # the last two stay in memory
    await _write(retriever, "kb_many", ["d7", "d8"])

    many = await _bm25(retriever, "kb_many")
    expected = _expected()
    assert [d for d, _ in many] == [d for d, _ in expected]
    assert [round(s, 4) for _, s in many] == [round(s, 4) for _, s in expected]
    one, _ = await retriever.search(
        SearchQuery("kb_one", text=QUERY, mode=SearchMode.SPARSE, top_k=8), None
    )
    order = list(DOCUMENTS)
    assert [(order[h.chunk.chunk_index], round(h.score, 4)) for h in one] == [
        (d, round(s, 4)) for d, s in expected
    ]

    # Without the collection's statistics (Lite's own, per segment) the scores differ:
    # what this module is for. It falls back to them if it cannot gather its own.
    def broken(*_: object) -> None:
        raise AttributeError("Lite internals changed")

    monkeypatch.setattr(lite_bm25, "collection_stats", broken)
    with caplog.at_level(logging.ERROR, logger="ragmesh.retrieval"):
        per_segment = await _bm25(retriever, "kb_many")
        assert await _bm25(retriever, "kb_many") == per_segment
    # logged once, not on every search
    assert sum("statistics unavailable" in r.getMessage() for r in caplog.records) == 1
    assert sorted(d for d, _ in per_segment) == sorted(d for d, _ in expected)
    assert [round(s, 4) for _, s in per_segment] != [round(s, 4) for _, s in expected]
