"""Answer metrics per mode and the abstention curve of `ragmesh eval`."""

from __future__ import annotations

import pytest

from ragmesh.eval_answers import AnswerOutcome, abstention_curve, summarize


def outcomes() -> list[AnswerOutcome]:
    return [
        AnswerOutcome("a1", True, ["2004"], "Released in 2004. [1]", citations=1, relevance=0.7),
        AnswerOutcome("a2", True, ["Paris"], "Lyon. [1]", citations=1, relevance=0.5),
        AnswerOutcome("a3", True, ["x"], "Not known.", abstained=True, relevance=0.1),
        AnswerOutcome("u1", False, [], "Something", citations=0, relevance=0.6),
        AnswerOutcome("u2", False, [], "Not known.", abstained=True, relevance=0.2),
        AnswerOutcome("f1", True, ["y"], None),
    ]


def test_summary_per_mode() -> None:
    s = summarize(outcomes())
    assert s["asked"] == 6 and s["failed"] == 1
    assert s["answer_contains_gold"] == pytest.approx(1 / 3)
    assert s["abstained_answerable"] == pytest.approx(1 / 3)
    assert s["abstained_unanswerable"] == pytest.approx(1 / 2)
    assert s["cited"] == pytest.approx(2 / 3)
    lengths = [len("Released in 2004. [1]"), len("Lyon. [1]"), len("Something")]
    assert s["mean_answer_chars"] == pytest.approx(sum(lengths) / 3)


def test_abstention_curve() -> None:
    points = abstention_curve(outcomes(), [0.0, 0.3, 0.65])
    assert [p.unanswerable_abstained for p in points] == [0.0, 0.5, 1.0]
    assert [p.answerable_answered for p in points] == pytest.approx([1.0, 2 / 3, 1 / 3])
    assert [p.answerable_answered_with_gold for p in points] == pytest.approx([1 / 3, 1 / 3, 1 / 3])
