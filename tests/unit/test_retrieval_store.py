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


def test_a_collection_still_released_is_unavailable_not_internal() -> None:
    # Found by the chaos run: a read right after another call's load found the
    # collection still released, and the worker FAILED the job with INTERNAL.
    released = MilvusException(
        101, "Collection 'kb_x' is in state 'released'; call load() before search/get/query"
    )
    err = translate_error(released, "query")
    assert isinstance(err, Unavailable) and err.reason == "MILVUS_UNAVAILABLE"


class _ReleasedClient:
    """A MilvusClient whose collection is found released `times` times."""

    def __init__(self, times: int) -> None:
        self.times = times
        self.loads = 0

    def load_collection(self, name: str, timeout: float) -> None:
        self.loads += 1

    def query(self) -> list[dict[str, int]]:
        if self.times:
            self.times -= 1
            raise MilvusException(101, "Collection 'kb_x' is in state 'released'")
        return [{"n": 1}]


@pytest.mark.parametrize(("times", "loads"), [(1, 1), (3, 3)])
def test_a_read_loads_a_released_collection_until_it_answers(times: int, loads: int) -> None:
    store = MilvusStore.__new__(MilvusStore)
    client = _ReleasedClient(times)
    store._client = client  # type: ignore[assignment]
    store.capabilities = None
    rows = store._read("kb_x", "query", 5.0, lambda c: c.query())
    assert rows == [{"n": 1}] and client.loads == loads


def test_a_collection_that_stays_released_is_unavailable() -> None:
    store = MilvusStore.__new__(MilvusStore)
    client = _ReleasedClient(10)
    store._client = client  # type: ignore[assignment]
    store.capabilities = None
    with pytest.raises(Unavailable):
        store._read("kb_x", "query", 5.0, lambda c: c.query())
    assert client.loads == 3
