"""`ragmesh search` and `ragmesh ask`."""

from __future__ import annotations

# Typer commands receive every option as a parameter.
import sys
from typing import Annotated, Any

import typer
from rich.table import Table

from ragmesh.cli_common import (
    EXIT_USAGE,
    AddrOption,
    ApiKeyOption,
    CaFileOption,
    Cli,
    JsonOption,
    KbOption,
    TlsOption,
    examples,
    literal,
    message_dict,
    snippet,
)
from ragmesh.client.builders import FilterSpec, short_name
from ragmesh.client.results import AskResult, location_text
from ragmesh.common.v1 import common_pb2
from ragmesh.gateway.v1 import gateway_pb2

ModeOption = Annotated[
    str | None,
    typer.Option(help="dense, sparse (BM25) or hybrid (default: hybrid where supported)."),
]
TopKOption = Annotated[
    int, typer.Option("--top-k", "-n", help="How many passages (0 = server default).")
]
FilterOption = Annotated[
    list[str] | None,
    typer.Option(
        "--filter",
        "-f",
        help="FIELD=VALUE (document_id, language, media_type, "
        "source, title or metadata.KEY); repeat to AND several.",
    ),
]


RerankOption = Annotated[
    bool | None,
    typer.Option(
        "--rerank/--no-rerank",
        help="Rerank the candidates with the server's reranker (default: the knowledge "
        "base's setting).",
    ),
]


def parse_filters(specs: list[str] | None) -> list[FilterSpec]:
    filters: list[FilterSpec] = []
    for spec in specs or []:
        field, sep, value = spec.partition("=")
        if not sep or not field.strip():
            raise ValueError(f"--filter {spec!r}: expected FIELD=VALUE")
        filters.append((field.strip(), "eq", value))
    return filters


def rerank_note(outcome: common_pb2.RerankOutcome) -> str:
    """`, reranked` or why not, for a result list's title."""
    if not outcome.requested:
        return ""
    if outcome.applied:
        return f", reranked by {outcome.model} in {outcome.ms:.0f} ms"
    return f", not reranked: {outcome.fallback}"


def location(hit: common_pb2.Citation) -> str:
    return location_text(hit)


SEARCH_EXAMPLES = examples(
    'ragmesh search "hybrid search"',
    'ragmesh search "reset a password" --kb manuals -n 10 --mode sparse',
    'ragmesh search "pricing" --kb manuals --filter media_type=application/pdf --json',
)


def search(
    query: Annotated[str, typer.Argument(help="What to look for.")],
    kb: KbOption = None,
    top_k: TopKOption = 5,
    mode: ModeOption = None,
    filters: FilterOption = None,
    rerank: RerankOption = None,
    addr: AddrOption = None,
    api_key: ApiKeyOption = None,
    tls: TlsOption = None,
    ca_file: CaFileOption = None,
    as_json: JsonOption = False,
) -> None:
    """Retrieval only: the passages that match best, with scores and documents."""
    cli = Cli.create(addr, api_key, as_json, tls=tls, ca_file=ca_file)
    kb_id = cli.kb(kb)
    with cli.errors(), cli.client() as rag:
        try:
            resp = rag.search(
                kb_id,
                query,
                top_k=top_k,
                mode=mode,
                filters=parse_filters(filters),
                rerank=rerank,
            )
        except ValueError as exc:
            cli.fail(str(exc), EXIT_USAGE)
            return
    if as_json:
        cli.print_json(message_dict(resp))
        return
    mode_name = short_name(common_pb2.SearchMode, resp.mode) if resp.mode else "?"
    mode_name += rerank_note(resp.rerank)
    table = Table(
        "#",
        "score",
        "document",
        "where",
        "text",
        title=f"{len(resp.hits)} hits in {literal(kb_id)} ({literal(mode_name)})",
    )
    for rank, hit in enumerate(resp.hits, start=1):
        table.add_row(
            str(rank),
            f"{hit.score:.4f}",
            literal(hit.file_name or hit.document_id),
            literal(f"{location(hit)}\nchunk {hit.chunk_index}"),
            literal(snippet(hit.text, 160)),
        )
    cli.out.print(table if resp.hits else f"no hits in {literal(kb_id)}")


ASK_EXAMPLES = examples(
    'ragmesh ask "What is ragmesh?"',
    'ragmesh ask "What does the contract say about termination?" --answer-mode verbatim',
    'ragmesh ask "Summarise the refund policy" --answer-mode generative --require-citations',
    'ragmesh ask "How does hybrid search fuse results?" --kb demo --mode hybrid',
    'ragmesh ask "什么是向量检索？" --json | jq .answer',
)


