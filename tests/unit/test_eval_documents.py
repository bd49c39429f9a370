"""The documents layout of `ragmesh eval` and the real-world set in eval/realworld:
the loader, the chunk-level metrics, and the set itself (each passage is in its
document's normalised text, on the page the question names)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ragmesh.eval_data import DatasetError, load_dataset
from ragmesh.eval_metrics import ChunkHit, Scoreboard, normalize_answer
from services.chunking.chunker import Chunker, ChunkRequest, load_counter
from services.chunking.config import ChunkingSettings
from services.chunking.pages import PageMap

REALWORLD = Path(__file__).resolve().parents[2] / "eval" / "realworld"


def test_the_set_loads_with_licences_beside_its_documents() -> None:
    data = load_dataset(REALWORLD)
    assert data.layout == "documents" and not data.passages
    assert len(data.files) >= 10 and len(data.questions) >= 20
    assert {f.doc_id for f in data.files} >= {"libtasn1.pdf", "nettle.pdf", "bzip2-manual.pdf"}
    licences = {p.name for p in (REALWORLD / "licenses").iterdir()}
    for prefix in ("libtasn1", "nettle", "bzip2-manual", "sqlite"):
        assert any(name.startswith(prefix) for name in licences)
    sampled = data.sample(limit=3, max_docs=4, seed=1)
    assert len(sampled.questions) == 3 and len(sampled.files) <= max(4, 3)


def test_every_passage_is_on_its_page() -> None:
    data = load_dataset(REALWORLD)
    settings = ChunkingSettings()
    chunker = Chunker(settings, load_counter(settings))
    docs = {}
    for f in data.files:
        if any(q.grades.get(f.doc_id) for q in data.questions):
            result = chunker.chunk(ChunkRequest(content=f.path.read_bytes(), file_name=f.doc_id))
            docs[f.doc_id] = result
    for q in data.questions:
        result = docs[next(iter(q.grades))]
        gold = normalize_answer(q.passage)
        assert gold in normalize_answer(result.text), q.question_id
        if q.page:
            span = next(s for s in result.pages if s.number == q.page)
            page_text = normalize_answer(result.text[span.start : span.end])
            assert gold in page_text, f"{q.question_id}: not on page {q.page}"
            assert span.label == q.page_label, q.question_id
            holding = [c for c in result.chunks if gold in normalize_answer(c.text)]
            assert holding, f"{q.question_id}: the passage is cut between chunks"
            for chunk in holding:  # every chunk that holds the passage cites its page
                where = PageMap(result.pages).range(chunk.start, chunk.end)
                assert where.start <= q.page <= where.end, q.question_id


def test_chunk_metrics() -> None:
    board = Scoreboard()
    hits = [
        ChunkHit("a.pdf", "the index: foo 22", 30, 30),
        ChunkHit("a.pdf", "Foo does\nthe thing.", 25, 26),
        ChunkHit("b.html", "Foo does the thing."),
    ]
    score = board.add_retrieval("q1", ["a.pdf", "b.html"], {"a.pdf": 1.0})
    board.add_chunks(score, hits, "a.pdf", "foo does the thing", 26)
    assert (score.passage_rank, score.page_rank) == (2, 2)
    assert (score.passage_chunks, score.passage_chunks_on_page) == (1, 1)
    other = board.add_retrieval("q2", ["b.html"], {"b.html": 1.0})
    board.add_chunks(other, hits, "b.html", "nothing like this", 0)
    summary = board.summary()
    assert summary["passage_recall@1"] == 0.0 and summary["passage_recall@5"] == 0.5
    assert summary["page_questions"] == 1 and summary["page_recall@1"] == 0.0
    assert summary["page_recall@5"] == 1.0 and summary["passage_pages_correct"] == 1.0


def test_questions_must_name_a_document(tmp_path: Path) -> None:
    (tmp_path / "documents").mkdir()
    (tmp_path / "documents" / "a.txt").write_text("hello")
    (tmp_path / "questions.jsonl").write_text(
        json.dumps({"id": "q", "question": "hi?", "document": "b.txt", "passage": "x"}) + "\n"
    )
    with pytest.raises(DatasetError, match="not in documents"):
        load_dataset(tmp_path)


def test_sdk_names_the_pages_of_a_citation() -> None:
    from ragmesh.client import location_text, pages_text
    from ragmesh.common.v1 import common_pb2

    one = common_pb2.Citation(
        start_offset=5, end_offset=9, page_start=25, page_end=25, page_label="22"
    )
    two = common_pb2.Citation(page_start=25, page_end=26, page_label="22–23")
    bare = common_pb2.Citation(page_start=3, page_end=4)  # no label: physical numbers
    assert pages_text(one) == "p. 22" and location_text(one) == "p. 22, chars 5–9"
    assert pages_text(two) == "pp. 22–23" and pages_text(bare) == "pp. 3–4"
    assert pages_text(common_pb2.Citation()) == ""
    assert location_text(common_pb2.Citation(start_offset=1, end_offset=2)) == "chars 1–2"
