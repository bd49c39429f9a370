"""`ragmesh kb`, `ragmesh docs`, `ragmesh jobs` and `ragmesh status`."""

# Typer commands receive every option as a parameter.

from __future__ import annotations

import os
from typing import Annotated

import typer
from rich.table import Table

from ragmesh.cli_common import (
    EXIT_FAILURES,
    EXIT_OK,
    EXIT_UNAVAILABLE,
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
    timestamp_text,
)
from ragmesh.client.builders import short_name
from ragmesh.common.v1 import common_pb2
from ragmesh.gateway.v1 import gateway_pb2

kb_app = typer.Typer(
    help="Create, list, delete, check and re-index knowledge bases.", no_args_is_help=True
)
docs_app = typer.Typer(
    help="List, delete and download the documents of a knowledge base.", no_args_is_help=True
)
jobs_app = typer.Typer(help="Ingestion jobs: list (the default), cancel, retry.")


# -- kb -----------------------------------------------------------------------------------


def _kb_row(kb: gateway_pb2.KnowledgeBase) -> list[str]:
    return [
        literal(kb.knowledge_base_id),
        str(kb.document_count)
        + (
            f" (re-indexing: {kb.reindex.documents_done} done,"
            f" {kb.reindex.documents_pending} to do)"
            if kb.HasField("reindex")
            else ""
        ),
        str(kb.chunk_count),
        short_name(common_pb2.TextLanguage, kb.language) if kb.language else "",
        f"{short_name(common_pb2.IndexType, kb.index_type) if kb.index_type else ''}"
        f"/{short_name(common_pb2.Metric, kb.metric) if kb.metric else ''}",
        f"{literal(kb.embedding_model)} ({kb.dimension})" if kb.embedding_model else "",
        timestamp_text(kb.create_time),
        literal(kb.description),
    ]


@kb_app.command(
    "create",
    epilog=examples(
        "ragmesh kb create manuals",
        'ragmesh kb create wiki-zh --language chinese --description "Chinese wiki"',
        "ragmesh kb create big --index hnsw --metric cosine --json",
        "ragmesh kb create contracts --answer-mode verbatim",
    ),
)
def kb_create(
    name: Annotated[
        str, typer.Argument(help="Id: lower-case letters, digits, _ and -, up to 63 characters.")
    ],
    description: Annotated[str, typer.Option(help="Free text.")] = "",
    language: Annotated[
        str, typer.Option(help="Full-text analyzer: english or chinese.")
    ] = "english",
    index: Annotated[
        str, typer.Option(help="Vector index: flat, ivf_flat, hnsw, autoindex (server default).")
    ] = "",
    metric: Annotated[str, typer.Option(help="cosine, l2 or ip (server default).")] = "",
    rerank: Annotated[
        bool,
        typer.Option(
            "--rerank/--no-rerank",
            help="Rerank search and ask results by default (needs a reranker on the server).",
        ),
    ] = False,
    answer_mode: Annotated[
        str,
        typer.Option(
            "--answer-mode", help="Ask's default: auto, verbatim or generative (default auto)."
        ),
    ] = "",
    model: Annotated[
        str,
        typer.Option(
            help="Embedding model: multilingual (understands Chinese), minilm (English), or "
            "a name the embedding service serves; default: by language (chinese → "
            "multilingual).",
        ),
    ] = "",
    addr: AddrOption = None,
    api_key: ApiKeyOption = None,
    tls: TlsOption = None,
    ca_file: CaFileOption = None,
    as_json: JsonOption = False,
) -> None:
    """Create a knowledge base."""
    cli = Cli.create(addr, api_key, as_json, tls=tls, ca_file=ca_file)
    with cli.errors(), cli.client() as rag:
        try:
            kb = rag.create_knowledge_base(
                name,
                description=description,
                language=language,
                metric=metric or None,
                index_type=index or None,
                rerank=rerank,
                answer_mode=answer_mode or None,
                model=model,
            )
        except ValueError as exc:
            cli.fail(str(exc), EXIT_USAGE)
            return
    if as_json:
        cli.print_json(message_dict(kb))
    else:
        cli.out.print(
            f"created knowledge base [bold]{literal(kb.knowledge_base_id)}[/] "
            f"({literal(kb.embedding_model)}, {kb.dimension} dimensions)"
        )


