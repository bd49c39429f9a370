"""`ragmesh eval`: ingest a data set into a fresh knowledge base and score it."""

from __future__ import annotations

# Typer commands receive every option as a parameter.
import json
import random
import statistics
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from ragmesh.cli_common import (
    EXIT_FAILURES,
    EXIT_OK,
    EXIT_USAGE,
    AddrOption,
    ApiKeyOption,
    CaFileOption,
    Cli,
    TlsOption,
    examples,
    literal,
)
from ragmesh.client import InvalidArgumentError, RagmeshClient, RagmeshError
from ragmesh.client.builders import short_name
from ragmesh.client.bulk import IngestOutcome, Upload
from ragmesh.eval_answers import AnswerOutcome, abstention_curve, default_thresholds, summarize
from ragmesh.eval_data import Dataset, DatasetError, Question, document_id_of, load_dataset
from ragmesh.eval_metrics import (
    ChunkHit,
    Scoreboard,
    percentile,
    ranked_documents,
)
from ragmesh.gateway.v1.gateway_pb2 import AnswerMode

EVAL_EXAMPLES = examples(
    "ragmesh eval ../shared/data/cmrc2018-trial",
    "ragmesh eval ../shared/data/squad2-sample-a --limit 50 --json squad.json",
    "ragmesh eval ../shared/data/cranfield --retrieval-only --mode sparse",
    "ragmesh eval data/cmrc --limit 5 --max-docs 20 --retrieval-only   # a quick smoke run",
    "ragmesh eval eval/realworld --retrieval-only   # PDFs and HTML: passage and page recall",
)
SEARCH_MODES = ("dense", "sparse", "hybrid")
# A gateway refuses a top_k above its limit (RAGMESH_GATEWAY_MAX_TOP_K, 50 by default).
FALLBACK_TOP_K = 50


def _progress(cli: Cli) -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=cli.err,
        transient=True,
    )


def _ingest(
    cli: Cli, rag: RagmeshClient, kb: str, data: Dataset, concurrency: int
) -> dict[str, Any]:
    start = time.monotonic()
    uploads = [
        Upload(f.path, file_name=f.doc_id, document_id=document_id_of(f.doc_id))
        for f in data.files  # the documents layout: real files, uploaded as they are
    ]
    for passage in data.passages:
        doc_id = document_id_of(passage.doc_id)
        uploads.append(
            Upload(
                passage.as_document().encode(),
                file_name=f"{doc_id}.txt",
                document_id=doc_id,
                media_type="text/plain",
                metadata={"corpus_id": passage.doc_id},
            )
        )
    with _progress(cli) as progress:
        upload_task = progress.add_task("uploading passages", total=len(uploads))
        wait_task = progress.add_task("ingesting", total=len(uploads))
        counted: set[int] = set()

        def on_update(outcome: IngestOutcome) -> None:
            key = id(outcome)
            if key not in counted:
                counted.add(key)
                progress.advance(upload_task)
            if outcome.done and -key not in counted:
                counted.add(-key)
                progress.advance(wait_task)

        outcomes = rag.ingest_many(
            kb, uploads, concurrency=concurrency, timeout=7200, on_update=on_update
        )
    failures = [
        {
            "document": str((o.upload.metadata or {}).get("corpus_id", o.document_id)),
            "reason": o.error.reason if o.error else (o.job.error.reason if o.job else ""),
            "message": o.error.message if o.error else (o.job.error.message if o.job else ""),
        }
        for o in outcomes
        if not o.succeeded or o.error is not None
    ]
    jobs = [o.job for o in outcomes if o.job is not None]
    seconds = time.monotonic() - start
    return {
        "documents": len(uploads),
        "failed": len(failures),
        "failures": failures[:20],
        "chunks": sum(j.chunks_total for j in jobs),
        "seconds": round(seconds, 2),
        "documents_per_s": round(len(uploads) / seconds, 2) if seconds else None,
    }


def _score(board: Scoreboard, data: Dataset, results: list[list[ChunkHit]]) -> list[dict[str, Any]]:
    """Each question's retrieval scores (document ranks; chunk ranks for documents)."""
    details: list[dict[str, Any]] = []
    for question, hits in zip(data.questions, results, strict=True):
        ranked = ranked_documents(h.document for h in hits)
        score = board.add_retrieval(question.question_id, ranked, question.grades)
        detail: dict[str, Any] = {"id": question.question_id, "top_documents": ranked[:10]}
        if data.layout == "documents":
            gold = next(iter(question.grades))
            board.add_chunks(score, hits, gold, question.passage, question.page)
            detail.update(
                passage_rank=score.passage_rank,
                page_rank=score.page_rank,
                top_chunks=[
                    {"document": h.document, "pages": [h.page_start, h.page_end]} for h in hits[:5]
                ],
            )
        details.append(detail)
    return details


