"""`ragmesh kb check`, `kb reindex`, `docs download` and `docs text`: the kept
originals and the agreement between records and index."""

# Typer commands receive every option as a parameter.

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from ragmesh.cli_common import (
    EXIT_FAILURES,
    EXIT_OK,
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
)
from ragmesh.client.builders import short_name
from ragmesh.gateway.v1 import gateway_pb2

CHECK_EXAMPLES = examples(
    "ragmesh kb check",
    "ragmesh kb check demo --repair",
    "ragmesh kb check --json | jq '.findings[].action'",
)


def kb_check(
    name: Annotated[str, typer.Argument(help="Knowledge base (default: every one).")] = "",
    repair: Annotated[
        bool, typer.Option("--repair", help="Fix what differs (repairs run as ingestion jobs).")
    ] = False,
    addr: AddrOption = None,
    api_key: ApiKeyOption = None,
    tls: TlsOption = None,
    ca_file: CaFileOption = None,
    as_json: JsonOption = False,
) -> None:
    """Compare the records (Redis) with the index (Milvus); --repair fixes each difference.

    Missing collections are made again and their documents re-ingested from the kept originals; documents whose chunks differ are re-ingested; chunks and collections nobody owns are deleted. Exit code 1 when anything differed, 0 when all agreed.
    """  # noqa: E501 - one line per paragraph: Typer's rich help keeps line breaks
    cli = Cli.create(addr, api_key, as_json, tls=tls, ca_file=ca_file)
    with cli.errors(), cli.client(timeout=600) as rag:
        report = rag.check_knowledge_base(name, repair=repair)
    if as_json:
        cli.print_json(message_dict(report))
    else:
        _print_report(cli, report, repair)
    raise typer.Exit(EXIT_FAILURES if report.findings else EXIT_OK)


def _print_report(cli: Cli, report: gateway_pb2.CheckKnowledgeBaseResponse, repair: bool) -> None:
    checked = (
        f"{report.knowledge_bases_checked} knowledge bases, {report.documents_checked} documents"
    )
    if not report.findings:
        cli.out.print(f"[green]all agree[/]: {checked} checked")
        return
    table = Table(title=f"{len(report.findings)} differences ({checked} checked)")
    for column in ("knowledge base", "document", "difference", "recorded", "indexed"):
        table.add_column(column)
    table.add_column("repaired by" if repair else "--repair would", no_wrap=False)
    for f in report.findings:
        table.add_row(
            literal(f.knowledge_base_id),
            literal(f.document_id or f.collection),
            short_name(gateway_pb2.Inconsistency, f.kind),
            str(f.recorded_chunks),
            str(f.indexed_chunks),
            literal(f"{f.action} {f.job_id}".strip()),
        )
    cli.out.print(table)
    if repair and any(f.job_id for f in report.findings):
        cli.out.print("follow the repair jobs with: ragmesh jobs")


REINDEX_EXAMPLES = examples(
    "ragmesh kb reindex demo",
    "ragmesh kb reindex demo --model multilingual",
    "ragmesh kb reindex demo --json",
)


def kb_reindex(
    name: Annotated[str, typer.Argument(help="The knowledge base to re-index.")],
    model: Annotated[
        str,
        typer.Option(
            help="Re-embed with this embedding model (multilingual, minilm or a served name); "
            "default: the knowledge base's own."
        ),
    ] = "",
    addr: AddrOption = None,
    api_key: ApiKeyOption = None,
    tls: TlsOption = None,
    ca_file: CaFileOption = None,
    as_json: JsonOption = False,
) -> None:
    """Embed every document again from its kept original into a new collection.

    Searches keep using the current collection (and model) until every document is in the new one; then the knowledge base switches to it, and to the new model, at once and the old one is dropped. Vectors of two models never share a collection.
    """  # noqa: E501 - one line per paragraph: Typer's rich help keeps line breaks
    cli = Cli.create(addr, api_key, as_json, tls=tls, ca_file=ca_file)
    with cli.errors(), cli.client(timeout=120) as rag:
        started = rag.reindex_knowledge_base(name, model=model)
    if as_json:
        cli.print_json(message_dict(started))
        return
    cli.out.print(
        f"re-indexing [bold]{literal(name)}[/] into {literal(started.collection)}: "
        f"{started.documents} documents queued; searches use the current index until it is "
        f"complete (ragmesh jobs --kb {literal(name)})"
    )


DOWNLOAD_EXAMPLES = examples(
    "ragmesh docs download handbook.pdf --kb manuals",
    "ragmesh docs download handbook.pdf --kb manuals -o copy.pdf",
)


def docs_download(
    document_id: Annotated[str, typer.Argument(help="The document (see `docs list`).")],
    kb: KbOption = None,
    output: Annotated[
        Path | None,
        typer.Option("--output", "-o", help="File to write (default: its file name; - stdout)."),
    ] = None,
    addr: AddrOption = None,
    api_key: ApiKeyOption = None,
    tls: TlsOption = None,
    ca_file: CaFileOption = None,
    as_json: JsonOption = False,
) -> None:
    """Download a document's original, as it was uploaded.

    Exit code 1 when the file cannot be written (a missing folder, no permission).
    """
    cli = Cli.create(addr, api_key, as_json, tls=tls, ca_file=ca_file)
    kb_id = cli.kb(kb)
    with cli.errors(), cli.client(timeout=300) as rag:
        header, data = rag.download_document(kb_id, document_id)
    if str(output) == "-":
        sys.stdout.buffer.write(data)
        return
    path = output or Path(Path(header.file_name).name or document_id)
    try:
        path.write_bytes(data)
    except OSError as exc:
        cli.fail(f"cannot write {path}: {exc.strerror or exc}", EXIT_FAILURES)
    if as_json:
        cli.print_json({**message_dict(header), "path": str(path)})
    else:
        cli.out.print(f"wrote {literal(path)} ({len(data)} bytes, {literal(header.media_type)})")


def docs_text(
    document_id: Annotated[str, typer.Argument(help="The document (see `docs list`).")],
    kb: KbOption = None,
    addr: AddrOption = None,
    api_key: ApiKeyOption = None,
    tls: TlsOption = None,
    ca_file: CaFileOption = None,
) -> None:
    """Print a document's normalised text: what chunk and citation offsets point into."""
    cli = Cli.create(addr, api_key, False, tls=tls, ca_file=ca_file)
    kb_id = cli.kb(kb)
    with cli.errors(), cli.client(timeout=120) as rag:
        text = rag.document_text(kb_id, document_id)
    sys.stdout.write(text)
    if not text.endswith("\n"):
        sys.stdout.write("\n")