@kb_app.command("list", epilog=examples("ragmesh kb list", "ragmesh kb list --json"))
def kb_list(
    addr: AddrOption = None,
    api_key: ApiKeyOption = None,
    tls: TlsOption = None,
    ca_file: CaFileOption = None,
    as_json: JsonOption = False,
) -> None:
    """List your knowledge bases."""
    cli = Cli.create(addr, api_key, as_json, tls=tls, ca_file=ca_file)
    with cli.errors(), cli.client() as rag:
        kbs = list(rag.iter_knowledge_bases())
    if as_json:
        cli.print_json([message_dict(kb) for kb in kbs])
        return
    table = Table(
        "knowledge base",
        "docs",
        "chunks",
        "language",
        "index/metric",
        "model",
        "created",
        "description",
    )
    for kb in kbs:
        table.add_row(*_kb_row(kb))
    cli.out.print(table if kbs else "no knowledge bases yet: ragmesh kb create NAME")


@kb_app.command(
    "delete",
    epilog=examples("ragmesh kb delete old-docs", "ragmesh kb delete old-docs --yes"),
)
def kb_delete(
    name: Annotated[str, typer.Argument(help="The knowledge base to delete.")],
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
    addr: AddrOption = None,
    api_key: ApiKeyOption = None,
    tls: TlsOption = None,
    ca_file: CaFileOption = None,
    as_json: JsonOption = False,
) -> None:
    """Delete a knowledge base with all its documents, chunks and jobs."""
    cli = Cli.create(addr, api_key, as_json, tls=tls, ca_file=ca_file)
    if not yes:
        if not os.isatty(0):
            cli.fail("deleting needs --yes when not run interactively", EXIT_USAGE)
        typer.confirm(f"Delete knowledge base {name!r} and all its documents?", abort=True)
    with cli.errors(), cli.client() as rag:
        rag.delete_knowledge_base(name)
    if as_json:
        cli.print_json({"deleted": name})
    else:
        cli.out.print(f"deleted knowledge base [bold]{literal(name)}[/]")


# -- docs ---------------------------------------------------------------------------------


@docs_app.command(
    "list", epilog=examples("ragmesh docs list --kb demo", "ragmesh docs list --kb demo --json")
)
def docs_list(
    kb: KbOption = None,
    addr: AddrOption = None,
    api_key: ApiKeyOption = None,
    tls: TlsOption = None,
    ca_file: CaFileOption = None,
    as_json: JsonOption = False,
) -> None:
    """List the documents of a knowledge base with their state and chunk count."""
    cli = Cli.create(addr, api_key, as_json, tls=tls, ca_file=ca_file)
    kb_id = cli.kb(kb)
    with cli.errors(), cli.client() as rag:
        docs = list(rag.iter_documents(kb_id))
    if as_json:
        cli.print_json([message_dict(d) for d in docs])
        return
    table = Table(title=f"knowledge base {literal(kb_id)}")
    table.add_column("document", no_wrap=True)
    for name in ("file", "type", "state", "chunks", "bytes", "updated", "title"):
        table.add_column(name)
    for d in docs:
        state = short_name(gateway_pb2.DocumentState, d.state)
        color = {"indexed": "green", "failed": "red"}.get(state, "yellow")
        table.add_row(
            literal(d.document_id),
            literal(d.file_name),
            literal(d.media_type),
            f"[{color}]{state}[/]",
            str(d.chunk_count),
            str(d.size_bytes),
            timestamp_text(d.update_time),
            literal(d.title),
        )
    kb_text = literal(kb_id)
    cli.out.print(
        table if docs else f"no documents in {kb_text}: ragmesh ingest PATH --kb {kb_text}"
    )