def _run_questions(
    cli: Cli,
    rag: RagmeshClient,
    kb: str,
    data: Dataset,
    top_k: int,
    mode: str | None,
    retrieval_only: bool,
    concurrency: int,
    answer_limit: int | None = None,
    seed: int = 0,
    answer_modes: Sequence[str] = ("",),
    by_mode: dict[str, list[AnswerOutcome]] | None = None,
) -> tuple[Scoreboard, dict[str, Any], list[dict[str, Any]]]:
    by_mode = {} if by_mode is None else by_mode
    board = Scoreboard(graded=data.graded)
    back = {document_id_of(p.doc_id): p.doc_id for p in data.passages}
    back.update({document_id_of(f.doc_id): f.doc_id for f in data.files})
    search_ms: list[float] = []
    ask_ms: list[float] = []
    details: list[dict[str, Any]] = []
    state = {"top_k": top_k}

    def search(question: Question) -> list[ChunkHit]:
        t0 = time.monotonic()
        try:
            resp = rag.search(kb, question.text, top_k=state["top_k"], mode=mode)
        except InvalidArgumentError:
            if state["top_k"] <= FALLBACK_TOP_K:
                raise
            state["top_k"] = FALLBACK_TOP_K
            resp = rag.search(kb, question.text, top_k=state["top_k"], mode=mode)
        search_ms.append((time.monotonic() - t0) * 1000)
        return [
            ChunkHit(back.get(h.document_id, h.document_id), h.text, h.page_start, h.page_end)
            for h in resp.hits
        ]

    answer_errors: list[str] = []

    def answer(question: Question, answer_mode: str) -> AnswerOutcome:
        t0 = time.monotonic()
        try:
            result = rag.ask_collect(kb, question.text, mode=mode, answer_mode=answer_mode or None)
        except RagmeshError as err:
            # One slow or failed answer must not void the whole evaluation: it counts as
            # an answer without the gold text, and the report says how many failed.
            answer_errors.append(f"{question.question_id}: {err}")
            return AnswerOutcome(question.question_id, question.answerable, question.answers, None)
        ask_ms.append((time.monotonic() - t0) * 1000)
        final = result.final
        return AnswerOutcome(
            question.question_id,
            question.answerable,
            question.answers,
            result.answer,
            abstained=result.abstained,
            citations=len(result.citations),
            relevance=final.relevance if final is not None else 0.0,
            mode=(
                short_name(AnswerMode, final.answer_mode)
                if final is not None and final.answer_mode
                else ""
            ),
        )

    with _progress(cli) as progress:
        task = progress.add_task("searching", total=len(data.questions))
        # One search first: it settles the top_k the gateway accepts.
        first = search(data.questions[0]) if data.questions else []

        def run_search(q: Question) -> list[ChunkHit]:
            try:
                return search(q)
            finally:
                progress.advance(task)

        progress.advance(task)
        with ThreadPoolExecutor(max_workers=concurrency) as pool:
            results = [first, *pool.map(run_search, data.questions[1:])]
        details.extend(_score(board, data, results))
        if not retrieval_only:
            positions = list(range(len(data.questions)))
            if answer_limit is not None and answer_limit < len(positions):
                positions = sorted(random.Random(seed).sample(positions, answer_limit))
            ask_task = progress.add_task("answering", total=len(positions) * len(answer_modes))

            def run_ask(i: int, answer_mode: str) -> AnswerOutcome:
                try:
                    return answer(data.questions[i], answer_mode)
                finally:
                    progress.advance(ask_task)

            # One answer at a time: the local llama.cpp server serves one request at a time,
            # and a second one waiting behind it only times out.
            for m_index, answer_mode in enumerate(answer_modes):
                outcomes = [run_ask(i, answer_mode) for i in positions]
                by_mode[answer_mode or "default"] = outcomes
                _record_answers(
                    board, data, details, positions, outcomes, answer_mode, first=m_index == 0
                )
    timings = {
        "top_k": state["top_k"],
        "search_ms_p50": (percentile(search_ms, 0.5) if search_ms else None),
        "search_ms_p99": (percentile(search_ms, 0.99) if search_ms else None),
        "search_ms_mean": statistics.fmean(search_ms) if search_ms else None,
        "ask_ms_p50": (percentile(ask_ms, 0.5) if ask_ms else None),
        "ask_ms_p99": (percentile(ask_ms, 0.99) if ask_ms else None),
        "answer_errors": len(answer_errors),
        "answer_error_examples": answer_errors[:5],
    }
    return board, timings, details


