"""Pages and code identifiers in the retrieval logic, on Milvus Lite in process:
split forms, pages stored and returned, BM25 finding an identifier's definition,
and a collection made before these fields still read and written as before."""

from __future__ import annotations

import json
import random
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from pymilvus import DataType, Function, FunctionType

from services.retrieval.config import MILVUS_VARCHAR_MAX, RetrievalSettings
from services.retrieval.identifiers import expand_query, index_text, split_forms
from services.retrieval.retriever import Retriever
from services.retrieval.rows import row_from_record
from services.retrieval.schema import (
    F_BM25_TEXT,
    F_TEXT,
    VARCHAR_LIMITS,
    ChunkRecord,
    CollectionInfo,
    CollectionSpec,
    SearchMode,
    SearchQuery,
    UpsertMode,
    analyzer_params,
)
from services.retrieval.store import SPEC_PROPERTY, MilvusStore

DIM = 8


@pytest.mark.parametrize(
    ("text", "forms"),
    [
        ("What does asn1_decode_simple_der do?", ["asn1", "decode", "simple", "der"]),
        ("sqlite3_last_insert_rowid() returns", ["sqlite3", "last", "insert", "rowid"]),
        ("getElementById", ["get", "element", "by", "id"]),
        ("XMLHttpRequest.open", ["xml", "http", "request", "xmlhttprequest", "open"]),
        ("std::vector::push_back", ["std", "vector", "push", "back", "push_back"]),
        ("plain words, NASA, URLs, SQLite 3.19.0, e.g. this", []),
        ("中文文本没有标识符。", []),
    ],
)
def test_split_forms(text: str, forms: list[str]) -> None:
    assert list(split_forms(text)) == forms


def test_index_text_and_query_expansion() -> None:
    assert index_text("no code here") == "no code here"
    assert (
        index_text("call foo_bar twice: foo_bar") == "call foo_bar twice: foo_bar\nfoo bar foo bar"
    )
    assert expand_query("foo_bar and foo_bar?") == "foo_bar and foo_bar? foo bar"
    assert len(index_text("a_b " * 10_000, max_bytes=100)) <= len("a_b " * 10_000) + 101


def test_rows_fit_the_fields_the_collection_has() -> None:
    spec = CollectionSpec("kb", DIM)
    chunk = ChunkRecord("d", 0, "x_y " * 16_000, page_start=3, page_end=4, page_label="1–2")
    old = row_from_record(chunk, CollectionInfo(spec, sparse_enabled=True))
    assert "page_start" not in old and F_BM25_TEXT not in old
    new = row_from_record(chunk, CollectionInfo(spec, True, pages=True, bm25_input=F_BM25_TEXT))
    assert (new["page_start"], new["page_end"], new["page_label"]) == (3, 4, "1–2")
    assert len(new[F_BM25_TEXT].encode()) <= MILVUS_VARCHAR_MAX


# ------------------------------------------------------------------ Milvus Lite


@pytest.fixture(scope="module")
async def retriever(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Retriever]:
    db = Path(tmp_path_factory.mktemp("milvus")) / "documents.db"
    r = Retriever(RetrievalSettings(milvus_uri=str(db)))
    await r.connect()
    yield r
    r.close()


def _records(doc: str, texts: list[str], pages: bool = True) -> list[ChunkRecord]:
    rng = random.Random(doc)
    return [
        ChunkRecord(
            document_id=doc,
            chunk_index=i,
            text=t,
            start_offset=0,
            end_offset=len(t),
            page_start=i + 3 if pages else 0,
            page_end=i + 3 if pages else 0,
            page_label=str(i + 1) if pages else "",
            vector=[rng.random() for _ in range(DIM)],
        )
        for i, t in enumerate(texts)
    ]


MANUAL = [
    "Index: asn1 decode simple der, 22; asn1 encode simple der, 16; asn1 read value, 13",
    "int asn1_decode_simple_der (unsigned int etype, const unsigned char * der) "
    "Decodes a simple DER encoded type (e.g. a string, which is not constructed).",
    "int asn1_encode_simple_der (unsigned int etype) Creates the DER encoding of a simple type.",
    "The library reads ASN.1 definitions and decodes DER data into structures.",
]


