"""Retrieval and answer metrics for `ragmesh eval` (pure functions, no I/O).

Retrieval is scored at the document level: the chunks a search returns are
mapped to their documents, keeping each document at its best (first) rank.

- recall@k: the share of relevant documents found in the first k documents
  (with one gold document per question: 1 if it is there, else 0);
- MRR@k: 1 / rank of the first relevant document within k, else 0;
- nDCG@k: graded relevance with linear gains, as trec_eval's `ndcg_cut` (which
  BEIR reports): DCG = Σ grade_i / log2(i + 1) over the first k documents,
  divided by the DCG of the ideal ordering of every judged document.

Data sets of real documents (the documents layout) are also scored per chunk:

- passage recall@k: the first k chunks hold one of the gold document's that
  contains the gold passage (compared as `normalize_answer` forms);
- page recall@k: the first k chunks hold one of the gold document's whose pages
  include the gold page;
- passage pages correct: of the chunks in the first k that contain the gold
  passage, the share whose pages include the gold page (a citation a person can
  check: it should be 1.0).
"""

from __future__ import annotations

import math
import re
import unicodedata
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field


def percentile(values: Iterable[float], q: float) -> float:
    """The q-quantile (0 ≤ q ≤ 1) by linear interpolation between the closest
    ranks (numpy's default method). The one percentile of the CLI and the
    benchmarks."""
    ordered = sorted(values)
    if not ordered:
        raise ValueError("percentile of no values")
    position = q * (len(ordered) - 1)
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def ranked_documents(chunk_document_ids: Iterable[str]) -> list[str]:
    """Document ids in order of their first chunk, without repeats."""
    seen: set[str] = set()
    ranked: list[str] = []
    for doc in chunk_document_ids:
        if doc not in seen:
            seen.add(doc)
            ranked.append(doc)
    return ranked


def recall_at_k(ranked: Sequence[str], relevant: Iterable[str], k: int) -> float:
    gold = set(relevant)
    if not gold:
        return 0.0
    return len(gold.intersection(ranked[:k])) / len(gold)


def mrr_at_k(ranked: Sequence[str], relevant: Iterable[str], k: int) -> float:
    gold = set(relevant)
    for rank, doc in enumerate(ranked[:k], start=1):
        if doc in gold:
            return 1.0 / rank
    return 0.0


def ndcg_at_k(ranked: Sequence[str], grades: Mapping[str, float], k: int) -> float:
    """nDCG@k with linear gains; documents without a grade count 0."""
    dcg = sum(
        grades.get(doc, 0.0) / math.log2(rank + 1) for rank, doc in enumerate(ranked[:k], start=1)
    )
    ideal = sorted((g for g in grades.values() if g > 0), reverse=True)[:k]
    idcg = sum(g / math.log2(rank + 1) for rank, g in enumerate(ideal, start=1))
    return dcg / idcg if idcg > 0 else 0.0


_PUNCT_OR_SPACE = re.compile(r"[\s\W_]+", re.UNICODE)


def normalize_answer(text: str) -> str:
    """NFKC, case-folded, without whitespace or punctuation (works for Chinese too,
    where a gold span is compared with an answer that may add spaces or quotes)."""
    return _PUNCT_OR_SPACE.sub("", unicodedata.normalize("NFKC", text).casefold())


def answer_contains(answer: str, gold_answers: Iterable[str]) -> bool:
    """Whether the answer contains one of the gold answers (normalised)."""
    norm = normalize_answer(answer)
    if not norm:
        return False
    for gold in gold_answers:
        g = normalize_answer(gold)
        if g and g in norm:
            return True
    return False


RECALL_KS = (1, 5, 10)
PASSAGE_KS = (1, 5)


@dataclass(frozen=True)
class ChunkHit:
    """One retrieved chunk: its document (the data set's id), text and pages."""

    document: str
    text: str
    page_start: int = 0
    page_end: int = 0

    def on_page(self, page: int) -> bool:
        return self.page_start <= page <= (self.page_end or self.page_start)