def _record_answers(
    board: Scoreboard,
    data: Dataset,
    details: list[dict[str, Any]],
    positions: list[int],
    outcomes: list[AnswerOutcome],
    answer_mode: str,
    *,
    first: bool,
) -> None:
    """Each question's answer in one mode in its details; the first mode's also
    in the retrieval scoreboard (`answer_contains_gold`, as before modes)."""
    for i, outcome in zip(positions, outcomes, strict=True):
        question, score = data.questions[i], board.scores[i]
        if first:
            if question.answers:
                score.answer_hit = outcome.contains_gold
            details[i]["answer"] = outcome.answer
            details[i]["answer_contains_gold"] = score.answer_hit
        details[i].setdefault("answers", {})[answer_mode or "default"] = {
            "answer": outcome.answer,
            "mode": outcome.mode,
            "abstained": outcome.abstained,
            "citations": outcome.citations,
            "relevance": round(outcome.relevance, 4),
            "answerable": outcome.answerable,
            "contains_gold": outcome.contains_gold,
        }


def eval_command(
    dataset: Annotated[
        Path, typer.Argument(help="Data set folder (QA, BEIR or documents layout).")
    ],
    kb: Annotated[
        str | None,
        typer.Option("--kb", "-k", help="Knowledge base to create (default eval-NAME-TIME)."),
    ] = None,
    limit: Annotated[int | None, typer.Option(help="Sample this many questions (seeded).")] = None,
    max_docs: Annotated[
        int | None,
        typer.Option(
            help="Cut the corpus to the sampled questions' gold documents plus random "
            "others up to this many (faster; easier than the full corpus)."
        ),
    ] = None,
    seed: Annotated[int, typer.Option(help="Seed of --limit and --max-docs sampling.")] = 0,
    retrieval_only: Annotated[
        bool, typer.Option("--retrieval-only", help="Skip the answers (no LLM).")
    ] = False,
    mode: Annotated[
        str | None,
        typer.Option(
            help="dense, sparse or hybrid (default: the server's); several, comma-separated, "
            "score each on the same ingestion (answers use the first)."
        ),
    ] = None,
    top_k: Annotated[
        int | None,
        typer.Option(
            "--top-k",
            help="Chunks retrieved per question (10; 100 for BEIR data "
            "sets, capped by the gateway's limit).",
        ),
    ] = None,
    json_file: Annotated[
        Path | None, typer.Option("--json", help="Also write the figures to this JSON file.")
    ] = None,
    keep: Annotated[
        bool, typer.Option("--keep", help="Keep the knowledge base afterwards.")
    ] = False,
    answer_limit: Annotated[
        int | None,
        typer.Option(help="Ask only this many of the questions (seeded sample); all are searched."),
    ] = None,
    concurrency: Annotated[int, typer.Option(help="Parallel uploads and searches.")] = 4,
    answer_mode: Annotated[
        str,
        typer.Option(
            "--answer-mode",
            help="Answer modes to score, comma-separated: verbatim, generative, auto "
            "(default: the knowledge base's, auto).",
        ),
    ] = "",
    model: Annotated[
        str,
        typer.Option(
            help="Embedding model of the knowledge base (multilingual, minilm or a served "
            "name); default: the server's choice for the data set's language."
        ),
    ] = "",
    addr: AddrOption = None,
    api_key: ApiKeyOption = None,
    tls: TlsOption = None,
    ca_file: CaFileOption = None,
) -> None:
    """Score retrieval and answers on a data set (recall, MRR, nDCG).

    Reports recall@1/5/10 and MRR@10 of the gold documents (plus nDCG@10 and recall@100 for BEIR data sets, and passage and page recall@1/5 for the documents layout) and the share of answers containing a gold answer.

    DATASET is a folder with corpus.jsonl + qa.jsonl ({question, answers, doc_id}), or BEIR's corpus.jsonl + queries.jsonl + qrels.tsv (or qrels/test.tsv), or documents/ (real files) + questions.jsonl ({question, document, passage, page, page_label}). Every passage or file becomes one document of a fresh knowledge base, deleted at the end unless --keep.
    """  # noqa: E501 - one line per paragraph: Typer's rich help keeps line breaks
    cli = Cli.create(addr, api_key, tls=tls, ca_file=ca_file)
    full = _load(dataset)
    if isinstance(full, str):
        cli.fail(full, EXIT_USAGE)
        return
    data = full.sample(limit, max_docs, seed)
    if not data.questions:
        cli.fail("the data set has no questions")
    modes = search_modes(mode)
    if isinstance(modes, str):
        cli.fail(modes, EXIT_USAGE)
        return
    if json_file is not None and (problem := _unwritable(json_file)):
        # Before the run, not after it: an evaluation takes minutes to hours.
        cli.fail(f"cannot write {json_file}: {problem}", EXIT_USAGE)
    language = data.language()
    stamp = datetime.now(UTC).strftime("%Y%m%d%H%M%S")
    kb_id = kb or f"eval-{''.join(c if c.isalnum() else '-' for c in data.name.lower())}-{stamp}"
    kb_id = kb_id[:63]
    k = top_k or (100 if data.graded else 10)
    cli.err.print(
        f"{literal(data.name)}: {len(data.passages) or len(data.files)} "
        f"{'passages' if data.passages else 'documents'}, {len(data.questions)} questions "
        f"({data.layout}, {language}) → knowledge base {literal(kb_id)}"
    )
    if full.skipped_questions:
        cli.err.print(
            f"left out {len(full.skipped_questions)} questions with empty text: "
            f"{literal(', '.join(full.skipped_questions[:5]))}"
        )
    report: dict[str, Any] = {
        "dataset": str(dataset),
        "layout": data.layout,
        "knowledge_base_id": kb_id,
        "language": language,
        "mode": modes[0] or "default",
        "questions": len(data.questions),
        "questions_skipped_empty": full.skipped_questions,
        "limit": limit,
        "max_docs": max_docs,
        "seed": seed,
        "retrieval_only": retrieval_only,
    }
    created = False
    by_mode: dict[str, list[AnswerOutcome]] = {}
    metrics_by_mode: dict[str, dict[str, Any]] = {}
    timings_by_mode: dict[str, dict[str, Any]] = {}
    with cli.errors(), cli.client(timeout=120) as rag:
        try:
            made = rag.create_knowledge_base(
                kb_id, language=language, description=f"ragmesh eval of {data.name}", model=model
            )
            created = True
            report["embedding_model"] = made.embedding_model
            report["ingest"] = _ingest(cli, rag, kb_id, data, concurrency)
            board, timings, details = _run_questions(
                cli,
                rag,
                kb_id,
                data,
                k,
                modes[0],
                retrieval_only,
                concurrency,
                answer_limit,
                seed,
                answer_modes=[m.strip() for m in answer_mode.split(",")] or [""],
                by_mode=by_mode,
            )
            # Further search modes on the same knowledge base: retrieval only, so the
            # modes differ in nothing but how the chunks were ranked.
            for other in [m for m in modes[1:] if m]:  # several modes: all named
                other_board, timings_by_mode[other], _ = _run_questions(
                    cli, rag, kb_id, data, k, other, True, concurrency
                )
                metrics_by_mode[other] = other_board.summary()
        finally:
            if created and not keep:
                try:
                    rag.delete_knowledge_base(kb_id)
                except RagmeshError as err:
                    cli.err.print(f"[yellow]could not delete {literal(kb_id)}: {literal(err)}[/]")
    report["metrics"] = board.summary()
    if len(modes) > 1:
        report["metrics_by_mode"] = {modes[0]: report["metrics"], **metrics_by_mode}
        report["timings_by_mode"] = {modes[0]: timings, **timings_by_mode}
    report["answers_by_mode"] = {m: summarize(o) for m, o in by_mode.items()}
    if any(not q.answerable for q in data.questions):
        report["abstention_curve"] = {
            m: [vars(p) for p in abstention_curve(o, default_thresholds())]
            for m, o in by_mode.items()
        }
    report["timings"] = timings
    report["finished"] = datetime.now(UTC).isoformat(timespec="seconds")
    _write_and_print(cli, report, details, json_file)
    ingest_failed = report["ingest"]["failed"]
    raise typer.Exit(EXIT_FAILURES if ingest_failed else EXIT_OK)


