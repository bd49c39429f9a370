"""Input validation of the retrieval logic (no Milvus needed)."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from services.common.api import decode_page_token, encode_page_token, page_size
from services.common.errors import InvalidArgument
from services.retrieval.config import RetrievalSettings
from services.retrieval.schema import ChunkRecord, CollectionInfo, CollectionSpec
from services.retrieval.validation import (
    validate_chunks,
    validate_collection_name,
    validate_document_id,
)


@pytest.mark.parametrize("name", ["kb_acme_docs", "_x", "A1", "k" * 255])
def test_good_collection_names(name: str) -> None:
    validate_collection_name(name)


@pytest.mark.parametrize(
    "name", ["", "1kb", "kb-acme", "kb acme", "kb;drop", "kb\n", "k" * 256, "kb.x", "ключ"]
)
def test_bad_collection_names(name: str) -> None:
    with pytest.raises(InvalidArgument) as err:
        validate_collection_name(name)
    assert err.value.reason == "INVALID_COLLECTION_NAME"


@pytest.mark.parametrize("doc", ["", "d\x00", "a\nb", "é" * 129])
def test_bad_document_ids(doc: str) -> None:
    with pytest.raises(InvalidArgument):
        validate_document_id(doc)


def test_page_tokens_round_trip_and_reject_forgeries() -> None:
    assert decode_page_token(encode_page_token("doc-7", "docs|a"), "docs|a", str) == "doc-7"
    assert decode_page_token(encode_page_token(41, "chunks|a"), "chunks|a", int) == 41
    assert decode_page_token("", "docs|a", str) is None
    forged = [
        "nope",
        encode_page_token(3, "docs|a"),
        encode_page_token(True, "docs|a"),  # type: ignore[arg-type]
        "e30=",
        # Another list's token: it would silently skip that list's keys before "doc-7".
        encode_page_token("doc-7", "docs|b"),
    ]
    for bad in forged:
        with pytest.raises(InvalidArgument) as err:
            decode_page_token(bad, "docs|a", str)
        assert err.value.reason == "INVALID_PAGE_TOKEN"


def test_page_size() -> None:
    assert page_size(0, 100, 1000) == 100
    assert page_size(5, 100, 1000) == 5
    assert page_size(10**6, 100, 1000) == 1000
    with pytest.raises(InvalidArgument):
        page_size(-1, 100, 1000)


def test_settings_reject_a_bad_uri() -> None:
    with pytest.raises(ValidationError):
        RetrievalSettings(milvus_uri="ftp://x")
    assert RetrievalSettings(milvus_uri="/tmp/x/a.db").is_lite_file
    assert not RetrievalSettings(milvus_uri="http://127.0.0.1:19530").is_lite_file


INFO = CollectionInfo(spec=CollectionSpec(name="kb", dimension=4), sparse_enabled=True)


def _chunk(i: int = 0, **kw: object) -> ChunkRecord:
    base: dict[str, object] = {
        "document_id": "d",
        "chunk_index": i,
        "text": "hello",
        "vector": [0.1, 0.2, 0.3, 0.4],
    }
    base.update(kw)
    return ChunkRecord(**base)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("chunks", "reason"),
    [
        ([], "EMPTY_UPSERT"),
        ([_chunk(vector=[0.1, 0.2])], "DIMENSION_MISMATCH"),
        ([_chunk(vector=[])], "DIMENSION_MISMATCH"),
        ([_chunk(vector=[0.1, float("nan"), 0, 0])], "INVALID_VECTOR"),
        ([_chunk(document_id="other")], "DOCUMENT_ID_MISMATCH"),
        ([_chunk(0), _chunk(0)], "DUPLICATE_CHUNK_INDEX"),
        ([_chunk(-1)], "INVALID_CHUNK_INDEX"),
        ([_chunk(text="  ")], "EMPTY_TEXT"),
        ([_chunk(text="x" * 101)], "FIELD_TOO_LONG"),
        ([_chunk(title="t" * 1025)], "FIELD_TOO_LONG"),
        ([_chunk(language="l" * 33)], "FIELD_TOO_LONG"),
        ([_chunk(metadata={"k": "v" * 300})], "FIELD_TOO_LONG"),
        ([_chunk(start_offset=5, end_offset=2)], "INVALID_OFFSETS"),
        ([_chunk(i) for i in range(4)], "TOO_MANY_CHUNKS"),
    ],
)
def test_bad_chunks(chunks: list[ChunkRecord], reason: str) -> None:
    settings = RetrievalSettings(
        milvus_uri="/tmp/never-opened/x.db",
        max_text_bytes=100,
        max_metadata_bytes=256,
        max_chunks_per_upsert=3,
    )
    with pytest.raises(InvalidArgument) as err:
        validate_chunks(INFO, "d", "v1", chunks, settings)
    assert err.value.reason == reason


def test_text_limit_counts_utf8_bytes() -> None:
    settings = RetrievalSettings(milvus_uri="/tmp/never-opened/x.db", max_text_bytes=9)
    validate_chunks(INFO, "d", "v", [_chunk(text="中文字")], settings)  # 9 bytes
    with pytest.raises(InvalidArgument, match="10 bytes"):
        validate_chunks(INFO, "d", "v", [_chunk(text="中文字a")], settings)