async def _upsert(r: Retriever, name: str, records: list[ChunkRecord]) -> None:
    await r.upsert_chunks(
        collection=name,
        document_id=records[0].document_id,
        version="1",
        chunks=records,
        mode=UpsertMode.REPLACE,
        deadline=None,
    )


async def test_pages_round_trip_and_identifiers_find_the_definition(retriever: Retriever) -> None:
    info = await retriever.create_collection(CollectionSpec("kb_pages", DIM), None)
    assert info.pages and info.bm25_input == F_BM25_TEXT
    await _upsert(retriever, "kb_pages", _records("manual.pdf", MANUAL))
    query = SearchQuery(
        "kb_pages", text="What does asn1_decode_simple_der do?", mode=SearchMode.SPARSE, top_k=4
    )
    hits, _ = await retriever.search(query, None)
    assert hits[0].chunk.chunk_index == 1  # the entry, not the index
    assert (hits[0].chunk.page_start, hits[0].chunk.page_end, hits[0].chunk.page_label) == (
        4,
        4,
        "2",
    )
    listed, _ = await retriever.list_chunks(
        collection="kb_pages",
        document_id="manual.pdf",
        version="",
        page_size=10,
        page_token="",
        omit_text=True,
        deadline=None,
    )
    assert [c.page_label for c in listed] == ["1", "2", "3", "4"]
    described = await retriever.get_collection("kb_pages", None)
    assert described.pages and described.bm25_input == F_BM25_TEXT


async def test_a_collection_made_before_pages_reads_and_writes_as_before(
    retriever: Retriever,
) -> None:
    store = retriever.store
    assert isinstance(store, MilvusStore)
    client = store._require_client()
    name = "kb_old"
    spec = CollectionSpec(name, DIM)
    meta = json.dumps(
        {"schema": "ragmesh.retrieval/v1", "metric": "COSINE", "index_type": "FLAT",
         "index_params": {}, "language": "english", "sparse": True}
    )  # fmt: skip
    schema = client.create_schema(auto_id=False, enable_dynamic_field=False)
    schema.add_field("id", DataType.VARCHAR, is_primary=True, max_length=300)
    schema.add_field("document_id", DataType.VARCHAR, max_length=256)
    schema.add_field("chunk_index", DataType.INT64)
    schema.add_field("document_version", DataType.VARCHAR, max_length=128)
    schema.add_field(
        F_TEXT,
        DataType.VARCHAR,
        max_length=MILVUS_VARCHAR_MAX,
        enable_analyzer=True,
        analyzer_params=analyzer_params(spec.language),
    )
    for field in ("title", "heading_path", "source", "language", "media_type"):
        schema.add_field(field, DataType.VARCHAR, max_length=VARCHAR_LIMITS[field])
    for field in ("start_offset", "end_offset", "token_count"):
        schema.add_field(field, DataType.INT64)
    schema.add_field("metadata", DataType.JSON)
    schema.add_field("dense", DataType.FLOAT_VECTOR, dim=DIM)
    schema.add_field("sparse", DataType.SPARSE_FLOAT_VECTOR)
    schema.add_function(Function("text_bm25", FunctionType.BM25, [F_TEXT], ["sparse"]))
    index = client.prepare_index_params()
    index.add_index("dense", index_type="FLAT", metric_type="COSINE")
    index.add_index("sparse", index_type="SPARSE_INVERTED_INDEX", metric_type="BM25")
    client.create_collection(
        name, schema=schema, index_params=index, properties={SPEC_PROPERTY: meta}
    )

    info = await retriever.get_collection(name, None)
    assert not info.pages and info.bm25_input == F_TEXT
    await _upsert(retriever, name, _records("manual.pdf", MANUAL))  # pages dropped, no error
    query = SearchQuery(name, text="asn1_decode_simple_der", mode=SearchMode.SPARSE, top_k=4)
    hits, _ = await retriever.search(query, None)
    assert hits[0].chunk.chunk_index == 1
    assert hits[0].chunk.page_start == 0 and hits[0].chunk.page_label == ""
