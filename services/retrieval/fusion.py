"""Fusing the dense and the BM25 result lists of a hybrid search.

Two methods:

- RRF, reciprocal-rank fusion: score = sum of w / (k + rank). It ignores the
  scores, so a retriever that cannot tell the candidates apart moves the fused
  ranking as much as one that clearly can.
- WEIGHTED: a convex combination of scores normalised against each scorer's
  *no-relevance point* and the list's best score — "TM2C2" in Bruch, Gai &
  Ingber, "An Analysis of Fusion Functions for Hybrid Retrieval" (ACM TOIS
  2023), which beats RRF in their study. A score s becomes
  max(0, s - lower) / (best - lower), where lower is 0 for both: BM25 scores 0
  for a text sharing no term with the query, and a cosine of 0 is a text
  orthogonal to (unrelated to) the query — negative cosines say no more than
  that. This is score-aware in the way that matters: a retriever whose
  candidates all score about the same (an English-only embedding model on
  Chinese text: cosines 0.33-0.48) yields normalised scores packed near 1 and
  so mostly breaks near-ties of the other list, while a retriever with a sharp
  best match (BM25 finding the rare terms of the question) spreads its
  candidates over [0, 1] and leads. Metrics without a finite bound (inner
  product, L2 distance) fall back to the list's own minimum (plain min-max).

  The cosine's bound was -1 (its theoretical minimum) until issue 14: that
  packs every cosine list into the top of [0, 1] (0.68 → 1, 0.50 → 0.89), so
  BM25 led even where the embedding model was clearly the better retriever
  (Cranfield with MiniLM: HYBRID nDCG@10 0.361 against DENSE 0.383; with 0,
  0.394 in a replay of the same lists; docs/retrieval.md, "Fusion").

A candidate missing from one list gets the lowest normalised score of that
list when the list is full (it scored at most that), and 0 when the list came
back shorter than asked (nothing else matched at all, e.g. no query term).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from services.retrieval.schema import Metric, ScoredId

# The score of an unrelated text for each scorer (None: unbounded, use the list's min).
COSINE_LOWER_BOUND = 0.0
BM25_LOWER_BOUND = 0.0


def dense_lower_bound(metric: Metric) -> float | None:
    return COSINE_LOWER_BOUND if metric is Metric.COSINE else None


@dataclass(frozen=True)
class FusedId:
    id: str
    score: float
    ranks: tuple[int, ...]  # 1-based rank in each input list, 0 when absent


@dataclass(frozen=True)
class RankedList:
    """One retriever's results, best first, with what normalising them needs."""

    results: Sequence[ScoredId]
    lower_bound: float | None = None
    requested: int = 0  # how many results were asked for (0: unknown)


def _ranks(lists: Sequence[Sequence[ScoredId]]) -> dict[str, list[int]]:
    ranks: dict[str, list[int]] = {}
    for i, results in enumerate(lists):
        for rank, hit in enumerate(results, start=1):
            slot = ranks.setdefault(hit.id, [0] * len(lists))
            if slot[i] == 0:
                slot[i] = rank
    return ranks


def _ordered(scores: dict[str, float], ranks: dict[str, list[int]]) -> list[FusedId]:
    # Ties go to the better rank in any list, then to the id, so output is stable.
    def key(item: tuple[str, float]) -> tuple[float, int, str]:
        doc_id, score = item
        best = min((r for r in ranks[doc_id] if r), default=0)
        return (-score, best, doc_id)

    return [FusedId(i, s, tuple(ranks[i])) for i, s in sorted(scores.items(), key=key)]


def rrf(
    lists: Sequence[Sequence[ScoredId]], k: int = 60, weights: Sequence[float] | None = None
) -> list[FusedId]:
    """Reciprocal-rank fusion: sum over lists of weight / (k + rank)."""
    weights = list(weights) if weights is not None else [1.0] * len(lists)
    ranks = _ranks(lists)
    scores = {
        doc_id: sum(w / (k + r) for w, r in zip(weights, doc_ranks, strict=True) if r)
        for doc_id, doc_ranks in ranks.items()
    }
    return _ordered(scores, ranks)


def normalise(results: Sequence[ScoredId], lower_bound: float | None) -> dict[str, float]:
    """Scores mapped to [0, 1]: the best is 1, `lower_bound` (or the list's min) is 0."""
    if not results:
        return {}
    best = max(h.score for h in results)
    low = lower_bound if lower_bound is not None else min(h.score for h in results)
    span = best - low
    if span <= 0:
        return {h.id: 1.0 for h in results}
    return {h.id: max(0.0, (h.score - low) / span) for h in results}


def weighted(lists: Sequence[RankedList], weights: Sequence[float] | None = None) -> list[FusedId]:
    """Weighted sum of bound-normalised scores (see the module docstring)."""
    weights = list(weights) if weights is not None else [1.0] * len(lists)
    ranks = _ranks([lst.results for lst in lists])
    normalised = [normalise(lst.results, lst.lower_bound) for lst in lists]
    missing = [
        0.0 if len(lst.results) < lst.requested else min(norm.values(), default=0.0)
        for lst, norm in zip(lists, normalised, strict=True)
    ]
    scores = {
        doc_id: sum(
            w * norm.get(doc_id, miss)
            for w, norm, miss in zip(weights, normalised, missing, strict=True)
        )
        for doc_id in ranks
    }
    return _ordered(scores, ranks)