def _load(dataset: Path) -> Dataset | str:
    """The data set, or the message of why it cannot be used."""
    try:
        return load_dataset(dataset)
    except DatasetError as exc:
        return str(exc)
    except OSError as exc:  # a file of it that cannot be read (permissions, a folder)
        return f"cannot read {exc.filename or dataset}: {exc.strerror or exc}"
    except UnicodeDecodeError as exc:
        return f"cannot read the data set {dataset}: not UTF-8 text ({exc})"


def _write_and_print(
    cli: Cli, report: dict[str, Any], details: list[dict[str, Any]], json_file: Path | None
) -> None:
    """The figures to `json_file` (with the per-question results) and the terminal; exit
    code 1 when the file cannot be written after all (checked before the run)."""
    error = ""
    if json_file is not None:
        data = {**report, "per_question": details}
        try:
            json_file.write_text(
                json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8"
            )
        except OSError as exc:
            error = f"cannot write {json_file}: {exc.strerror or exc}"
    _print_report(cli, report, None if error else json_file)
    if error:
        cli.fail(error, EXIT_FAILURES)


def _unwritable(path: Path) -> str:
    """Why `path` cannot be written as a file ("" if it looks writable)."""
    if path.is_dir():
        return "it is a folder"
    if not path.parent.is_dir():
        return f"no such folder {path.parent}"
    return ""


