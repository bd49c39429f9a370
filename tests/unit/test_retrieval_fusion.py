"""Fusion of dense and BM25 result lists."""

from __future__ import annotations

import pytest

from services.retrieval import fusion
from services.retrieval.fusion import RankedList, normalise, rrf, weighted
from services.retrieval.schema import Metric, ScoredId


def _ids(pairs: list[tuple[str, float]]) -> list[ScoredId]:
    return [ScoredId(i, s) for i, s in pairs]


def test_rrf_scores_and_ranks() -> None:
    fused = rrf([_ids([("a", 9), ("b", 8)]), _ids([("b", 5), ("c", 4)])], k=60)
    assert [f.id for f in fused] == ["b", "a", "c"]
    assert fused[0].score == pytest.approx(1 / 62 + 1 / 61)
    assert fused[0].ranks == (2, 1)
    assert fused[1].ranks == (1, 0)
    assert fused[2].ranks == (0, 2)


def test_rrf_weights() -> None:
    fused = rrf([_ids([("a", 1)]), _ids([("b", 1)])], k=1, weights=[1.0, 3.0])
    assert [f.id for f in fused] == ["b", "a"]


def test_rrf_ties_break_by_best_rank_then_id() -> None:
    fused = rrf([_ids([("y", 1), ("x", 0)]), _ids([("x", 1), ("y", 0)])])
    assert [f.id for f in fused] == ["x", "y"]


def test_normalise_with_theoretical_bound() -> None:
    got = normalise(_ids([("a", 0.5), ("b", 0.0)]), lower_bound=-1.0)
    assert got == {"a": 1.0, "b": pytest.approx(1 / 1.5)}


def test_normalise_without_bound_is_min_max() -> None:
    got = normalise(_ids([("a", -1.0), ("b", -3.0), ("c", -2.0)]), lower_bound=None)
    assert got == {"a": 1.0, "b": 0.0, "c": 0.5}


def test_normalise_flat_and_empty() -> None:
    assert normalise(_ids([("a", 2.0), ("b", 2.0)]), None) == {"a": 1.0, "b": 1.0}
    assert normalise([], 0.0) == {}


def test_flat_retriever_only_breaks_ties_of_a_sharp_one() -> None:
    """Cosines packed in 0.40-0.48 (a model that cannot tell these texts apart)
    must not override a clear BM25 winner, only decide BM25's near-ties."""
    dense = _ids([("d1", 0.48), ("gold", 0.44), ("tie_b", 0.42), ("tie_a", 0.40)])
    sparse = _ids([("gold", 30.0), ("tie_a", 10.0), ("tie_b", 10.0), ("d1", 2.0)])
    fused = weighted([RankedList(dense, -1.0, 4), RankedList(sparse, 0.0, 4)])
    assert [f.id for f in fused] == ["gold", "tie_b", "tie_a", "d1"]


def test_sharp_dense_match_beats_weak_lexical_one() -> None:
    dense = _ids([("gold", 0.9), ("x", 0.1), ("y", 0.05)])
    sparse = _ids([("x", 4.0), ("gold", 3.5), ("y", 3.4)])
    fused = weighted([RankedList(dense, -1.0, 3), RankedList(sparse, 0.0, 3)])
    assert fused[0].id == "gold"


def test_missing_candidate_gets_list_floor_or_zero() -> None:
    dense = _ids([("a", 0.9), ("b", 0.5)])
    sparse = _ids([("b", 10.0)])  # asked for 2, got 1: nothing else matched a term
    fused = {f.id: f for f in weighted([RankedList(dense, -1.0, 2), RankedList(sparse, 0.0, 2)])}
    assert fused["a"].score == pytest.approx(1.0 + 0.0)
    assert fused["b"].score == pytest.approx(1.5 / 1.9 + 1.0)
    # A full list: the missing candidate scored at most the list's lowest.
    full = {f.id: f for f in weighted([RankedList(dense, -1.0, 2), RankedList(sparse, 0.0, 1)])}
    assert full["a"].score == pytest.approx(1.0 + 1.0)


def test_weights_scale_each_list() -> None:
    dense = _ids([("a", 0.9), ("b", -0.5)])
    sparse = _ids([("b", 10.0), ("a", 1.0)])
    lists = [RankedList(dense, -1.0, 2), RankedList(sparse, 0.0, 2)]
    assert weighted(lists, [5.0, 1.0])[0].id == "a"
    assert weighted(lists, [1.0, 5.0])[0].id == "b"


def test_dense_lower_bounds() -> None:
    assert fusion.dense_lower_bound(Metric.COSINE) == 0.0
    assert fusion.dense_lower_bound(Metric.IP) is None
    assert fusion.dense_lower_bound(Metric.L2) is None


def test_weighted_with_one_empty_list() -> None:
    fused = weighted([RankedList([], -1.0, 3), RankedList(_ids([("a", 2.0)]), 0.0, 3)])
    assert [(f.id, f.ranks) for f in fused] == [("a", (0, 1))]


def test_clear_dense_preference_beats_a_slight_lexical_one() -> None:
    """Cosines 0.70 vs 0.50 are a clear preference of the embedding model; BM25's 20
    vs 17 a slight one. Normalised against cosine 0 (unrelated), the dense gap counts;
    against -1 it shrank to 0.12 and BM25 decided (issue 14: HYBRID fell below DENSE
    on Cranfield)."""
    bound = fusion.dense_lower_bound(Metric.COSINE)
    dense = _ids([("gold", 0.70), ("x", 0.50)])
    sparse = _ids([("x", 20.0), ("gold", 17.0)])
    fused = weighted([RankedList(dense, bound, 2), RankedList(sparse, 0.0, 2)])
    assert [f.id for f in fused] == ["gold", "x"]
    old = weighted([RankedList(dense, -1.0, 2), RankedList(sparse, 0.0, 2)])
    assert [f.id for f in old] == ["x", "gold"]


def test_negative_cosines_count_as_unrelated() -> None:
    got = normalise(_ids([("a", 0.6), ("b", -0.2)]), fusion.dense_lower_bound(Metric.COSINE))
    assert got == {"a": 1.0, "b": 0.0}
