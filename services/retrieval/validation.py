"""Checks of what callers send the retrieval service: names, chunks, collection
specs and searches. Plain functions; each failure is INVALID_ARGUMENT (or
FAILED_PRECONDITION) with its reason."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence

from services.common.errors import FailedPrecondition, InvalidArgument
from services.retrieval.config import RetrievalSettings
from services.retrieval.schema import (
    COLLECTION_NAME_RE,
    F_DOCUMENT_ID,
    F_DOCUMENT_VERSION,
    INDEX_PARAM_BOUNDS,
    MAX_DIMENSION,
    MIN_DIMENSION,
    VARCHAR_LIMITS,
    Capabilities,
    ChunkRecord,
    CollectionInfo,
    CollectionSpec,
    FusionMethod,
    FusionSpec,
    SearchMode,
    SearchQuery,
)


def validate_collection_name(name: str) -> None:
    if not name:
        raise InvalidArgument("collection name is required", reason="INVALID_COLLECTION_NAME")
    if not COLLECTION_NAME_RE.fullmatch(name):
        raise InvalidArgument(
            f"invalid collection name {name!r:.80}: use letters, digits and underscores, "
            "starting with a letter or underscore, at most 255 characters",
            reason="INVALID_COLLECTION_NAME",
            metadata={"collection": name[:80]},
        )


def check_varchar(field_name: str, value: str, limit: int | None = None) -> None:
    limit = limit or VARCHAR_LIMITS[field_name]
    size = len(value.encode())
    if size > limit:
        raise InvalidArgument(
            f"{field_name} is {size} bytes; at most {limit} are allowed",
            reason="FIELD_TOO_LONG",
            metadata={"field": field_name, "limit": limit},
        )


def validate_document_id(document_id: str) -> None:
    if not document_id:
        raise InvalidArgument("document_id is required", reason="INVALID_DOCUMENT_ID")
    check_varchar(F_DOCUMENT_ID, document_id)
    if any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in document_id):
        raise InvalidArgument(
            "document_id may not contain control characters", reason="INVALID_DOCUMENT_ID"
        )


def validate_chunks(
    info: CollectionInfo,
    document_id: str,
    version: str,
    chunks: Sequence[ChunkRecord],
    settings: RetrievalSettings,
) -> None:
    """The chunks of one upsert: one document, distinct indexes, vectors of the
    collection's dimension, fields within their stored sizes."""
    if not chunks:
        raise InvalidArgument("no chunks to upsert", reason="EMPTY_UPSERT")
    if len(chunks) > settings.max_chunks_per_upsert:
        raise InvalidArgument(
            f"{len(chunks)} chunks in one call; at most "
            f"{settings.max_chunks_per_upsert} are allowed",
            reason="TOO_MANY_CHUNKS",
        )
    check_varchar(F_DOCUMENT_VERSION, version)
    seen: set[int] = set()
    for chunk in chunks:
        if chunk.chunk_index in seen:
            raise InvalidArgument(
                f"chunk {chunk.chunk_index} appears twice", reason="DUPLICATE_CHUNK_INDEX"
            )
        seen.add(chunk.chunk_index)
        _validate_chunk(chunk, info, document_id, settings)


