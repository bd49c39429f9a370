"""Metrics and data-set reading of `ragmesh eval`."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest

from ragmesh.eval_data import DatasetError, document_id_of, load_dataset
from ragmesh.eval_metrics import (
    Scoreboard,
    answer_contains,
    mrr_at_k,
    ndcg_at_k,
    ranked_documents,
    recall_at_k,
)


def test_ranked_documents_keeps_first_rank() -> None:
    assert ranked_documents(["a", "b", "a", "c", "b"]) == ["a", "b", "c"]


def test_recall_and_mrr() -> None:
    ranked = ["x", "y", "gold", "z"]
    assert recall_at_k(ranked, ["gold"], 1) == 0.0
    assert recall_at_k(ranked, ["gold"], 3) == 1.0
    assert recall_at_k(ranked, ["gold", "missing"], 10) == 0.5
    assert recall_at_k(ranked, [], 10) == 0.0
    assert mrr_at_k(ranked, ["gold"], 10) == pytest.approx(1 / 3)
    assert mrr_at_k(ranked, ["gold"], 2) == 0.0
    assert mrr_at_k(ranked, ["y", "gold"], 10) == 0.5


def test_ndcg_linear_gains() -> None:
    grades = {"a": 3.0, "b": 1.0, "c": 0.0}
    assert ndcg_at_k(["a", "b"], grades, 10) == pytest.approx(1.0)
    # b first, then a: DCG = 1/1 + 3/log2(3); ideal = 3/1 + 1/log2(3)
    expected = (1 + 3 / math.log2(3)) / (3 + 1 / math.log2(3))
    assert ndcg_at_k(["b", "a"], grades, 10) == pytest.approx(expected)
    assert ndcg_at_k(["c", "zz"], grades, 10) == 0.0
    assert ndcg_at_k(["x"], {"x": 0.0}, 10) == 0.0
    # Cut at k: a relevant document at rank 3 does not count for k = 2.
    assert ndcg_at_k(["x", "y", "a"], grades, 2) == 0.0


@pytest.mark.parametrize(
    ("answer", "golds", "hit"),
    [
        ("生命数耗完即算为「踢爆」。", ["踢爆"], True),
        ("The answer is RNA  interference.", ["RNA interference"], True),
        ("the answer is rna-interference", ["RNA interference"], True),
        ("I do not know.", ["RNA interference"], False),
        ("", ["x"], False),
        ("anything", ["", "  "], False),
    ],
)
def test_answer_contains(answer: str, golds: list[str], hit: bool) -> None:
    assert answer_contains(answer, golds) is hit


def test_scoreboard_summary() -> None:
    board = Scoreboard(graded=True)
    board.add_retrieval("q1", ["d1", "d2"], {"d1": 2.0})
    s2 = board.add_retrieval("q2", ["d3", "d1"], {"d1": 1.0, "d9": 0.0})
    s2.answer_hit = True
    summary = board.summary()
    assert summary["questions"] == 2
    assert summary["recall@1"] == 0.5
    assert summary["recall@5"] == 1.0
    assert summary["mrr@10"] == pytest.approx(0.75)
    assert summary["ndcg@10"] == pytest.approx((1 + 1 / math.log2(3)) / 2)
    assert summary["answers_scored"] == 1
    assert summary["answer_contains_gold"] == 1.0
    assert "ndcg@10" not in Scoreboard().summary()


def _write_jsonl(path: Path, rows: list[dict[str, Any]]) -> None:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))


def test_load_qa_layout_and_sample(tmp_path: Path) -> None:
    _write_jsonl(
        tmp_path / "corpus.jsonl",
        [{"id": f"D{i}", "title": f"T{i}", "text": "中文内容。" * 20} for i in range(10)],
    )
    _write_jsonl(
        tmp_path / "qa.jsonl",
        [
            *[
                {"id": f"Q{i}", "question": "问?", "answers": ["内容"], "doc_id": f"D{i}"}
                for i in range(10)
            ],
            # cmrc2018-trial has questions with empty text: a search refuses them.
            {"id": "Q-empty", "question": " ", "answers": ["x"], "doc_id": "D0"},
        ],
    )
    data = load_dataset(tmp_path)
    assert data.layout == "qa" and not data.graded
    assert len(data.questions) == 10
    assert data.skipped_questions == ["Q-empty"]
    assert data.language() == "chinese"
    assert data.passages[0].as_document().startswith("T0\n\n中文")
    small = data.sample(limit=3, max_docs=5, seed=1)
    assert len(small.questions) == 3
    assert len(small.passages) == 5
    gold = {d for q in small.questions for d in q.grades}
    assert gold <= {p.doc_id for p in small.passages}
    assert data.sample(limit=3, max_docs=None, seed=1).questions == small.questions


def test_load_beir_layout_with_header_and_fillers(tmp_path: Path) -> None:
    _write_jsonl(
        tmp_path / "corpus.jsonl",
        [{"_id": "1", "title": "", "text": "wing lift"}, {"_id": "2", "text": "heat"}],
    )
    _write_jsonl(
        tmp_path / "queries.jsonl",
        [
            {"_id": "q1", "text": "lift?"},
            {"_id": "q2", "text": "no judgements"},
            {"_id": "q3", "text": "only fillers"},
        ],
    )
    (tmp_path / "qrels").mkdir()
    (tmp_path / "qrels" / "test.tsv").write_text(
        "query-id\tcorpus-id\tscore\nq1\t1\t4\nq1\t2\t0\nq3\t2\t0\n"
    )
    data = load_dataset(tmp_path)
    assert data.layout == "beir" and data.graded
    assert data.language() == "english"
    assert [q.question_id for q in data.questions] == ["q1"]
    assert data.questions[0].grades == {"1": 4.0, "2": 0.0}


def test_shared_cranfield_qrels_without_header(shared_data: Path) -> None:
    data = load_dataset(shared_data / "cranfield")
    assert data.layout == "beir"
    assert len(data.passages) == 1400
    assert 200 <= len(data.questions) <= 225


def test_dataset_errors(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match=r"no corpus\.jsonl"):
        load_dataset(tmp_path)
    (tmp_path / "corpus.jsonl").write_text('{"id": "a", "text": "x"}\n')
    with pytest.raises(DatasetError, match=r"expected qa\.jsonl, or queries\.jsonl"):
        load_dataset(tmp_path)
    (tmp_path / "qa.jsonl").write_text("not json\n")
    with pytest.raises(DatasetError, match=r"qa.jsonl:1: not JSON"):
        load_dataset(tmp_path)


def test_document_id_of() -> None:
    assert document_id_of("TRIAL_800") == "TRIAL_800"
    odd = document_id_of("a/b c")
    assert odd.startswith("a-b-c-")
    assert odd == document_id_of("a/b c")


def test_metrics_reproduce_the_published_bm25_reference(shared_data: Path) -> None:
    """../shared/data/README.md: BM25 (bm25s) nDCG@10 0.352 and recall@100 0.709 on
    Cranfield; recall@1 / MRR@10 0.929 / 0.953 on squad2-sample-a."""
    from benchmarks.bench_eval import bm25_baseline

    cranfield = bm25_baseline(load_dataset(shared_data / "cranfield"))
    assert cranfield["ndcg@10"] == pytest.approx(0.352, abs=0.002)
    assert cranfield["recall@100"] == pytest.approx(0.709, abs=0.002)
    squad = bm25_baseline(load_dataset(shared_data / "squad2-sample-a"))
    assert squad["recall@1"] == pytest.approx(0.929, abs=0.002)
    assert squad["mrr@10"] == pytest.approx(0.953, abs=0.002)
