"""Writing a document that has no chunks yet skips the stale-chunk query on Milvus Lite
(services.retrieval.known_documents), and never at the cost of leaving stale chunks:
on Milvus Lite in process, through the retrieval logic, with every store query counted."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from services.common.errors import Unavailable
from services.retrieval.config import RetrievalSettings
from services.retrieval.known_documents import KnownDocuments
from services.retrieval.retriever import Retriever
from services.retrieval.schema import ChunkRecord, CollectionSpec, UpsertMode

DIM = 8


def test_the_known_set_is_a_superset_of_what_was_scanned_and_written() -> None:
    known = KnownDocuments()
    # Before the collection's scan is in, every document may have chunks...
    assert known.claim("c", "written-early") is True
    assert not known.loaded("c")
    # ...and a scan that ran alongside that write (and missed it) does not forget it.
    known.merge_scan("c", ["scanned"])
    assert known.loaded("c")
    assert known.claim("c", "scanned") is True
    assert known.claim("c", "written-early") is True
    assert known.claim("c", "new") is False  # not scanned, never written
    assert known.claim("c", "new") is True  # written now
    known.merge_scan("c", [])  # a late scan adds, never removes
    assert known.claim("c", "new") is True
    known.forget("c")  # dropped: a collection of that name starts over
    assert not known.loaded("c") and known.claim("c", "new") is True
    assert known.claim("other", "new") is True  # per collection


def _records(doc: str, count: int) -> list[ChunkRecord]:
    rng = random.Random(doc)
    return [
        ChunkRecord(
            document_id=doc,
            chunk_index=i,
            text=f"{doc} chunk {i}",
            start_offset=0,
            end_offset=10,
            vector=[rng.random() for _ in range(DIM)],
        )
        for i in range(count)
    ]


async def _write(r: Retriever, collection: str, doc: str, version: str, count: int) -> int:
    result = await r.upsert_chunks(
        collection=collection,
        document_id=doc,
        version=version,
        chunks=_records(doc, count),
        mode=UpsertMode.APPEND_BATCH,
        deadline=None,
    )
    return result.deleted


async def _scanned(r: Retriever, collection: str) -> None:
    for _ in range(200):
        if r.known_documents.loaded(collection):
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"{collection} never scanned")


async def _stored(r: Retriever, collection: str, doc: str) -> list[tuple[int, str]]:
    chunks, _ = await r.list_chunks(
        collection=collection,
        document_id=doc,
        version="",
        page_size=100,
        page_token="",
        omit_text=True,
        deadline=None,
    )
    return [(c.chunk_index, c.document_version) for c in chunks]


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "known.db"


@pytest.fixture
async def retriever(db: Path) -> AsyncIterator[Retriever]:
    r = Retriever(RetrievalSettings(milvus_uri=str(db)))
    await r.connect()
    yield r
    r.close()


def _count_stale_chunk_queries(r: Retriever) -> list[str]:
    seen: list[str] = []
    query = r.store.query

    def counted(name: str, expr: str, *rest: Any) -> Any:
        if "document_version !=" in expr:  # the upsert's query; ListChunks' are not
            seen.append(expr)
        return query(name, expr, *rest)

    r.store.query = counted  # type: ignore[method-assign,assignment]
    return seen


async def test_a_new_document_is_written_without_the_stale_chunk_query(
    retriever: Retriever,
) -> None:
    await retriever.create_collection(CollectionSpec("kb_known", DIM), None)
    queries = _count_stale_chunk_queries(retriever)
    # The collection's first write starts its scan and, not knowing yet, queries.
    assert await _write(retriever, "kb_known", "a", "1", 3) == 0
    assert len(queries) == 1
    await _scanned(retriever, "kb_known")
    assert await _write(retriever, "kb_known", "b", "1", 2) == 0
    assert len(queries) == 1  # b had no chunks: no query
    # A new version of a document that has chunks still finds and deletes the stale ones.
    assert await _write(retriever, "kb_known", "a", "2", 1) == 2
    assert await _write(retriever, "kb_known", "b", "2", 2) == 0  # same indexes: replaced
    assert len(queries) == 3
    assert await _stored(retriever, "kb_known", "a") == [(0, "2")]
    assert await _stored(retriever, "kb_known", "b") == [(0, "2"), (1, "2")]
    # A deleted document stays known (a superset): writing it again still queries.
    await retriever.delete_document_chunks("kb_known", "b", None)
    assert await _write(retriever, "kb_known", "b", "3", 1) == 0
    assert len(queries) == 4


async def test_after_a_restart_the_scan_knows_the_documents_already_stored(db: Path) -> None:
    first = Retriever(RetrievalSettings(milvus_uri=str(db)))
    await first.connect()
    await first.create_collection(CollectionSpec("kb_restart", DIM), None)
    await _write(first, "kb_restart", "doc", "1", 4)
    first.close()

    again = Retriever(RetrievalSettings(milvus_uri=str(db)))
    await again.connect()
    try:
        await _write(again, "kb_restart", "other", "1", 1)  # starts the scan
        await _scanned(again, "kb_restart")
        assert await _write(again, "kb_restart", "doc", "2", 1) == 3
        assert await _stored(again, "kb_restart", "doc") == [(0, "2")]
    finally:
        again.close()


async def test_a_dropped_collection_is_scanned_afresh(retriever: Retriever) -> None:
    await retriever.create_collection(CollectionSpec("kb_dropped", DIM), None)
    await _write(retriever, "kb_dropped", "a", "1", 1)
    await _scanned(retriever, "kb_dropped")
    await retriever.delete_collection("kb_dropped", None)
    assert not retriever.known_documents.loaded("kb_dropped")


async def test_a_failed_scan_leaves_writes_querying_and_is_not_retried_at_once(
    retriever: Retriever,
) -> None:
    # A scan that cannot finish (a collection too large for the call timeout): a fault
    # Lite cannot be made to show here on demand, so the scan call fails by hand.
    await retriever.create_collection(CollectionSpec("kb_unscanned", DIM), None)
    scans: list[str] = []

    def failing_scan(name: str, *rest: Any) -> Any:
        scans.append(name)
        raise Unavailable("Milvus did not answer within 30.00 s", reason="MILVUS_UNAVAILABLE")

    retriever.store.iter_query = failing_scan  # type: ignore[method-assign,assignment]
    queries = _count_stale_chunk_queries(retriever)
    await _write(retriever, "kb_unscanned", "a", "1", 2)
    for _ in range(50):
        if "kb_unscanned" not in retriever._document_scans:
            break
        await asyncio.sleep(0.02)
    assert scans == ["kb_unscanned"] and not retriever.known_documents.loaded("kb_unscanned")
    await _write(retriever, "kb_unscanned", "b", "1", 1)
    assert await _write(retriever, "kb_unscanned", "a", "2", 1) == 1  # stale chunk found
    assert len(queries) == 3  # every write queried
    assert scans == ["kb_unscanned"]  # and no second scan yet