def search_modes(value: str | None) -> list[str | None] | str:
    """The `--mode` option as a list of search modes (None: the server's default),
    or the message of why it is not one."""
    if not value or not value.strip():
        return [None]
    modes = [m.strip().lower() for m in value.split(",")]
    for m in modes:
        if m not in SEARCH_MODES:
            return f"unknown search mode {m!r} in --mode; choose from {', '.join(SEARCH_MODES)}"
    if len(set(modes)) != len(modes):
        return f"--mode names a search mode twice: {value}"
    return list(modes)


def _fmt(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.3f}"
    return str(value)


def _print_report(cli: Cli, report: dict[str, Any], json_file: Path | None) -> None:
    ingest = report["ingest"]
    cli.out.print(
        f"ingested {ingest['documents'] - ingest['failed']}/{ingest['documents']} documents "
        f"({ingest['chunks']} chunks) in {ingest['seconds']:.1f} s"
    )
    for failure in ingest["failures"][:5]:
        what = f"{failure['document']}: {failure['reason']} {failure['message']}"
        cli.out.print(f"  [red]failed[/] {literal(what)}")
    by_mode = report.get("metrics_by_mode") or {report["mode"]: report["metrics"]}
    timings_by_mode = report.get("timings_by_mode") or {report["mode"]: report["timings"]}
    table = Table(
        "metric",
        *(by_mode if len(by_mode) > 1 else ["value"]),
        title=f"ragmesh eval: {literal(Path(report['dataset']).name)}",
    )
    for name in report["metrics"]:
        table.add_row(name, *(_fmt(m.get(name)) for m in by_mode.values()))
    timings = report["timings"]
    table.add_row("top_k", *(_fmt(t["top_k"]) for t in timings_by_mode.values()))
    table.add_row(
        "search p50 / p99 (ms)",
        *(
            f"{_fmt(t['search_ms_p50'])} / {_fmt(t['search_ms_p99'])}"
            for t in timings_by_mode.values()
        ),
    )
    if timings["answer_errors"]:
        table.add_row("answers failed", str(timings["answer_errors"]))
    if timings["ask_ms_p50"] is not None:
        table.add_row(
            "ask p50 / p99 (ms)", f"{_fmt(timings['ask_ms_p50'])} / {_fmt(timings['ask_ms_p99'])}"
        )
    cli.out.print(table)
    if report.get("answers_by_mode"):
        cli.out.print(_modes_table(report["answers_by_mode"]))
    if timings["top_k"] < 100 and report["layout"] == "beir":
        cli.out.print(
            f"[dim]recall@100 counts the documents of the top {timings['top_k']} "
            "chunks (the gateway's top_k limit)[/]"
        )
    if json_file is not None:
        cli.out.print(f"figures written to {literal(json_file)}")


def _modes_table(by_mode: dict[str, dict[str, Any]]) -> Table:
    """Answer quality per answer mode (ragmesh/eval_answers.py)."""
    table = Table(
        "answer mode",
        "asked",
        "contains gold",
        "abstained: answerable",
        "abstained: unanswerable",
        "≥1 valid citation",
        "mean chars",
        title="answers by mode",
    )
    for mode, m in by_mode.items():
        table.add_row(
            literal(mode),
            str(m["asked"]),
            _fmt(m["answer_contains_gold"]),
            _fmt(m["abstained_answerable"]),
            _fmt(m["abstained_unanswerable"]),
            _fmt(m["cited"]),
            f"{m['mean_answer_chars']:.0f}" if m["mean_answer_chars"] is not None else "–",
        )
    return table