@docs_app.command("delete", epilog=examples("ragmesh docs delete handbook.pdf --kb manuals"))
def docs_delete(
    document_ids: Annotated[list[str], typer.Argument(help="Document ids (see `docs list`).")],
    kb: KbOption = None,
    addr: AddrOption = None,
    api_key: ApiKeyOption = None,
    tls: TlsOption = None,
    ca_file: CaFileOption = None,
    as_json: JsonOption = False,
) -> None:
    """Delete documents: their chunks leave search at once."""
    cli = Cli.create(addr, api_key, as_json, tls=tls, ca_file=ca_file)
    kb_id = cli.kb(kb)
    with cli.errors(), cli.client() as rag:
        for doc in document_ids:
            rag.delete_document(kb_id, doc)
            if not as_json:
                cli.out.print(f"deleted {literal(doc)} from {literal(kb_id)}")
    if as_json:
        cli.print_json({"deleted": document_ids, "knowledge_base_id": kb_id})


# -- jobs ---------------------------------------------------------------------------------


def job_row(job: gateway_pb2.IngestionJob) -> list[str]:
    state = short_name(gateway_pb2.JobState, job.state)
    color = {"succeeded": "green", "failed": "red", "cancelled": "dim", "running": "cyan"}.get(
        state, "yellow"
    )
    stage = short_name(gateway_pb2.JobStage, job.stage) if job.stage else ""
    progress = f"{job.chunks_done}/{job.chunks_total}" if job.chunks_total else ""
    reason = f"{job.error.reason}: {job.error.message}" if job.error.reason else ""
    if job.deduplicated:
        reason = reason or "unchanged content: not embedded again"
    return [
        literal(job.job_id),
        literal(job.knowledge_base_id),
        literal(job.file_name),
        f"[{color}]{state}[/]",
        stage,
        progress,
        str(job.attempt),
        timestamp_text(job.update_time),
        literal(reason),
    ]


def job_table(title: str | None = None) -> Table:
    table = Table(title=title)
    # Ids are copied into other commands (`jobs retry ID`): never cut them.
    table.add_column("job", no_wrap=True)
    for name in ("kb", "file", "state", "stage", "chunks", "attempt", "updated", "detail"):
        table.add_column(name)
    return table


@jobs_app.callback(
    invoke_without_command=True,
    epilog=examples(
        "ragmesh jobs",
        "ragmesh jobs --kb manuals --state failed",
        "ragmesh jobs --json | jq '.[].state'",
        "ragmesh jobs retry JOB_ID",
        "ragmesh jobs cancel JOB_ID",
    ),
)
def jobs_list(
    ctx: typer.Context,
    kb: Annotated[str | None, typer.Option("--kb", "-k", help="Only this knowledge base.")] = None,
    state: Annotated[
        str | None,
        typer.Option(help="Only this state: queued, running, succeeded, failed, cancelled."),
    ] = None,
    limit: Annotated[int, typer.Option(help="Show at most this many jobs.")] = 50,
    oldest_first: Annotated[
        bool, typer.Option("--oldest-first", help="The oldest jobs first (default: newest).")
    ] = False,
    addr: AddrOption = None,
    api_key: ApiKeyOption = None,
    tls: TlsOption = None,
    ca_file: CaFileOption = None,
    as_json: JsonOption = False,
) -> None:
    """List ingestion jobs, the newest first (`--oldest-first`: the oldest)."""
    if ctx.invoked_subcommand is not None:
        return
    cli = Cli.create(addr, api_key, as_json, tls=tls, ca_file=ca_file)
    jobs: list[gateway_pb2.IngestionJob] = []
    with cli.errors(), cli.client() as rag:
        try:
            for job in rag.iter_ingestion_jobs(
                knowledge_base_id=kb or "",
                state=state,
                page_size=min(limit, 1000),
                newest_first=not oldest_first,
            ):
                jobs.append(job)
                if len(jobs) >= limit:
                    break
        except ValueError as exc:
            cli.fail(str(exc), EXIT_USAGE)
    if as_json:
        cli.print_json([message_dict(j) for j in jobs])
        return
    table = job_table()
    for job in jobs:
        table.add_row(*job_row(job))
    cli.out.print(table if jobs else "no ingestion jobs")


