"""Pure parts of the Milvus store: capability detection, error mapping, rows."""

from __future__ import annotations

import grpc
import pytest
from pymilvus.exceptions import MilvusException

from services.common.errors import Internal, NotFound, Unavailable
from services.retrieval.milvus_errors import translate_error
from services.retrieval.rows import dense_score, record_from_row, row_from_record
from services.retrieval.schema import ChunkRecord, Metric
from services.retrieval.store import BACKEND_LITE, BACKEND_SERVER, MilvusStore


@pytest.mark.parametrize(
    ("version", "backend", "bm25"),
    [
        ("milvus_lite-3.2.2", BACKEND_LITE, True),
        ("v2.3.5-lite", BACKEND_SERVER, False),  # the `milvus` package's server, not Lite
        ("v2.4.17", BACKEND_SERVER, False),
        ("v2.5.0", BACKEND_SERVER, True),
        ("2.6.3", BACKEND_SERVER, True),
        ("unknown", BACKEND_SERVER, False),
    ],
)
def test_capabilities_from_version(version: str, backend: str, bm25: bool) -> None:
    caps = MilvusStore._detect(version)
    assert (caps.backend, caps.sparse_supported, caps.hybrid_supported) == (backend, bm25, bm25)
    assert caps.server_version == version


def test_error_mapping() -> None:
    down = translate_error(MilvusException(grpc.StatusCode.UNAVAILABLE, "x"), "search")
    assert isinstance(down, Unavailable) and down.reason == "MILVUS_UNAVAILABLE"
    timeout = translate_error(MilvusException(message="[search] Retry timeout: 1.0s"), "search")
    assert isinstance(timeout, Unavailable)
    missing = translate_error(MilvusException(100, "collection not found[kb_x]"), "search")
    assert isinstance(missing, NotFound) and missing.reason == "COLLECTION_NOT_FOUND"
    other = translate_error(MilvusException(1100, "invalid parameter"), "search")
    assert isinstance(other, Internal) and other.reason == "MILVUS_ERROR"


def test_dense_scores_are_higher_is_better() -> None:
    assert dense_score(Metric.COSINE, 0.8) == 0.8
    assert dense_score(Metric.IP, 3.0) == 3.0
    assert dense_score(Metric.L2, 0.5) == -0.5


def test_rows_round_trip() -> None:
    chunk = ChunkRecord(
        document_id='d"1',
        chunk_index=3,
        text="t",
        document_version="v",
        title="T",
        heading_path=["A", 'B "q"'],
        start_offset=1,
        end_offset=4,
        token_count=2,
        source="s",
        language="zh",
        media_type="text/plain",
        metadata={"k": [1, "x"]},
        vector=[0.5, 0.25],
    )
    row = row_from_record(chunk)
    assert row["id"] == 'd"1:3'
    back = record_from_row({k: v for k, v in row.items() if k != "dense"})
    back.vector = chunk.vector
    assert back == chunk