def _validate_chunk(
    chunk: ChunkRecord, info: CollectionInfo, document_id: str, settings: RetrievalSettings
) -> None:
    where = f"chunk {chunk.chunk_index}"
    if chunk.document_id != document_id:
        raise InvalidArgument(
            f"{where} belongs to document {chunk.document_id!r:.80}, not {document_id!r:.80}",
            reason="DOCUMENT_ID_MISMATCH",
        )
    if chunk.chunk_index < 0:
        raise InvalidArgument(
            f"{where}: chunk_index must not be negative", reason="INVALID_CHUNK_INDEX"
        )
    vector = chunk.vector or []
    if len(vector) != info.spec.dimension:
        raise InvalidArgument(
            f"{where}: vector has {len(vector)} dimensions; the collection has "
            f"{info.spec.dimension}",
            reason="DIMENSION_MISMATCH",
            metadata={"expected": info.spec.dimension, "got": len(vector)},
        )
    if not all(math.isfinite(x) for x in vector):
        raise InvalidArgument(f"{where}: vector holds NaN or infinity", reason="INVALID_VECTOR")
    if not chunk.text.strip():
        raise InvalidArgument(f"{where}: text is empty", reason="EMPTY_TEXT")
    check_varchar("text", chunk.text, settings.max_text_bytes)
    for name in ("title", "source", "language", "media_type", "page_label"):
        check_varchar(name, getattr(chunk, name))
    if chunk.page_start < 0 or chunk.page_end < chunk.page_start:
        raise InvalidArgument(
            f"{where}: pages must satisfy 0 <= page_start <= page_end", reason="INVALID_OFFSETS"
        )
    check_varchar("heading_path", json.dumps(chunk.heading_path, ensure_ascii=False))
    if chunk.start_offset < 0 or chunk.end_offset < chunk.start_offset:
        raise InvalidArgument(
            f"{where}: offsets must satisfy 0 <= start <= end", reason="INVALID_OFFSETS"
        )
    meta = json.dumps(chunk.metadata, ensure_ascii=False)
    if len(meta.encode()) > settings.max_metadata_bytes:
        raise InvalidArgument(
            f"{where}: metadata is larger than {settings.max_metadata_bytes} bytes as JSON",
            reason="FIELD_TOO_LONG",
            metadata={"field": "metadata"},
        )


MAX_LABELS, MAX_LABEL_BYTES = 16, 256


def validate_collection_spec(spec: CollectionSpec) -> None:
    """Name, dimension, labels and index parameters within their bounds."""
    if len(spec.labels) > MAX_LABELS or any(
        not k or len(k.encode()) > MAX_LABEL_BYTES or len(v.encode()) > MAX_LABEL_BYTES
        for k, v in spec.labels.items()
    ):
        raise InvalidArgument(
            f"at most {MAX_LABELS} labels, keys not empty, keys and values of at most "
            f"{MAX_LABEL_BYTES} bytes",
            reason="INVALID_LABELS",
        )
    validate_collection_name(spec.name)
    if not MIN_DIMENSION <= spec.dimension <= MAX_DIMENSION:
        raise InvalidArgument(
            f"dimension must be between {MIN_DIMENSION} and {MAX_DIMENSION}, got {spec.dimension}",
            reason="INVALID_DIMENSION",
        )
    bounds = INDEX_PARAM_BOUNDS[spec.index_type]
    for key, value in spec.index_params.items():
        if key not in bounds:
            allowed = ", ".join(bounds) or "none"
            raise InvalidArgument(
                f"index parameter {key!r} does not apply to {spec.index_type.value} "
                f"(allowed: {allowed})",
                reason="INVALID_INDEX_PARAMS",
            )
        low, high = bounds[key]
        if not low <= value <= high:
            raise InvalidArgument(
                f"index parameter {key}={value} is outside {low}..{high}",
                reason="INVALID_INDEX_PARAMS",
            )


def check_index_supported(spec: CollectionSpec, caps: Capabilities) -> None:
    """The index type exists on this Milvus backend."""
    if spec.index_type not in caps.index_types:
        raise FailedPrecondition(
            f"{caps.backend} does not support {spec.index_type.value}",
            reason="INDEX_TYPE_UNSUPPORTED",
        )


