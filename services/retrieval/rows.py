"""Chunk records ⇄ Milvus rows, and scores that are higher-is-better."""

from __future__ import annotations

import json
from typing import Any

from services.retrieval.config import MILVUS_VARCHAR_MAX
from services.retrieval.identifiers import index_text
from services.retrieval.schema import (
    F_BM25_TEXT,
    F_CHUNK_INDEX,
    F_DENSE,
    F_DOCUMENT_ID,
    F_DOCUMENT_VERSION,
    F_END_OFFSET,
    F_HEADING_PATH,
    F_ID,
    F_LANGUAGE,
    F_MEDIA_TYPE,
    F_METADATA,
    F_PAGE_END,
    F_PAGE_LABEL,
    F_PAGE_START,
    F_SOURCE,
    F_START_OFFSET,
    F_TEXT,
    F_TITLE,
    F_TOKEN_COUNT,
    ChunkRecord,
    CollectionInfo,
    Metric,
)


def record_from_row(row: dict[str, Any]) -> ChunkRecord:
    heading = row.get(F_HEADING_PATH) or "[]"
    try:
        heading_path = [str(h) for h in json.loads(heading)]
    except (TypeError, ValueError):
        heading_path = []
    metadata = row.get(F_METADATA) or {}
    if isinstance(metadata, str):  # some servers hand JSON fields back as text
        metadata = json.loads(metadata or "{}")
    return ChunkRecord(
        document_id=str(row.get(F_DOCUMENT_ID, "")),
        chunk_index=int(row.get(F_CHUNK_INDEX, 0)),
        text=str(row.get(F_TEXT, "") or ""),
        document_version=str(row.get(F_DOCUMENT_VERSION, "") or ""),
        title=str(row.get(F_TITLE, "") or ""),
        heading_path=heading_path,
        start_offset=int(row.get(F_START_OFFSET, 0) or 0),
        end_offset=int(row.get(F_END_OFFSET, 0) or 0),
        token_count=int(row.get(F_TOKEN_COUNT, 0) or 0),
        source=str(row.get(F_SOURCE, "") or ""),
        language=str(row.get(F_LANGUAGE, "") or ""),
        media_type=str(row.get(F_MEDIA_TYPE, "") or ""),
        metadata=dict(metadata),
        page_start=int(row.get(F_PAGE_START, 0) or 0),
        page_end=int(row.get(F_PAGE_END, 0) or 0),
        page_label=str(row.get(F_PAGE_LABEL, "") or ""),
    )


def row_from_record(chunk: ChunkRecord, info: CollectionInfo | None = None) -> dict[str, Any]:
    """The Milvus row; the page fields and the BM25 index text only where the
    collection has them (`info`; None: the original fields only)."""
    row = {
        F_ID: chunk.id,
        F_DOCUMENT_ID: chunk.document_id,
        F_CHUNK_INDEX: chunk.chunk_index,
        F_DOCUMENT_VERSION: chunk.document_version,
        F_TEXT: chunk.text,
        F_TITLE: chunk.title,
        F_HEADING_PATH: json.dumps(chunk.heading_path, ensure_ascii=False),
        F_START_OFFSET: chunk.start_offset,
        F_END_OFFSET: chunk.end_offset,
        F_TOKEN_COUNT: chunk.token_count,
        F_SOURCE: chunk.source,
        F_LANGUAGE: chunk.language,
        F_MEDIA_TYPE: chunk.media_type,
        F_METADATA: chunk.metadata,
        F_DENSE: chunk.vector,
    }
    if info is not None and info.pages:
        row.update(
            {
                F_PAGE_START: chunk.page_start,
                F_PAGE_END: chunk.page_end,
                F_PAGE_LABEL: chunk.page_label,
            }
        )
    if info is not None and info.sparse_enabled and info.bm25_input == F_BM25_TEXT:
        room = MILVUS_VARCHAR_MAX - len(chunk.text.encode("utf-8")) - 1
        row[F_BM25_TEXT] = index_text(chunk.text, max(0, room))
    return row


def dense_score(metric: Metric, distance: float) -> float:
    """Higher is better whatever the metric: L2 distances are negated."""
    return -distance if metric is Metric.L2 else distance
