"""Answer quality per answer mode for `ragmesh eval` (pure functions, no I/O).

For each answer mode asked (verbatim, generative, auto):

- answer_contains_gold: of the answerable questions with a gold answer, the share
  whose answer contains one (an abstention contains none);
- abstained_answerable / abstained_unanswerable: the share of answerable and of
  unanswerable questions (SQuAD 2.0's) that the service abstained on;
- cited: of the answers that are not abstentions, the share with at least one
  valid citation;
- mean_answer_chars: the mean length of those answers, in characters (a longer
  answer contains a gold span more easily: read the two together).

And, from the relevance signal every answer reports, the abstention trade-off a
threshold would give: for each threshold t, the share of unanswerable questions
with relevance below t (abstained) against the share of answerable ones at or
above it (still answered).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from ragmesh.eval_metrics import answer_contains


@dataclass(frozen=True)
class AnswerOutcome:
    question_id: str
    answerable: bool
    gold: Sequence[str]
    answer: str | None  # None: the call failed
    abstained: bool = False
    citations: int = 0
    relevance: float = 0.0
    mode: str = ""  # the mode that answered, as the server reports it

    @property
    def contains_gold(self) -> bool:
        return (
            self.answer is not None
            and not self.abstained
            and answer_contains(self.answer, self.gold)
        )


def _share(hits: int, total: int) -> float | None:
    return hits / total if total else None


def summarize(outcomes: Sequence[AnswerOutcome]) -> dict[str, float | int | None]:
    done = [o for o in outcomes if o.answer is not None]
    answerable = [o for o in done if o.answerable]
    unanswerable = [o for o in done if not o.answerable]
    with_gold = [o for o in answerable if o.gold]
    answers = [o for o in done if not o.abstained]
    return {
        "asked": len(outcomes),
        "failed": len(outcomes) - len(done),
        "answer_contains_gold": _share(sum(o.contains_gold for o in with_gold), len(with_gold)),
        "abstained_answerable": _share(sum(o.abstained for o in answerable), len(answerable)),
        "abstained_unanswerable": _share(sum(o.abstained for o in unanswerable), len(unanswerable)),
        "cited": _share(sum(o.citations > 0 for o in answers), len(answers)),
        "mean_answer_chars": (
            sum(len(o.answer or "") for o in answers) / len(answers) if answers else None
        ),
    }


@dataclass(frozen=True)
class CurvePoint:
    threshold: float
    unanswerable_abstained: float | None
    answerable_answered: float | None
    answerable_answered_with_gold: float | None


def abstention_curve(
    outcomes: Sequence[AnswerOutcome], thresholds: Iterable[float]
) -> list[CurvePoint]:
    """What each threshold would do on these answers (their reported relevance).
    `answerable_answered_with_gold` counts the answers still given that contain a
    gold answer, over all answerable questions."""
    done = [o for o in outcomes if o.answer is not None]
    answerable = [o for o in done if o.answerable]
    unanswerable = [o for o in done if not o.answerable]
    points = []
    for t in thresholds:
        points.append(
            CurvePoint(
                round(t, 4),
                _share(sum(o.relevance < t for o in unanswerable), len(unanswerable)),
                _share(sum(o.relevance >= t for o in answerable), len(answerable)),
                _share(
                    sum(o.relevance >= t and o.contains_gold for o in answerable), len(answerable)
                ),
            )
        )
    return points


def default_thresholds(start: float = 0.0, stop: float = 0.8, step: float = 0.025) -> list[float]:
    count = round((stop - start) / step) + 1
    return [start + i * step for i in range(count)]
