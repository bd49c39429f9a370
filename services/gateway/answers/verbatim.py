"""Verbatim answers: the retrieved passages' own sentences that best answer the
question, chosen, ordered and de-duplicated (plain objects, no I/O).

A sentence's score is its embedding's cosine similarity to the question's (the
knowledge base's embedding model) plus LEXICAL_WEIGHT times its lexical overlap
with the question — the share of the question's content terms (English words
without stop words, Chinese character bigrams), weighted by their rarity among
the candidates, that the sentence contains — plus CONTEXT_WEIGHT times the same
overlap for its whole passage. Embeddings find paraphrases; the overlap rewards
the sentence that names the question's own rare terms, which is usually the one
holding the answer; the passage's overlap keeps a sentence that refers back to
its subject ("It covers 9 million km²" after "The Sahara is ...") with it.

The relevance signal for abstention is the best cosine similarity alone: it
does not depend on how many candidates there are or on which words they share,
so it means the same from one question to the next.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from services.gateway.answers.sentences import Sentence, split_sentences

#: Weight of the lexical overlap (0..1) next to the cosine similarity (about 0..1).
LEXICAL_WEIGHT = 0.5
#: Weight of the overlap of the sentence's whole passage.
CONTEXT_WEIGHT = 0.25

_LATIN_WORD = re.compile(r"[0-9a-z]+(?:['’][a-z]+)?")
_HAN_RUN = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]+")
#: Question and function words that say nothing about the answer.
STOP_WORDS = frozenset(
    [
        "a",
        "an",
        "the",
        "of",
        "to",
        "in",
        "on",
        "at",
        "by",
        "for",
        "from",
        "with",
        "about",
        "as",
        "into",
        "onto",
        "over",
        "under",
        "and",
        "or",
        "but",
        "not",
        "no",
        "nor",
        "is",
        "are",
        "was",
        "were",
        "be",
        "been",
        "being",
        "am",
        "do",
        "does",
        "did",
        "doing",
        "done",
        "have",
        "has",
        "had",
        "having",
        "what",
        "which",
        "who",
        "whom",
        "whose",
        "when",
        "where",
        "why",
        "how",
        "whats",
        "there",
        "here",
        "this",
        "that",
        "these",
        "those",
        "it",
        "its",
        "it's",
        "they",
        "them",
        "their",
        "he",
        "him",
        "his",
        "she",
        "her",
        "we",
        "us",
        "our",
        "you",
        "your",
        "i",
        "me",
        "my",
        "can",
        "could",
        "will",
        "would",
        "shall",
        "should",
        "may",
        "might",
        "must",
        "than",
        "then",
        "so",
        "if",
        "also",
        "any",
        "some",
        "much",
        "many",
        "more",
        "most",
        "such",
        "other",
        "only",
        "own",
        "same",
        "very",
        "just",
        "name",
        "named",
        "called",
        "one",
    ]
)
#: Chinese question words and particles (as bigrams: they never name the answer).
STOP_BIGRAMS = frozenset(
    [
        "什么",
        "是什",
        "么时",
        "时候",
        "哪里",
        "哪个",
        "哪些",
        "哪位",
        "哪一",
        "哪年",
        "多少",
        "为什",
        "怎么",
        "怎样",
        "如何",
        "谁是",
        "是谁",
        "几个",
        "是哪",
        "的是",
        "了什",
        "有哪",
        "有什",
        "在哪",
        "位于",
        "属于",
        "是多",
        "叫什",
        "称为",
        "被称",
        "之一",
    ]
)
#: Clause punctuation an over-long sentence is cut at (kept with the clause before).
_CLAUSE_END = re.compile(r"(?<=[；;：:，,、])")


@dataclass(frozen=True)
class Passage:
    """A retrieved chunk: its text and where that text starts in its document."""

    number: int  # the source's [n] in the answer (1-based, retrieval order)
    document_id: str
    text: str
    start_offset: int


@dataclass(frozen=True)
class Candidate:
    passage: Passage
    sentence: Sentence

    @property
    def text(self) -> str:
        return self.sentence.text

    @property
    def document_start(self) -> int:
        return self.passage.start_offset + self.sentence.start

    @property
    def document_end(self) -> int:
        return self.passage.start_offset + self.sentence.end


@dataclass(frozen=True)
class Budget:
    max_sentences: int = 3
    max_chars: int = 400
    #: A further sentence must score within this of the best one.
    max_score_drop: float = 0.5


@dataclass(frozen=True)
class Scored:
    candidate: Candidate
    score: float
    similarity: float


@dataclass(frozen=True)
class Selection:
    """The sentences of the answer in answer order, and the relevance signal."""

    chosen: list[Scored]
    relevance: float


def terms(text: str) -> list[str]:
    """Content terms: lower-cased Latin words and numbers without stop words (a
    final plural "s" dropped), and bigrams of Han characters."""
    lowered = text.lower()
    out = []
    for word in _LATIN_WORD.findall(lowered):
        if word in STOP_WORDS:
            continue
        plural = len(word) > 3 and word.endswith("s") and not word.endswith("ss")
        out.append(word[:-1] if plural else word)
    for run in _HAN_RUN.findall(text):
        if len(run) == 1:
            out.append(run)
        out.extend(
            run[i : i + 2] for i in range(len(run) - 1) if run[i : i + 2] not in STOP_BIGRAMS
        )
    return out


def _pieces(sentence: Sentence, max_chars: int) -> list[Sentence]:
    """A sentence longer than the whole budget, as runs of its clauses that fit."""
    if len(sentence.text) <= max_chars:
        return [sentence]
    out: list[Sentence] = []
    start = 0
    cuts = [m.start() for m in _CLAUSE_END.finditer(sentence.text)] + [len(sentence.text)]
    end = 0
    for cut in cuts:
        if cut - start > max_chars:
            if end > start:
                out.append(_sub(sentence, start, end))
                start = end
            if cut - start > max_chars:
                start = cut  # one clause alone is too long: never cut inside it
                end = cut
                continue
        end = cut
    if end > start:
        out.append(_sub(sentence, start, end))
    return [p for p in out if p.text]


def _sub(sentence: Sentence, start: int, end: int) -> Sentence:
    piece = sentence.text[start:end]
    lead = len(piece) - len(piece.lstrip())
    text = piece.strip()
    return Sentence(text, sentence.start + start + lead, sentence.start + start + lead + len(text))


#: Sentence-final (or clause-final) punctuation: a line without it may be a title.
_FINAL = '.!?。！？…:：;；)）"”」』'
#: Words (a Han character counts half) under which an unpunctuated line is a title.
TITLE_MAX_WORDS = 6


def heading_like(text: str) -> bool:
    """A heading or title rather than a sentence: a Markdown heading, or a short
    line that does not end like a sentence ("Who made ragmesh", "向量检索简介"). It
    names the subject without saying anything about it: it echoes the question
    and answers nothing."""
    if text.startswith("#"):
        return True
    if text[-1] in _FINAL:
        return False
    words = len(_LATIN_WORD.findall(text.lower())) + len("".join(_HAN_RUN.findall(text))) / 2
    return words <= TITLE_MAX_WORDS


def candidates(passages: Sequence[Passage], max_chars: int) -> list[Candidate]:
    """Every sentence of the passages once, without headings and titles: a
    sentence seen in an earlier (better-ranked) passage — the same place of the
    same document in overlapping chunks, or the same words anywhere — is not
    repeated."""
    seen_places: set[tuple[str, int]] = set()
    seen_texts: set[str] = set()
    out: list[Candidate] = []
    for passage in passages:
        for whole in split_sentences(passage.text):
            if heading_like(whole.text):
                continue
            for sentence in _pieces(whole, max_chars):
                cand = Candidate(passage, sentence)
                place = (passage.document_id, cand.document_start)
                key = " ".join(sentence.text.lower().split())
                if place in seen_places or key in seen_texts:
                    continue
                seen_places.add(place)
                seen_texts.add(key)
                out.append(cand)
    return out


def cosine(a: Sequence[float], b: Sequence[float]) -> float:
    dot = sum(x * y for x, y in zip(a, b, strict=True))
    na = math.sqrt(sum(x * x for x in a))
    nb = math.sqrt(sum(y * y for y in b))
    return dot / (na * nb) if na and nb else 0.0


def lexical_overlaps(question: str, texts: Sequence[str]) -> list[float]:
    """Each text's share of the question's terms, weighted by inverse document
    frequency among the texts (a term every candidate has tells nothing)."""
    q_terms = set(terms(question))
    if not q_terms or not texts:
        return [0.0] * len(texts)
    sets = [set(terms(t)) for t in texts]
    df = Counter(t for s in sets for t in s & q_terms)
    n = len(texts)
    idf = {t: math.log((n + 1) / (df[t] + 0.5)) for t in q_terms}
    total = sum(idf.values())
    if total <= 0:
        return [0.0] * len(texts)
    return [sum(idf[t] for t in s & q_terms) / total for s in sets]


def _similar(a: str, b: str) -> bool:
    """Near-duplicates: most of the shorter one's terms are in the other."""
    ta, tb = set(terms(a)), set(terms(b))
    if not ta or not tb:
        return a == b
    return len(ta & tb) / min(len(ta), len(tb)) >= 0.8


