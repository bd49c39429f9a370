"""`ragmesh eval` end to end (issue 6): the whole stack started by the launcher
(`make run`), every passage uploaded through the gateway and ingested by the
Celery worker, every question searched through the gateway (hybrid by
default), a seeded sample answered by the local LLM. Baseline measured in the
same run: BM25 (bm25s; jieba tokens for Chinese, English stop words otherwise)
over whole passages, no chunking — the reference of ../shared/data/README.md.

The real-world set in the repository (eval/realworld: PDF manuals and HTML pages,
uploaded as files) is scored by passage and page as well, without a BM25 baseline
(it has no passages to index whole; benchmarks/bench_documents.py compares it with
the previous parsers).

`python -m benchmarks.run eval`. RAGMESH_BENCH_EVAL_DATASETS (default
`cmrc2018-trial,squad2-sample-a,cranfield,realworld`), RAGMESH_BENCH_EVAL_LIMIT (questions
per data set, default all), RAGMESH_BENCH_EVAL_ANSWERS (answered questions per
QA data set, default 100) and RAGMESH_BENCH_EVAL_MAX_DOCS (corpus cut) scale it
down for a quick check.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from devstack.launched import REPO, LaunchedStack
from ragmesh.eval_data import Dataset, load_dataset
from ragmesh.eval_metrics import Scoreboard

DATA = Path(os.environ.get("RAGMESH_SHARED_DATA", REPO.parent / "shared" / "data"))
DEFAULT_DATASETS = "cmrc2018-trial,squad2-sample-a,cranfield,realworld"


def data_dir(name: str) -> Path:
    """A data set in the repository's eval/ folder, else in the shared data."""
    own = REPO / "eval" / name
    return own if own.is_dir() else DATA / name


def bm25_baseline(data: Dataset) -> dict[str, Any]:
    import bm25s

    chinese = data.language() == "chinese"
    if chinese:
        import jieba

        def tokens(texts: list[str]) -> list[list[str]]:
            return [[t for t in jieba.lcut(text) if t.strip()] for text in texts]

        corpus_tokens: Any = tokens([p.as_document() for p in data.passages])
        query_tokens: Any = tokens([q.text for q in data.questions])
    else:
        corpus_tokens = bm25s.tokenize(
            [p.as_document() for p in data.passages], stopwords="en", show_progress=False
        )
        query_tokens = bm25s.tokenize(
            [q.text for q in data.questions], stopwords="en", show_progress=False
        )
    retriever = bm25s.BM25()
    retriever.index(corpus_tokens, show_progress=False)
    k = min(100, len(data.passages))
    board = Scoreboard(graded=data.graded)
    ids = [p.doc_id for p in data.passages]
    for i, question in enumerate(data.questions):
        query = (
            query_tokens[i]
            if chinese
            else bm25s.tokenization.Tokenized(ids=[query_tokens.ids[i]], vocab=query_tokens.vocab)
        )
        if chinese and not query:
            board.add_retrieval(question.question_id, [], question.grades)
            continue
        docs, _scores = retriever.retrieve([query] if chinese else query, k=k, show_progress=False)
        board.add_retrieval(question.question_id, [ids[int(d)] for d in docs[0]], question.grades)
    return board.summary()


