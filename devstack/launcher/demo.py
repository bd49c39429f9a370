"""The `demo` knowledge base `make run` creates from examples/ (CC0 documents
written for the project), through the public API like any user."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import IO

from devstack.launcher.supervisor import say
from ragmesh.client import AlreadyExistsError, NotFoundError, RagmeshClient, RagmeshError

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples"
DEMO_KB = "demo"


def demo_files() -> list[Path]:
    return sorted(p for p in EXAMPLES.glob("*") if p.is_file() and p.name != "README.md")


def check_and_repair(rag: RagmeshClient, out: IO[str] | None) -> None:
    """The demo's records against its index (e.g. its Milvus data was wiped while
    Redis kept its records): repaired from the kept originals."""
    report = rag.check_knowledge_base(DEMO_KB, repair=True, timeout=120)
    if not report.findings:
        return
    say(
        f"knowledge base `{DEMO_KB}` did not match its index ({len(report.findings)} findings); "
        "repairing: " + "; ".join(sorted({f.action for f in report.findings})),
        out,
    )
    jobs = [f.job_id for f in report.findings if f.job_id]
    for job_id in jobs:
        rag.wait_for_job(job_id, timeout=900)
    say(f"knowledge base `{DEMO_KB}` repaired ({len(jobs)} documents re-ingested)", out)


def create_demo(gateway: str, api_key: str, out: IO[str] | None = None) -> None:
    """The `demo` knowledge base from examples/, when it does not exist yet."""
    files = demo_files()
    if not files:
        say(f"no demo documents in {EXAMPLES}", out)
        return
    try:
        with RagmeshClient(gateway, api_key, timeout=60) as rag:
            try:
                kb = rag.get_knowledge_base(DEMO_KB)
                say(f"knowledge base `{DEMO_KB}` exists ({kb.document_count} documents)", out)
                check_and_repair(rag, out)
                return
            except NotFoundError:
                pass
            with contextlib.suppress(AlreadyExistsError):
                rag.create_knowledge_base(DEMO_KB, description="ragmesh demo documents (examples/)")
            say(
                f"creating the `{DEMO_KB}` knowledge base from {len(files)} documents in "
                f"{EXAMPLES.name}/ ...",
                out,
            )
            outcomes = rag.ingest_many(DEMO_KB, files, timeout=900)
    except RagmeshError as exc:
        say(f"could not create the demo knowledge base: {exc}", out)
        return
    for outcome in outcomes:
        if not outcome.succeeded:
            why = outcome.error or (outcome.job.error if outcome.job else "")
            say(f"demo document {outcome.upload.source!s} failed: {why}", out)
    chunks = sum(o.job.chunks_total for o in outcomes if o.succeeded and o.job)
    ok = sum(1 for o in outcomes if o.succeeded)
    say(
        f"knowledge base `{DEMO_KB}` ready: {ok} documents, {chunks} chunks. "
        'Try: ragmesh ask "What is ragmesh?"',
        out,
    )
