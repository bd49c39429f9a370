"""What the retrieval logic needs from a vector database (implemented by
services.retrieval.store.MilvusStore on Milvus Lite or a Milvus server)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any, Protocol

from services.retrieval.schema import (
    Capabilities,
    ChunkRecord,
    CollectionInfo,
    CollectionSpec,
    ScoredId,
)

QUERY_LIMIT = 16_384  # Milvus's cap on offset + limit of one query


class VectorStore(Protocol):
    """What the retrieval logic needs from a vector database.

    Every method takes `timeout` (seconds) as its last argument.
    """

    capabilities: Capabilities | None

    def connect(self, timeout: float) -> Capabilities: ...
    def ping(self, timeout: float) -> None: ...
    def close(self) -> None: ...
    def create_collection(self, spec: CollectionSpec, timeout: float) -> CollectionInfo: ...
    def describe_collection(self, name: str, timeout: float) -> CollectionInfo: ...
    def list_collections(self, timeout: float) -> list[str]: ...
    def drop_collection(self, name: str, timeout: float) -> None: ...
    def count(self, name: str, filter_expr: str, timeout: float) -> int: ...
    def query(
        self,
        name: str,
        filter_expr: str,
        fields: Sequence[str],
        limit: int,
        timeout: float,
    ) -> list[dict[str, Any]]: ...
    def iter_query(
        self, name: str, filter_expr: str, fields: Sequence[str], timeout: float
    ) -> Iterator[dict[str, Any]]: ...
    def upsert(self, name: str, chunks: Sequence[ChunkRecord], timeout: float) -> None: ...
    def delete_ids(self, name: str, ids: Sequence[str], timeout: float) -> None: ...
    def flush(self, name: str, timeout: float) -> None: ...
    def search_dense(
        self,
        info: CollectionInfo,
        vector: Sequence[float],
        limit: int,
        filter_expr: str,
        timeout: float,
    ) -> list[tuple[ScoredId, ChunkRecord]]: ...
    def search_sparse(
        self, info: CollectionInfo, text: str, limit: int, filter_expr: str, timeout: float
    ) -> list[tuple[ScoredId, ChunkRecord]]: ...
    def is_lite(self) -> bool: ...
    def cached_info(self, name: str) -> CollectionInfo | None: ...
    def forget_all(self) -> None: ...
