"""Hostile files uploaded the way a user would, with `ragmesh ingest --wait`,
through the gateway, the queue and one worker: each ends SUCCEEDED or FAILED with
the precise reason the chunking service gives it (benchmarks/hostile_data.py,
tests/integration/test_chunking_hostile.py checks the same shapes against chunking
alone), no job runs longer than its budget, and a normal document uploaded behind
them is indexed at once.

The full corpus (`make fuzz`: RAGMESH_FUZZ_FULL=1) has the issue's sizes (a 30 MB
HTML page, 1 MB pathological lines); `make test` uploads the same shapes small.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from benchmarks.hostile_data import (
    MB,
    big_html,
    flate_bomb_pdf,
    image_only_pdf,
    nested_divs,
    script_html,
)
from ragmesh.gateway.v1 import gateway_pb2 as pb
from tests.e2e.conftest import ALPHA_KEY
from tests.fuzz.conftest import REPO_ROOT, FuzzStack

pytestmark = [pytest.mark.slow]

FULL = os.environ.get("RAGMESH_FUZZ_FULL", "") == "1"
#: how long one job may run (start to end): chunking's parse budget, plus embedding
#: what passes at a pessimistic rate for two loaded cores (the chunk cap,
#: RAGMESH_WORKER_MAX_CHUNKS_PER_DOCUMENT, bounds the second term)
PARSE_BUDGET_S = 60.0
EMBED_S_PER_CHUNK = 1.0
#: reading the upload from Redis and sending it to chunking (30 MB on loaded cores):
#: the first full run saw a 30 MB page stopped at its parse budget end 60.8 s after
#: its job started
OVERHEAD_S = 30.0


def budget(chunks: int) -> float:
    return PARSE_BUDGET_S + OVERHEAD_S + EMBED_S_PER_CHUNK * chunks


#: where the outcomes go (JSON), for `make fuzz`'s report
REPORT = os.environ.get("RAGMESH_FUZZ_HOSTILE_REPORT", "")


@dataclass(frozen=True)
class File:
    name: str
    make: Callable[[], bytes]
    #: "succeeded", or the reason the job fails with ("A|B": either)
    outcome: str


def corpus(size: int) -> list[File]:
    """The shapes of the issue; `size` is the length of the pathological ones."""

    def rep(unit: bytes, n: int) -> bytes:
        return unit * (n // len(unit))

    # Shapes whose text is all words are a quarter of the size: their cost is
    # embedding (~1,000 chunks a MB), which the chunk cap bounds, not parsing.
    words = size // 4
    files = [
        File("zero-byte.txt", lambda: b"", "EMPTY_DOCUMENT"),
        File("only-spaces.txt", lambda: b" " * size, "NO_TEXT_CONTENT"),
        File("no-newlines.txt", lambda: rep(b"word ", words), "succeeded"),
        File("one-long-line.txt", lambda: b"x" * size, "succeeded"),
        File("heading-spaces.md", lambda: b"# a" + b" " * size + b"b", "succeeded"),
        File("dash-spaces.md", lambda: rep(b"- ", words) + b"x", "succeeded"),
        File("invalid-utf8.txt", lambda: rep(b"caf\xe9 \xff\xfe au lait ", words), "succeeded"),
        File("nul-bytes.txt", lambda: rep(b"abc\x00def ", size), "MEDIA_TYPE_MISMATCH"),
        File("nested.html", lambda: nested_divs(100_000), "DOCUMENT_TOO_COMPLEX"),
        File("script.html", lambda: script_html(3 * MB), "succeeded"),
        File("images-only.pdf", image_only_pdf, "NO_TEXT_CONTENT"),
        File("flate-bomb.pdf", flate_bomb_pdf, "DOCUMENT_TOO_COMPLEX"),
    ]
    if FULL:
        # ~25,000 chunks: more than a worker indexes for one document (or, on a
        # loaded machine, over chunking's parse budget first)
        files.append(File("big.html", big_html, "DOCUMENT_TOO_MANY_CHUNKS|PARSE_TIMEOUT"))
    return files


def ingest(fs: FuzzStack, folder: Path, kb: str, timeout: float) -> dict[str, Any]:
    done = subprocess.run(
        [
            *(sys.executable, "-m", "ragmesh.cli", "ingest", str(folder), "--kb", kb),
            *("--create", "--wait", "--json", "--timeout", str(timeout)),
        ],
        cwd=REPO_ROOT,
        env={
            **{k: v for k, v in os.environ.items() if not k.startswith("RAGMESH_")},
            "RAGMESH_CONFIG": str(folder.parent / "no-config.toml"),
            "RAGMESH_GATEWAY_ADDR": fs.stack.gateway,
            "RAGMESH_API_KEY": ALPHA_KEY,
        },
        capture_output=True,
        text=True,
        timeout=timeout + 60,
        check=False,
    )
    try:
        return json.loads(done.stdout)  # type: ignore[no-any-return]
    except ValueError:
        raise AssertionError(f"exit {done.returncode}:\n{done.stdout}\n{done.stderr}") from None


def run_time(fs: FuzzStack, job_id: str) -> float:
    job = fs.stack.call("GetIngestionJob", pb.GetIngestionJobRequest(job_id=job_id)).job
    if not job.HasField("start_time") or not job.HasField("end_time"):
        return 0.0
    return float(job.end_time.ToMilliseconds() - job.start_time.ToMilliseconds()) / 1000


def test_hostile_files_through_the_cli(fuzz_stack: FuzzStack, tmp_path: Path) -> None:
    files = corpus(MB if FULL else 32 * 1024)
    folder = tmp_path / "hostile"
    folder.mkdir()
    for f in files:
        (folder / f.name).write_bytes(f.make())
    start = time.monotonic()
    report = ingest(fuzz_stack, folder, "hostile", timeout=3600)
    elapsed = time.monotonic() - start
    by_name = {Path(r["path"]).name: r for r in report["results"]}
    assert set(by_name) == {f.name for f in files}, report
    outcomes = []
    for f in files:
        r = by_name[f.name]
        seconds = run_time(fuzz_stack, r["job_id"]) if r["job_id"] else 0.0
        outcomes.append(
            {
                "file": f.name,
                "bytes": (folder / f.name).stat().st_size,
                "state": r["state"],
                "reason": r["reason"],
                "chunks": r["chunks"],
                "seconds": round(seconds, 1),
                "expected": f.outcome,
                "message": r["message"][:160],
            }
        )
    if REPORT:
        Path(REPORT).write_text(json.dumps({"files": outcomes, "seconds": elapsed}, indent=1))
    for o in outcomes:
        print(f"{o['file']}: {o['state']} {o['reason']} {o['chunks']} chunks, {o['seconds']} s")
        assert o["state"] in ("succeeded", "failed", "upload_failed"), o
        got = o["state"] if o["state"] == "succeeded" else o["reason"]
        assert got in str(o["expected"]).split("|"), o
        if o["state"] != "succeeded":
            assert o["message"], o
        assert o["seconds"] <= budget(int(o["chunks"])), o
    # The queue behind them is free: a normal document is indexed promptly.
    normal = tmp_path / "normal"
    normal.mkdir()
    (normal / "finches.md").write_text("# Finches\n\nThe zebra finch sings at dawn.\n")
    start = time.monotonic()
    again = ingest(fuzz_stack, normal, "hostile", timeout=120)
    assert again["results"][0]["state"] == "succeeded", again
    assert time.monotonic() - start < 60
