"""`ragmesh ingest`: upload files and folders, follow their jobs with progress bars."""

from __future__ import annotations

# Typer commands receive every option as a parameter.
import threading
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Annotated

import typer
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table

from ragmesh.cli_common import (
    EXIT_FAILURES,
    EXIT_NOT_FOUND,
    EXIT_OK,
    AddrOption,
    ApiKeyOption,
    CaFileOption,
    Cli,
    JsonOption,
    TlsOption,
    examples,
    literal,
)
from ragmesh.client import NotFoundError, RagmeshClient
from ragmesh.client.builders import short_name
from ragmesh.client.bulk import IngestOutcome, Upload
from ragmesh.client.document_ids import folder_document_id
from ragmesh.client.media import is_supported_file
from ragmesh.gateway.v1 import gateway_pb2


@dataclass
class IngestItem:
    path: Path
    file_name: str
    document_id: str  # empty: the gateway derives it from the file name
    display: str = ""  # how the summary names it: the path relative to its folder


@dataclass
class IngestResult:
    path: str
    document_id: str
    file: str = ""
    job_id: str = ""
    state: str = "upload_failed"
    chunks: int = 0
    deduplicated: bool = False
    reason: str = ""
    message: str = ""

    @property
    def ok(self) -> bool:
        return self.state in {"succeeded", "queued", "running"}


def collect_files(paths: list[Path]) -> tuple[list[IngestItem], list[Path]]:
    """Files to upload and files skipped.

    A file named on the command line is always uploaded; inside a folder
    (walked recursively, hidden entries skipped) only files with a supported
    extension are. Files in subfolders get a document id from their path
    relative to the folder, so `a/intro.md` and `b/intro.md` stay two documents.
    """
    items: list[IngestItem] = []
    skipped: list[Path] = []
    seen: set[Path] = set()
    for root in paths:
        if root.is_file():
            if root.resolve() not in seen:
                seen.add(root.resolve())
                items.append(IngestItem(root, root.name, "", str(root)))
            continue
        if not root.is_dir():
            raise FileNotFoundError(f"no such file or folder: {root}")
        for path in sorted(root.rglob("*")):
            rel = path.relative_to(root)
            if any(part.startswith(".") for part in rel.parts) or not path.is_file():
                continue
            if not is_supported_file(path.name):
                skipped.append(path)
                continue
            if path.resolve() in seen:
                continue
            seen.add(path.resolve())
            doc_id = folder_document_id(rel.as_posix())
            items.append(IngestItem(path, path.name, doc_id, rel.as_posix()))
    # A file skipped in a folder walk but also named on its own is not skipped.
    return items, [p for p in skipped if p.resolve() not in seen]


def _result(item: IngestItem, outcome: IngestOutcome) -> IngestResult:
    result = IngestResult(str(item.path), outcome.document_id or item.document_id, item.display)
    job = outcome.job
    if job is not None:
        result.job_id = job.job_id
        result.state = short_name(gateway_pb2.JobState, job.state)
        result.chunks = job.chunks_total
        result.deduplicated = job.deduplicated
        result.reason, result.message = job.error.reason, job.error.message
    if outcome.error is not None:
        # Not uploaded at all, or uploaded but its end not seen.
        result.state = "upload_failed" if job is None else "unknown"
        result.reason = outcome.error.reason or outcome.error.code.name
        result.message = outcome.error.message
    return result


def _ingest_all(
    rag: RagmeshClient,
    kb: str,
    items: list[IngestItem],
    progress: Progress | None,
    wait: bool,
    timeout: float,
) -> list[IngestResult]:
    """Uploads every file (4 at a time) and, with `wait`, follows every job,
    with a progress bar per file being ingested."""
    uploads = [Upload(i.path, file_name=i.file_name, document_id=i.document_id) for i in items]
    # progress descriptions are markup: file names go in as they are
    names = {id(u): literal(i.path.name) for u, i in zip(uploads, items, strict=True)}
    overall = progress.add_task("uploading", total=len(items)) if progress else None
    bars: dict[int, TaskID] = {}
    ended: set[int] = set()
    lock = threading.Lock()

    def on_update(outcome: IngestOutcome) -> None:
        if progress is None or overall is None:
            return
        key, name = id(outcome), names[id(outcome.upload)]
        with lock:
            if key in ended:
                return
            if key not in bars:  # the upload just ended
                progress.advance(overall)
                bars[key] = progress.add_task(f"{name} • queued", total=None)
            job = outcome.job
            if job is not None:
                stage = short_name(gateway_pb2.JobStage, job.stage) if job.stage else ""
                progress.update(
                    bars[key],
                    description=f"{name} • {stage or short_name(gateway_pb2.JobState, job.state)}",
                    total=job.chunks_total or None,
                    completed=job.chunks_done,
                )
            if outcome.done or not wait:
                progress.remove_task(bars[key])
                ended.add(key)

    outcomes = rag.ingest_many(
        kb, uploads, concurrency=4, wait=wait, timeout=timeout, on_update=on_update
    )
    if progress is not None and overall is not None:
        progress.remove_task(overall)
    return [_result(item, outcome) for item, outcome in zip(items, outcomes, strict=True)]


