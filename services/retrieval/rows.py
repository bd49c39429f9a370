"""Chunk records ⇄ Milvus rows, and scores that are higher-is-better."""

from __future__ import annotations

import json
from typing import Any

from services.retrieval.schema import (
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
    F_SOURCE,
    F_START_OFFSET,
    F_TEXT,
    F_TITLE,
    F_TOKEN_COUNT,
    ChunkRecord,
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
    )


def row_from_record(chunk: ChunkRecord) -> dict[str, Any]:
    return {
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


def dense_score(metric: Metric, distance: float) -> float:
    """Higher is better whatever the metric: L2 distances are negated."""
    return -distance if metric is Metric.L2 else distance
