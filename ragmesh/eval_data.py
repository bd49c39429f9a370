"""Evaluation data sets for `ragmesh eval` (reading only, no I/O beyond the files).

Three layouts:
- QA (like cmrc2018-trial, squad2): `corpus.jsonl` ({id, title, text}) and
  `qa.jsonl` ({id, question, answers: [...], doc_id}).
- BEIR: `corpus.jsonl`, `queries.jsonl` ({_id or id, text}) and graded
  judgements in `qrels.tsv` or `qrels/test.tsv` (query id, doc id, score; an
  optional header line). Grade 0 marks a judged non-relevant document.
- Documents (like eval/realworld): real files in `documents/` (PDF, HTML, Word,
  ..., uploaded as they are) and `questions.jsonl` ({id, question, document: a
  file name in documents/, passage: a short quote of the text that answers it,
  page: the physical page (1-based) the passage is on, page_label: how the
  document numbers that page}). Scored at the chunk level as well: the rank of
  the first chunk that contains the passage, and of the first chunk of the right
  document whose pages include the page.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar


class DatasetError(ValueError):
    """The folder is not a data set ragmesh eval can read (the message says why)."""


@dataclass
class Passage:
    doc_id: str
    title: str
    text: str

    def as_document(self) -> str:
        return f"{self.title}\n\n{self.text}" if self.title else self.text


@dataclass
class Question:
    question_id: str
    text: str
    grades: dict[str, float]  # doc id → relevance grade (> 0 relevant)
    answers: list[str] = field(default_factory=list)
    #: documents layout: a quote of the answering text, its physical page and page label
    passage: str = ""
    page: int = 0
    page_label: str = ""
    #: False for a question its passage cannot answer (SQuAD 2.0): it should abstain
    answerable: bool = True


@dataclass
class DocumentFile:
    """A file of a documents-layout data set, uploaded as it is."""

    doc_id: str  # its file name
    path: Path


@dataclass
class Dataset:
    name: str
    layout: str  # "qa", "beir" or "documents"
    passages: list[Passage]
    questions: list[Question]
    #: questions left out because their text is empty (a search refuses them)
    skipped_questions: list[str] = field(default_factory=list)
    #: the documents layout's files (its `passages` is empty)
    files: list[DocumentFile] = field(default_factory=list)

    @property
    def graded(self) -> bool:
        return self.layout == "beir"

    def language(self) -> str:
        """`chinese` when most corpus characters are CJK ideographs, else `english`."""
        sample = "".join(p.text for p in self.passages[:50])[:20000]
        if not sample:
            return "english"
        cjk = sum(1 for ch in sample if "\u4e00" <= ch <= "\u9fff")
        return "chinese" if cjk > 0.3 * len(sample) else "english"

    def sample(self, limit: int | None, max_docs: int | None, seed: int = 0) -> Dataset:
        """`limit` questions drawn at random (seeded); with `max_docs`, a corpus cut to
        the gold documents of those questions plus random distractors up to max_docs."""
        rng = random.Random(seed)
        questions = list(self.questions)
        if limit is not None and limit < len(questions):
            questions = rng.sample(questions, limit)
        gold = {d for q in questions for d, g in q.grades.items() if g > 0}
        return Dataset(
            self.name,
            self.layout,
            _cut(self.passages, gold, max_docs, rng),
            questions,
            self.skipped_questions,
            _cut(self.files, gold, max_docs, rng),
        )


Item = TypeVar("Item", Passage, DocumentFile)


def _cut(items: list[Item], gold: set[str], max_docs: int | None, rng: random.Random) -> list[Item]:
    """The gold items plus random others up to max_docs (all of them without a limit)."""
    if max_docs is None or max_docs >= len(items):
        return items
    keep = [p for p in items if p.doc_id in gold]
    others = [p for p in items if p.doc_id not in gold]
    rng.shuffle(others)
    return keep + others[: max(0, max_docs - len(keep))]


DOC_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


def document_id_of(doc_id: str) -> str:
    """A gateway-safe document id for a corpus id (most are already safe)."""
    if DOC_ID_RE.match(doc_id):
        return doc_id
    safe = re.sub(r"[^A-Za-z0-9._-]+", "-", doc_id).strip("-._")[:100] or "doc"
    return f"{safe}-{hashlib.sha256(doc_id.encode()).hexdigest()[:10]}"


def _jsonl(path: Path) -> Iterator[dict[str, Any]]:
    with path.open(encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except ValueError as exc:
                raise DatasetError(f"{path}:{lineno}: not JSON ({exc})") from exc
            if not isinstance(row, dict):
                raise DatasetError(f"{path}:{lineno}: expected a JSON object")
            yield row


def _id(row: dict[str, Any], path: Path) -> str:
    value = row.get("_id", row.get("id"))
    if value is None or str(value) == "":
        raise DatasetError(f"{path}: a row without `id`/`_id`")
    return str(value)


def read_corpus(path: Path) -> list[Passage]:
    passages = [
        Passage(_id(row, path), str(row.get("title") or ""), str(row.get("text") or ""))
        for row in _jsonl(path)
    ]
    if not passages:
        raise DatasetError(f"{path} has no passages")
    return passages


def read_qrels(path: Path) -> dict[str, dict[str, float]]:
    qrels: dict[str, dict[str, float]] = {}
    with path.open(encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, start=1):
            parts = line.strip().split()
            if not parts:
                continue
            if len(parts) == 4:  # TREC format: qid iter docid grade
                parts = [parts[0], parts[2], parts[3]]
            if len(parts) != 3:
                raise DatasetError(f"{path}:{lineno}: expected `query doc score`")
            try:
                grade = float(parts[2])
            except ValueError:
                if lineno == 1:
                    continue  # header: query-id corpus-id score
                raise DatasetError(f"{path}:{lineno}: score {parts[2]!r} is not a number") from None
            qrels.setdefault(parts[0], {})[parts[1]] = grade
    return qrels


def load_documents(folder: Path) -> Dataset:
    """The documents layout: documents/ and questions.jsonl."""
    docs = folder / "documents"
    files = sorted(
        (DocumentFile(p.name, p) for p in docs.iterdir() if p.is_file() and p.name[0] != "."),
        key=lambda f: f.doc_id,
    )
    if not files:
        raise DatasetError(f"{docs} holds no documents")
    names = {f.doc_id for f in files}
    path = folder / "questions.jsonl"
    questions: list[Question] = []
    skipped: list[str] = []
    for row in _jsonl(path):
        qid = _id(row, path)
        document = str(row.get("document") or "")
        if document not in names:
            raise DatasetError(f"{path}: question {qid} names {document!r}, not in documents/")
        if not str(row.get("question") or "").strip():
            skipped.append(qid)
            continue
        questions.append(
            Question(
                qid,
                str(row["question"]),
                {document: 1.0},
                [str(a) for a in row.get("answers") or [] if str(a).strip()],
                passage=str(row.get("passage") or ""),
                page=int(row.get("page") or 0),
                page_label=str(row.get("page_label") or ""),
            )
        )
    if not questions:
        raise DatasetError(f"{path} has no questions")
    return Dataset(folder.name, "documents", [], questions, skipped, files)


def _load_qa(folder: Path, passages: list[Passage], qa: Path) -> Dataset:
    questions = []
    skipped = []
    for row in _jsonl(qa):
        if "question" not in row or "doc_id" not in row:
            raise DatasetError(f"{qa}: rows need `question` and `doc_id`")
        if not str(row["question"]).strip():
            skipped.append(_id(row, qa))
            continue
        answers = row.get("answers") or []
        questions.append(
            Question(
                _id(row, qa),
                str(row["question"]),
                {str(row["doc_id"]): 1.0},
                [str(a) for a in answers if str(a).strip()],
                answerable=bool(row.get("answerable", True)),
            )
        )
    return Dataset(folder.name, "qa", passages, questions, skipped)


def load_dataset(folder: Path) -> Dataset:
    if not folder.is_dir():
        raise DatasetError(f"{folder} is not a folder")
    if (folder / "questions.jsonl").is_file() and (folder / "documents").is_dir():
        return load_documents(folder)
    corpus = folder / "corpus.jsonl"
    if not corpus.is_file():
        raise DatasetError(f"{folder} has no corpus.jsonl")
    passages = read_corpus(corpus)
    qa = folder / "qa.jsonl"
    if qa.is_file():
        return _load_qa(folder, passages, qa)
    queries = folder / "queries.jsonl"
    qrels_path = next(
        (p for p in (folder / "qrels.tsv", folder / "qrels" / "test.tsv") if p.is_file()), None
    )
    if not queries.is_file() or qrels_path is None:
        raise DatasetError(
            f"{folder}: expected qa.jsonl, or queries.jsonl with qrels.tsv or qrels/test.tsv"
        )
    qrels = read_qrels(qrels_path)
    questions = []
    skipped = []
    for row in _jsonl(queries):
        qid = _id(row, queries)
        if not str(row.get("text") or "").strip():
            skipped.append(qid)
            continue
        grades = qrels.get(qid)
        # BEIR scores only queries with at least one relevant judgement.
        if grades and any(g > 0 for g in grades.values()):
            questions.append(Question(qid, str(row.get("text") or ""), grades))
    if not questions:
        raise DatasetError(f"{folder}: no query has a relevant document in {qrels_path.name}")
    return Dataset(folder.name, "beir", passages, questions, skipped)
