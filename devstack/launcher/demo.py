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