def first_rank(hits: Sequence[ChunkHit], match: Callable[[ChunkHit], bool]) -> int:
    """1-based rank of the first hit that matches, 0 when none does."""
    return next((rank for rank, hit in enumerate(hits, start=1) if match(hit)), 0)


def contains_passage(text: str, passage: str) -> bool:
    gold = normalize_answer(passage)
    return bool(gold) and gold in normalize_answer(text)


@dataclass
class QuestionScore:
    question_id: str
    recall: dict[int, float]
    mrr10: float
    ndcg10: float | None = None
    recall100: float | None = None
    answer_hit: bool | None = None  # None: answers not asked or no gold answer
    #: documents layout: rank of the first chunk with the passage / on the page (0: none)
    passage_rank: int | None = None
    page_rank: int | None = None
    #: chunks in the first k holding the passage, and how many of them cite the right page
    passage_chunks: int = 0
    passage_chunks_on_page: int = 0


@dataclass
class Scoreboard:
    """Per-question scores and their means."""

    graded: bool = False  # nDCG@10 and recall@100 (BEIR layout)
    scores: list[QuestionScore] = field(default_factory=list)

    def add_retrieval(
        self,
        question_id: str,
        ranked: Sequence[str],
        grades: Mapping[str, float],
    ) -> QuestionScore:
        relevant = [doc for doc, grade in grades.items() if grade > 0]
        score = QuestionScore(
            question_id=question_id,
            recall={k: recall_at_k(ranked, relevant, k) for k in RECALL_KS},
            mrr10=mrr_at_k(ranked, relevant, 10),
        )
        if self.graded:
            score.ndcg10 = ndcg_at_k(ranked, grades, 10)
            score.recall100 = recall_at_k(ranked, relevant, 100)
        self.scores.append(score)
        return score

    def add_chunks(
        self,
        score: QuestionScore,
        hits: Sequence[ChunkHit],
        document: str,
        passage: str,
        page: int,
        k: int = 10,
    ) -> None:
        """Chunk-level scores of a documents-layout question (see the module's docstring)."""
        if passage:
            holds = [
                h for h in hits[:k] if h.document == document and contains_passage(h.text, passage)
            ]
            score.passage_rank = first_rank(
                hits, lambda h: h.document == document and contains_passage(h.text, passage)
            )
            if page:
                score.passage_chunks = len(holds)
                score.passage_chunks_on_page = sum(1 for h in holds if h.on_page(page))
        if page:
            score.page_rank = first_rank(hits, lambda h: h.document == document and h.on_page(page))

    def _chunk_summary(self, out: dict[str, float | int | None]) -> None:
        for key, name in (("passage_rank", "passage"), ("page_rank", "page")):
            ranks = [getattr(s, key) for s in self.scores if getattr(s, key) is not None]
            if not ranks:
                continue
            out[f"{name}_questions"] = len(ranks)
            for k in PASSAGE_KS:
                out[f"{name}_recall@{k}"] = sum(1 for r in ranks if 0 < r <= k) / len(ranks)
        checked = sum(s.passage_chunks for s in self.scores)
        if any(s.page_rank is not None for s in self.scores):
            out["passage_chunks_checked"] = checked
            out["passage_pages_correct"] = (
                sum(s.passage_chunks_on_page for s in self.scores) / checked if checked else None
            )

    def summary(self) -> dict[str, float | int | None]:
        n = len(self.scores)
        out: dict[str, float | int | None] = {"questions": n}
        if n == 0:
            return out
        for k in RECALL_KS:
            out[f"recall@{k}"] = sum(s.recall[k] for s in self.scores) / n
        out["mrr@10"] = sum(s.mrr10 for s in self.scores) / n
        if self.graded:
            out["ndcg@10"] = sum(s.ndcg10 or 0.0 for s in self.scores) / n
            out["recall@100"] = sum(s.recall100 or 0.0 for s in self.scores) / n
        self._chunk_summary(out)
        answered = [s.answer_hit for s in self.scores if s.answer_hit is not None]
        out["answers_scored"] = len(answered)
        out["answer_contains_gold"] = (
            sum(1 for hit in answered if hit) / len(answered) if answered else None
        )
        return out
