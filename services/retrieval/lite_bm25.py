"""Milvus Lite's BM25, scored with the collection's statistics instead of each segment's.

Milvus Lite 3.2 scores BM25 segment by segment, each with its own document count, average
length and document frequencies (its `Collection._search_sparse` says so in a TODO), then
merges the lists by score. A term's IDF therefore depends on which segment a chunk landed
in, and segments follow flush timing: the same chunks, ingested twice, rank differently
(squad2-sample-a SPARSE recall@1 0.889, 0.909 and 0.921 over three identical ingestions
on one stack), and the merged scores of different segments are not comparable. Milvus
servers aggregate the statistics over the collection; `install()` makes Lite do the same:

- around each BM25 search, the collection's statistics are gathered from the indexes Lite
  already keeps per sealed segment (built and cached the way Lite builds them) plus the
  growing rows in memory: document count, total length, and per query term the document
  frequency summed over them;
- Lite's per-segment scorer then uses those instead of its segment's own (same formula,
  same k1 and b).

As in Lite's own per-segment statistics, rows deleted but not yet compacted away still
count. A version of Lite without the internals this relies on is left as it is (logged).
"""

from __future__ import annotations

import contextvars
import functools
import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

log = logging.getLogger("ragmesh.retrieval")


@dataclass(frozen=True)
class CollectionStats:
    """BM25 statistics of every row of a collection (sealed segments and memory)."""

    sources: tuple[Any, ...]  # SparseInvertedIndex of each segment and of the memtable
    doc_count: int
    avgdl: float

    def df(self, term: int) -> int:
        return sum(source._df.get(term, 0) for source in self.sources)


_STATS: contextvars.ContextVar[CollectionStats | None] = contextvars.ContextVar(
    "ragmesh_bm25_stats", default=None
)


def collection_stats(collection: Any, vector_field: str, params: dict[str, Any]) -> CollectionStats:
    """The statistics of one Lite collection's BM25 field, over all its rows."""
    from milvus_lite.analyzer.sparse import bytes_to_sparse
    from milvus_lite.index.sparse_factory import create_sparse_index, sparse_index_matches

    def sparse(raw: Any) -> dict[int, float]:
        return bytes_to_sparse(raw) if isinstance(raw, bytes) else (raw or {})

    with collection._maintenance_lock:
        segments = tuple(collection._segment_cache.values())
    sources = []
    for seg in segments:
        table = seg.table
        if table is None or len(table) == 0:
            continue
        index = seg.sparse_indexes.get(vector_field)
        if not sparse_index_matches(index, "BM25", params):
            # Built and cached exactly as Lite's search builds it, so it is built once.
            index = create_sparse_index("BM25", params)
            index.build([sparse(r) for r in table.column(vector_field).to_pylist()])
            seg.sparse_indexes[vector_field] = index
        sources.append(index)
    memtable = collection._memtable
    with memtable._lock:
        growing = [
            sparse(memtable._insert_batches[batch].column(vector_field)[row].as_py())
            for batch, row, _seq in memtable._pk_index.values()
        ]
    if growing:
        index = create_sparse_index("BM25", params)
        index.build(growing)
        sources.append(index)
    count = sum(s.doc_count for s in sources)
    length = sum(s.avgdl * s.doc_count for s in sources)
    return CollectionStats(tuple(sources), count, length / count if count else 0.0)


def scored_search(
    index: Any,
    stats: CollectionStats,
    queries: Sequence[dict[int, float]],
    top_k: int,
    valid_mask: np.ndarray | None,
) -> tuple[np.ndarray, np.ndarray]:
    """Lite's `SparseInvertedIndex.search` (milvus-lite 3.2.2, Apache-2.0) with the
    collection's document count, average length and document frequencies."""
    from milvus_lite.index.sparse_common import empty_results, validate_mask

    valid_mask = validate_mask(valid_mask, len(index._doc_lengths))
    ids, distances = empty_results(len(queries), top_k)
    if index.doc_count == 0 or stats.doc_count == 0:
        return ids, distances
    n, k1, b = stats.doc_count, index.k1, index.b
    avgdl = stats.avgdl if stats.avgdl > 0 else 1.0
    for qi, terms in enumerate(queries):
        scores: dict[int, float] = {}
        for term, weight in (terms or {}).items():
            posting = index._posting_lists.get(term)
            if not posting:
                continue
            df = stats.df(term)
            idf = math.log((n - df + 0.5) / (df + 0.5) + 1.0)
            for local_id, tf in posting:
                if valid_mask is not None and not valid_mask[local_id]:
                    continue
                dl = index._doc_lengths[local_id]
                norm = (tf * (k1 + 1.0)) / (tf + k1 * (1.0 - b + b * dl / avgdl))
                scores[local_id] = scores.get(local_id, 0.0) + idf * norm * weight
        best = sorted(scores.items(), key=lambda item: item[1], reverse=True)[:top_k]
        for j, (local_id, score) in enumerate(best):
            ids[qi, j] = local_id
            distances[qi, j] = -score
    return ids, distances


@functools.cache  # once per process
def install() -> bool:
    """Patch Milvus Lite; False when this Lite lacks what it needs."""
    try:
        from milvus_lite.engine.collection import Collection
        from milvus_lite.index.sparse_inverted import SparseInvertedIndex
    except ImportError as exc:
        log.warning("Milvus Lite BM25 keeps per-segment statistics: %s", exc)
        return False
    probe = SparseInvertedIndex()
    if not hasattr(Collection, "_search_sparse") or not all(
        hasattr(probe, a) for a in ("_df", "_posting_lists", "_doc_lengths", "k1", "b")
    ):
        log.warning("Milvus Lite BM25 keeps per-segment statistics: unknown Lite internals")
        return False
    original_sparse: Callable[..., Any] = Collection._search_sparse
    fallen_back: list[bool] = []
    original_index_search: Callable[..., Any] = SparseInvertedIndex.search

    def search_sparse(
        self: Any,
        query_vectors: Any,
        vector_field: str,
        top_k: int,
        metric_type: str,
        *args: Any,
        **kwargs: Any,
    ) -> Any:
        def lite() -> Any:
            return original_sparse(
                self, query_vectors, vector_field, top_k, metric_type, *args, **kwargs
            )

        if metric_type != "BM25":
            return lite()
        try:
            spec = self._index_specs.get(vector_field)
            stats = collection_stats(self, vector_field, spec.build_params if spec else {})
        except Exception:  # Lite's internals changed under us: its own statistics
            if not fallen_back:  # once: it would fail the same way on every search
                fallen_back.append(True)
                log.exception("Milvus Lite BM25: collection statistics unavailable")
            return lite()
        token = _STATS.set(stats)
        try:
            return lite()
        finally:
            _STATS.reset(token)

    def index_search(self: Any, queries: Any, top_k: int, valid_mask: Any = None) -> Any:
        stats = _STATS.get()
        if stats is None:
            return original_index_search(self, queries, top_k, valid_mask=valid_mask)
        return scored_search(self, stats, queries, top_k, valid_mask)

    Collection._search_sparse = search_sparse
    SparseInvertedIndex.search = index_search
    return True