def _eval(stack: LaunchedStack, name: str, limit: str, answers: str, out: Path) -> dict[str, Any]:
    args = [sys.executable, "-m", "ragmesh.cli", "eval", str(data_dir(name)), "--json", str(out)]
    if limit:
        args += ["--limit", limit]
    max_docs = os.environ.get("RAGMESH_BENCH_EVAL_MAX_DOCS", "")
    if max_docs:  # a quick check only: an easier, smaller corpus
        args += ["--max-docs", max_docs]
    data = load_dataset(data_dir(name))
    if data.layout in ("beir", "documents") or answers == "0":
        args.append("--retrieval-only")
    else:
        # The LLM's answers, as before answer modes (verbatim ones: bench_answers.py).
        args += ["--answer-limit", answers, "--answer-mode", "generative"]
    done = subprocess.run(
        args,
        cwd=REPO,
        env=stack.cli_env(),
        capture_output=True,
        text=True,
        timeout=6 * 3600,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(
            f"ragmesh eval {name} exited {done.returncode}:\n{done.stderr[-3000:]}"
            f"\n{done.stdout[-3000:]}"
        )
    return dict(json.loads(out.read_text()))


def _f(x: Any) -> str:
    return "–" if x is None else (f"{x:.3f}" if isinstance(x, float) else str(x))


def run() -> str:
    names = os.environ.get("RAGMESH_BENCH_EVAL_DATASETS", DEFAULT_DATASETS).split(",")
    limit = os.environ.get("RAGMESH_BENCH_EVAL_LIMIT", "")
    answers = os.environ.get("RAGMESH_BENCH_EVAL_ANSWERS", "100")
    rows = []
    with tempfile.TemporaryDirectory(prefix="ragmesh-bench-eval-") as tmp:
        stack = LaunchedStack(Path(tmp), demo=False).start()
        try:
            stack.wait_for_line(r"^ragmesh is up\.$", timeout=900)
            for name in names:
                report = _eval(stack, name, limit, answers, Path(tmp) / f"{name}.json")
                max_docs = os.environ.get("RAGMESH_BENCH_EVAL_MAX_DOCS", "")
                data = load_dataset(data_dir(name)).sample(
                    int(limit) if limit else None, int(max_docs) if max_docs else None
                )
                rows.append((name, report, bm25_baseline(data) if data.passages else None))
        finally:
            stack.stop()
            stack.kill_leftovers()
    lines = [
        "## Evaluation through the gateway (`ragmesh eval`)",
        "",
        "The whole local stack (launcher), hybrid search by default, top 10 chunks (top 50 for "
        "BEIR: the gateway's top_k limit) mapped to documents; answers by SmolLM2-135M on a "
        f"seeded sample of {answers} questions per QA data set. Baseline: BM25 (bm25s) over "
        "whole passages, in the same run.",
        "",
        "| data set | questions | recall@1 | recall@5 | recall@10 | MRR@10 | nDCG@10 | "
        "recall@100 | answers with gold | ingest docs/s | search p50 ms |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, report, base in rows:
        m, t = report["metrics"], report["timings"]
        lines.append(
            f"| {name} | {m['questions']} | {_f(m['recall@1'])} | {_f(m['recall@5'])} | "
            f"{_f(m['recall@10'])} | {_f(m['mrr@10'])} | {_f(m.get('ndcg@10'))} | "
            f"{_f(m.get('recall@100'))} | {_f(m.get('answer_contains_gold'))} "
            f"({m.get('answers_scored', 0)}) | {_f(report['ingest']['documents_per_s'])} | "
            f"{_f(t['search_ms_p50'])} |"
        )
        if base is None:  # documents layout: passages and pages
            lines.append(
                f"| ↳ passage recall@1 / @5 {_f(m.get('passage_recall@1'))} / "
                f"{_f(m.get('passage_recall@5'))}; page recall@1 / @5 "
                f"{_f(m.get('page_recall@1'))} / {_f(m.get('page_recall@5'))}; passage chunks "
                f"citing the right page {_f(m.get('passage_pages_correct'))} | | | | | | | | | | |"
            )
            continue
        lines.append(
            f"| ↳ BM25 baseline | {base['questions']} | {_f(base['recall@1'])} | "
            f"{_f(base['recall@5'])} | {_f(base['recall@10'])} | {_f(base['mrr@10'])} | "
            f"{_f(base.get('ndcg@10'))} | {_f(base.get('recall@100'))} | | | |"
        )
        ratio = m["mrr@10"] / base["mrr@10"] if base.get("mrr@10") else None
        lines.append(f"| ↳ ratio MRR@10 vs baseline | | | | | {_f(ratio)} | | | | | |")
    return "\n".join(lines) + "\n"