def select(
    question: str,
    question_vector: Sequence[float],
    cands: Sequence[Candidate],
    vectors: Sequence[Sequence[float]],
    budget: Budget,
) -> Selection:
    """The best sentences within the budget, in reading order: grouped by
    passage (the passage of the best sentence first), each passage's sentences
    in document order."""
    if not cands:
        return Selection([], 0.0)
    sims = [cosine(question_vector, v) for v in vectors]
    overlaps = lexical_overlaps(question, [c.text for c in cands])
    passages = list({c.passage.number: c.passage.text for c in cands}.items())
    by_passage = dict(
        zip(
            (n for n, _ in passages),
            lexical_overlaps(question, [text for _, text in passages]),
            strict=True,
        )
    )
    scored = sorted(
        (
            Scored(
                c,
                sim + LEXICAL_WEIGHT * lex + CONTEXT_WEIGHT * by_passage[c.passage.number],
                sim,
            )
            for c, sim, lex in zip(cands, sims, overlaps, strict=True)
        ),
        key=lambda s: -s.score,
    )
    best = scored[0].score
    chosen: list[Scored] = []
    chars = 0
    for s in scored:
        if len(chosen) >= budget.max_sentences:
            break
        if chosen and s.score < best - budget.max_score_drop:
            break
        if chars + len(s.candidate.text) > budget.max_chars:
            continue
        if any(_similar(s.candidate.text, c.candidate.text) for c in chosen):
            continue
        chosen.append(s)
        chars += len(s.candidate.text)
    rank: dict[int, int] = {}
    for s in chosen:
        rank.setdefault(s.candidate.passage.number, len(rank))
    chosen.sort(key=lambda s: (rank[s.candidate.passage.number], s.candidate.sentence.start))
    return Selection(chosen, max(sims))