def ask(
    question: Annotated[str, typer.Argument(help="Your question.")],
    kb: KbOption = None,
    top_k: TopKOption = 0,
    mode: ModeOption = None,
    filters: FilterOption = None,
    max_tokens: Annotated[int, typer.Option(help="Answer length limit (0 = default).")] = 0,
    temperature: Annotated[
        float | None, typer.Option(help="Sampling temperature (default: the server's).")
    ] = None,
    rerank: RerankOption = None,
    show_sources: Annotated[
        str, typer.Option("--sources", help="cited (the passages the answer cites), all, none.")
    ] = "all",
    answer_mode: Annotated[
        str | None,
        typer.Option(
            "--answer-mode",
            help="verbatim (the documents' own sentences, each cited), generative (the LLM "
            "writes it) or auto (verbatim with a small LLM); default: the knowledge base's.",
        ),
    ] = None,
    require_citations: Annotated[
        bool,
        typer.Option(
            "--require-citations",
            help="Replace a generative answer that cites nothing by the verbatim answer "
            "(or an abstention).",
        ),
    ] = False,
    addr: AddrOption = None,
    api_key: ApiKeyOption = None,
    tls: TlsOption = None,
    ca_file: CaFileOption = None,
    as_json: JsonOption = False,
) -> None:
    """Answer a question from the knowledge base, streamed, with numbered sources."""
    cli = Cli.create(addr, api_key, as_json, tls=tls, ca_file=ca_file)
    kb_id = cli.kb(kb)
    if show_sources not in {"cited", "all", "none"}:
        cli.fail("--sources must be cited, all or none", EXIT_USAGE)
    result = AskResult()
    streamed = False
    with cli.errors(), cli.client() as rag:
        try:
            events = rag.ask(
                kb_id,
                question,
                top_k=top_k,
                mode=mode,
                filters=parse_filters(filters),
                max_tokens=max_tokens,
                temperature=temperature,
                rerank=rerank,
                answer_mode=answer_mode,
                require_citations=require_citations,
            )
        except ValueError as exc:
            cli.fail(str(exc), EXIT_USAGE)
            return
        for event in events:
            result.add(event)
            if not as_json and event.WhichOneof("event") == "queued":
                print_queued(cli, event.queued)
            if not as_json and event.WhichOneof("event") == "delta":
                sys.stdout.write(event.delta.text)
                sys.stdout.flush()
                streamed = True
    if as_json:
        cli.print_json(ask_json(result))
        return
    final = result.final
    if not streamed and result.answer:
        sys.stdout.write(result.answer)
    sys.stdout.write("\n")
    sys.stdout.flush()
    if final is not None and final.abstained:
        cli.out.print("[yellow](the knowledge base does not contain an answer to this)[/]")
    elif final is not None and not final.grounded:
        cli.out.print(
            "[bold red](ungrounded: this answer cites no passage — do not trust it; "
            "try --answer-mode verbatim or --require-citations)[/]"
        )
    elif final is not None and final.replaced_ungrounded:
        cli.out.print("[dim](the generated answer cited nothing: verbatim answer instead)[/]")
    print_quotes(cli, result)
    print_sources(cli, result, show_sources)


def print_queued(cli: Cli, queued: common_pb2.QueuePosition) -> None:
    """Where the answer waits for the LLM, on stderr (stdout carries the answer)."""
    wait = f", about {queued.estimated_wait_ms / 1000:.0f} s" if queued.estimated_wait_ms else ""
    cli.err.print(f"[dim]queued for the LLM: position {queued.position}{wait}[/]")


def print_quotes(cli: Cli, result: AskResult) -> None:
    """A verbatim answer's sentences, each with where it stands in its document."""
    quotes = [c for c in result.citations if c.quote]
    if not quotes:
        return
    cli.out.print("\n[bold]Quoted[/]")
    for c in quotes:
        cli.out.print(
            f"[bold][{c.number}][/] {literal(c.file_name or c.document_id)}  "
            f"[dim]chars {c.quote_start_offset}–{c.quote_end_offset}[/]",
            highlight=False,
        )
        cli.out.print(f"    {snippet(c.quote, 200)}", highlight=False, markup=False)


def print_sources(cli: Cli, result: AskResult, which: str) -> None:
    if which == "none" or not result.sources:
        return
    cited = {c.number for c in result.citations}
    cli.out.print("\n[bold]Sources[/]")
    for hit in result.sources:
        number = hit.number
        if which == "cited" and number not in cited:
            continue
        mark = "[green]✓ cited[/]" if number in cited else "[dim]not cited[/]"
        cli.out.print(
            f"[bold][{number}][/] {literal(hit.file_name or hit.document_id)}  "
            f"[dim]{literal(location(hit))}, score {hit.score:.3f}[/]  {mark}",
            highlight=False,
        )
        cli.out.print(f"    {snippet(hit.text, 200)}", highlight=False, markup=False)
    final = result.final
    if final is not None and final.usage.total_tokens:
        cli.out.print(
            f"\n[dim]{final.usage.prompt_tokens} prompt + {final.usage.completion_tokens} "
            f"answer tokens; retrieval {final.retrieval_ms:.0f} ms, first token "
            f"{final.first_token_ms:.0f} ms, total {final.total_ms:.0f} ms[/]"
        )


def ask_json(result: AskResult) -> dict[str, Any]:
    final = result.final
    return {
        "answer": result.answer,
        "abstained": result.abstained,
        "grounded": bool(final and final.grounded),
        "answer_mode": (
            short_name(gateway_pb2.AnswerMode, final.answer_mode)
            if final and final.answer_mode
            else ""
        ),
        "relevance": final.relevance if final else None,
        "replaced_ungrounded": bool(final and final.replaced_ungrounded),
        "finish_reason": final.finish_reason if final else "",
        "search_query": result.search_query,
        "search_query_source": result.search_query_source,
        "citations": [message_dict(c) for c in result.citations],
        "sources": [message_dict(s) for s in result.sources],
        "usage": message_dict(final.usage) if final else {},
        "timings_ms": {
            "retrieval": final.retrieval_ms if final else None,
            "first_token": final.first_token_ms if final else None,
            "total": final.total_ms if final else None,
        },
    }