def _job_action(
    action: str,
    job_id: str,
    addr: str | None,
    api_key: str | None,
    as_json: bool,
    tls: bool | None,
    ca_file: str | None,
) -> None:
    cli = Cli.create(addr, api_key, as_json, tls=tls, ca_file=ca_file)
    with cli.errors(), cli.client() as rag:
        job = (
            rag.cancel_ingestion_job(job_id)
            if action == "cancel"
            else rag.retry_ingestion_job(job_id)
        )
    if as_json:
        cli.print_json(message_dict(job))
    else:
        table = job_table()
        table.add_row(*job_row(job))
        cli.out.print(table)


@jobs_app.command("cancel", epilog=examples("ragmesh jobs cancel 0f9c...e1"))
def jobs_cancel(
    job_id: Annotated[str, typer.Argument(help="The job id (see `ragmesh jobs`).")],
    addr: AddrOption = None,
    api_key: ApiKeyOption = None,
    tls: TlsOption = None,
    ca_file: CaFileOption = None,
    as_json: JsonOption = False,
) -> None:
    """Cancel a queued or running ingestion job."""
    _job_action("cancel", job_id, addr, api_key, as_json, tls, ca_file)


@jobs_app.command("retry", epilog=examples("ragmesh jobs retry 0f9c...e1"))
def jobs_retry(
    job_id: Annotated[str, typer.Argument(help="The job id (see `ragmesh jobs --state failed`).")],
    addr: AddrOption = None,
    api_key: ApiKeyOption = None,
    tls: TlsOption = None,
    ca_file: CaFileOption = None,
    as_json: JsonOption = False,
) -> None:
    """Queue a FAILED or CANCELLED job again."""
    _job_action("retry", job_id, addr, api_key, as_json, tls, ca_file)


# -- status -------------------------------------------------------------------------------


def status(
    addr: AddrOption = None,
    api_key: ApiKeyOption = None,
    tls: TlsOption = None,
    ca_file: CaFileOption = None,
    as_json: JsonOption = False,
) -> None:
    """Health of every ragmesh service, and whether the API key is accepted."""
    from ragmesh.client import RagmeshError
    from ragmesh.client._channel import channel_credentials
    from ragmesh.ports import DEFAULT_PORTS
    from ragmesh.rpc import health_status

    cli = Cli.create(addr, api_key, as_json, tls=tls, ca_file=ca_file)
    addrs: dict[str, str] = {}
    for service, port in DEFAULT_PORTS.items():
        env_addr = os.environ.get(f"RAGMESH_{service.upper()}_ADDR")
        addrs[service] = env_addr or cli.settings.services.get(service) or f"127.0.0.1:{port}"
    addrs["gateway"] = cli.settings.gateway_addr
    with cli.errors():  # an unreadable CA file
        gateway_credentials = channel_credentials(cli.settings.tls, cli.settings.ca_file)
    rows = []
    for service, target in addrs.items():
        # only the gateway speaks TLS; the internal services are plaintext
        creds = gateway_credentials if service == "gateway" else None
        status = health_status(target, timeout=3.0, credentials=creds)
        rows.append({"service": service, "address": target, "status": status})
    auth = "not checked"
    if any(r["service"] == "gateway" and r["status"] == "SERVING" for r in rows):
        try:
            with cli.client(timeout=10) as rag:
                rag.list_knowledge_bases(page_size=1)
            auth = "accepted"
        except RagmeshError as err:
            auth = f"{err.code.name} {err.reason}".strip()
    healthy = all(r["status"] == "SERVING" for r in rows) and auth == "accepted"
    if as_json:
        cli.print_json(
            {"services": rows, "api_key": auth, "healthy": healthy, "config": cli.settings.source}
        )
    else:
        table = Table("service", "address", "health")
        for r in rows:
            color = "green" if r["status"] == "SERVING" else "red"
            table.add_row(
                literal(r["service"]), literal(r["address"]), f"[{color}]{literal(r['status'])}[/]"
            )
        cli.out.print(table)
        color = "green" if auth == "accepted" else "red"
        cli.out.print(
            f"API key: [{color}]{literal(auth)}[/]   (settings from {literal(cli.settings.source)})"
        )
    if healthy:
        raise typer.Exit(EXIT_OK)
    gateway_down = any(r["service"] == "gateway" and r["status"] == "UNREACHABLE" for r in rows)
    raise typer.Exit(EXIT_UNAVAILABLE if gateway_down else EXIT_FAILURES)