def validate_search(query: SearchQuery, info: CollectionInfo, settings: RetrievalSettings) -> int:
    """A search's parameters against the collection; the top_k to use."""
    top_k = query.top_k or settings.default_top_k
    if not 1 <= top_k <= settings.max_top_k:
        raise InvalidArgument(
            f"top_k must be between 1 and {settings.max_top_k} (0 for the default "
            f"{settings.default_top_k}), got {query.top_k}",
            reason="TOP_K_OUT_OF_RANGE",
            metadata={"max_top_k": settings.max_top_k},
        )
    if query.vector and len(query.vector) != info.spec.dimension:
        raise InvalidArgument(
            f"query_vector has {len(query.vector)} dimensions; the collection has "
            f"{info.spec.dimension}",
            reason="DIMENSION_MISMATCH",
            metadata={"expected": info.spec.dimension, "got": len(query.vector)},
        )
    if not all(math.isfinite(x) for x in query.vector):
        raise InvalidArgument("query_vector holds NaN or infinity", reason="INVALID_VECTOR")
    check_varchar("query_text", query.text, settings.max_query_text_bytes)
    if len(query.filters) > settings.max_filter_conditions:
        raise InvalidArgument(
            f"{len(query.filters)} filter conditions; at most "
            f"{settings.max_filter_conditions} are allowed",
            reason="TOO_MANY_FILTERS",
        )
    if len(query.exclude_document_ids) > settings.max_excluded_documents:
        raise InvalidArgument(
            f"{len(query.exclude_document_ids)} excluded documents; at most "
            f"{settings.max_excluded_documents} are allowed",
            reason="TOO_MANY_EXCLUDED_DOCUMENTS",
        )
    for document_id in query.exclude_document_ids:
        validate_document_id(document_id)
    if query.min_score is not None and not math.isfinite(query.min_score):
        raise InvalidArgument("min_score must be a finite number", reason="INVALID_MIN_SCORE")
    return top_k


def resolve_mode(query: SearchQuery, info: CollectionInfo, caps: Capabilities | None) -> SearchMode:
    """The mode a search runs in: as asked, or HYBRID where both a vector and a
    text are given and BM25 exists, else the one the query allows."""
    sparse_ok = info.sparse_enabled and bool(caps and caps.sparse_supported)
    mode = query.mode
    if mode is None:
        if query.vector and query.text:
            mode = SearchMode.HYBRID if sparse_ok else SearchMode.DENSE
        elif query.vector:
            mode = SearchMode.DENSE
        elif query.text:
            mode = SearchMode.SPARSE
        else:
            raise InvalidArgument("give a query_vector, a query_text or both", reason="EMPTY_QUERY")
    if mode in (SearchMode.DENSE, SearchMode.HYBRID) and not query.vector:
        raise InvalidArgument(
            f"{mode.value} search needs query_vector", reason="MISSING_QUERY_VECTOR"
        )
    if mode in (SearchMode.SPARSE, SearchMode.HYBRID):
        if not query.text.strip():
            raise InvalidArgument(
                f"{mode.value} search needs query_text", reason="MISSING_QUERY_TEXT"
            )
        if not sparse_ok:
            where = f"{caps.backend} {caps.server_version}" if caps else "this Milvus"
            raise FailedPrecondition(
                f"{mode.value} search needs BM25 full-text search, which {where} does not "
                "support (Milvus >= 2.5 or Milvus Lite 3 does); use DENSE",
                reason="SPARSE_UNSUPPORTED",
                metadata={"backend": caps.backend if caps else "", "mode": mode.value},
            )
    return mode


def hybrid_fusion(spec: FusionSpec, settings: RetrievalSettings) -> FusionSpec:
    """The fusion a HYBRID search uses: the request's, defaults filled in."""
    method = spec.method or FusionMethod(settings.default_fusion)
    for name in ("dense_weight", "sparse_weight"):
        value = getattr(spec, name)
        if not math.isfinite(value) or value < 0:
            raise InvalidArgument(
                f"fusion {name} must be a finite number >= 0", reason="INVALID_FUSION"
            )
    if spec.rrf_k < 0:
        raise InvalidArgument("fusion rrf_k must not be negative", reason="INVALID_FUSION")
    dense_w, sparse_w = spec.dense_weight, spec.sparse_weight
    if dense_w == 0 and sparse_w == 0:
        dense_w, sparse_w = settings.dense_weight, settings.sparse_weight
    return FusionSpec(
        method=method,
        rrf_k=spec.rrf_k or settings.rrf_k,
        dense_weight=dense_w,
        sparse_weight=sparse_w,
    )