def _progress(cli: Cli) -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=cli.err,
        transient=True,
    )


INGEST_EXAMPLES = examples(
    "ragmesh ingest README.md --kb notes --create",
    "ragmesh ingest ~/Documents/manuals report.pdf --kb manuals --wait",
    "ragmesh ingest docs/ --kb manuals --wait --json > ingest.json",
)


def ingest(
    paths: Annotated[list[Path], typer.Argument(help="Files and folders (walked recursively).")],
    kb: Annotated[str, typer.Option("--kb", "-k", help="Knowledge base to ingest into.")],
    wait: Annotated[
        bool, typer.Option("--wait", "-w", help="Follow every job until it ends (progress bars).")
    ] = False,
    create: Annotated[
        bool, typer.Option("--create", help="Create the knowledge base if it does not exist.")
    ] = False,
    timeout: Annotated[float, typer.Option(help="With --wait: seconds to wait in all.")] = 3600,
    addr: AddrOption = None,
    api_key: ApiKeyOption = None,
    tls: TlsOption = None,
    ca_file: CaFileOption = None,
    as_json: JsonOption = False,
) -> None:
    """Upload documents (Markdown, HTML, PDF, text) into a knowledge base.

    The media type comes from the content and the extension. Without --wait the command returns once every file is stored and queued; `ragmesh jobs` shows how the ingestion goes. Exit code 1 when any file failed.
    """  # noqa: E501 - one line per paragraph: Typer's rich help keeps line breaks
    cli = Cli.create(addr, api_key, as_json, tls=tls, ca_file=ca_file)
    try:
        items, skipped = collect_files(paths)
    except FileNotFoundError as exc:
        cli.fail(str(exc), EXIT_NOT_FOUND)
        return
    if not items:
        cli.fail("no supported files (.md, .markdown, .html, .htm, .pdf, .docx, .odt, .txt) found")
    with cli.errors(), cli.client(timeout=60) as rag:
        try:
            rag.get_knowledge_base(kb)
        except NotFoundError:
            if not create:
                cli.fail(
                    f"knowledge base {kb!r} does not exist: add --create, or run "
                    f"`ragmesh kb create {kb}`",
                    EXIT_NOT_FOUND,
                )
            rag.create_knowledge_base(kb)
            if not as_json:
                cli.err.print(f"created knowledge base [bold]{literal(kb)}[/]")
        show = not as_json
        progress = _progress(cli) if show else None
        if progress is not None:
            progress.start()
        try:
            results = _ingest_all(rag, kb, items, progress, wait, timeout)
        finally:
            if progress is not None:
                progress.stop()
    failed = [r for r in results if not r.ok]
    if as_json:
        cli.print_json(
            {
                "knowledge_base_id": kb,
                "results": [asdict(r) for r in results],
                "skipped": [str(p) for p in skipped],
                "failed": len(failed),
            }
        )
    else:
        _print_summary(cli, kb, results, skipped, wait)
    raise typer.Exit(EXIT_FAILURES if failed else EXIT_OK)


def _print_summary(
    cli: Cli, kb: str, results: list[IngestResult], skipped: list[Path], waited: bool
) -> None:
    table = Table(title=f"ingest into {literal(kb)}")
    for name in ("file", "document", "state", "chunks", "reason"):
        table.add_column(name)
    table.add_column("job", no_wrap=True)  # copied into `ragmesh jobs retry`: never cut
    for r in results:
        color = {"succeeded": "green", "queued": "yellow", "running": "cyan"}.get(r.state, "red")
        detail = f"{r.reason}: {r.message}" if r.reason else ""
        if r.deduplicated:
            detail = detail or "unchanged"
        table.add_row(
            literal(r.file),
            literal(r.document_id),
            f"[{color}]{r.state}[/]",
            str(r.chunks) if waited else "",
            literal(detail),
            literal(r.job_id),
        )
    cli.out.print(table)
    ok = sum(1 for r in results if r.ok)
    failed = len(results) - ok
    summary = f"{ok} of {len(results)} files " + ("indexed" if waited else "queued")
    if failed:
        summary += f", [red]{failed} failed[/]"
    if skipped:
        summary += f"; {len(skipped)} skipped (unsupported extension)"
    cli.out.print(summary)
    if not waited and ok:
        cli.out.print("follow them with: ragmesh jobs --kb " + literal(kb))
