"""One chaos run: start the stack, ingest while faults are injected and clients
ask and search, drain, check the invariants, and describe what happened.

The scale comes from RAGMESH_CHAOS_* variables (`Scale.from_env`); the
defaults are the full run of `make chaos`, and the e2e test sets smaller ones.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field, fields
from pathlib import Path

from benchmarks.chaos.corpus import EN_KB, ZH_KB, documents
from benchmarks.chaos.invariants import Verdict, verify, wait_drained
from benchmarks.chaos.load import (
    AUTH,
    Clients,
    Faulter,
    FaultLog,
    Gateways,
    Uploader,
    Uploads,
    fault_plan,
)
from benchmarks.chaos.stack import ChaosStack
from ragmesh.common.v1 import common_pb2
from ragmesh.gateway.v1 import gateway_pb2 as pb

REPO = Path(__file__).resolve().parents[2]
SHARED_DATA = Path(os.environ.get("RAGMESH_SHARED_DATA", REPO.parent / "shared" / "data"))


@dataclass
class Scale:
    docs: int = 500
    worker_kills: int = 20
    redis_restarts: int = 3
    retrieval_restarts: int = 3
    milvus_restarts: int = 3
    chunking_kills: int = 2
    embedding_kills: int = 2
    clients: int = 4
    workers: int = 1
    gateways: int = 1
    gap_s: float = 3.0  # between two faults
    mutate_every: int = 20  # uploads between a new version and a delete
    max_tokens: int = 8  # of each Ask: the LLM's time is not what is tested
    drain_timeout_s: float = 1200.0

    @classmethod
    def from_env(cls, **overrides: object) -> Scale:
        """RAGMESH_CHAOS_<FIELD> overrides a default, `overrides` both."""
        scale = cls(**overrides)  # type: ignore[arg-type]
        for f in fields(cls):
            raw = os.environ.get(f"RAGMESH_CHAOS_{f.name.upper()}")
            if raw:
                setattr(scale, f.name, type(getattr(scale, f.name))(raw))
        return scale

    @property
    def shape(self) -> str:
        workers = f"{self.workers} worker{'s' * (self.workers > 1)}"
        return f"{workers}, {self.gateways} gateway{'s' * (self.gateways > 1)}"

    def faults(self) -> dict[str, int]:
        return {
            "worker": self.worker_kills,
            "redis": self.redis_restarts,
            "retrieval": self.retrieval_restarts,
            "milvus": self.milvus_restarts,
            "chunking": self.chunking_kills,
            "embedding": self.embedding_kills,
        }


@dataclass
class Outcome:
    scale: Scale
    faults: FaultLog
    uploads: Uploads
    clients: Counter[tuple[str, str]]
    #: the first error details of each (op, status) the clients saw
    client_details: dict[tuple[str, str], list[str]]
    verdict: Verdict
    ingest_s: float  # first upload → last job final
    drain_s: float  # after the last fault
    total_s: float
    #: tasks the gateways' reapers sent again, by why (worker_lost, message_lost)
    resent: dict[str, int] = field(default_factory=dict)
    startup_s: float = 0.0
    verify_s: float = 0.0
    errors: list[str] = field(default_factory=list)

    @property
    def bugs(self) -> dict[tuple[str, str], int]:
        """Client outcomes no fault explains: a fault shows as UNAVAILABLE, a
        deadline or a full queue, never as INTERNAL or UNKNOWN."""
        return {k: n for k, n in self.clients.items() if k[1] in ("INTERNAL", "UNKNOWN")}

    @property
    def ok(self) -> bool:
        planned = sum(self.scale.faults().values())
        done = sum(n for k, n in self.faults.counts.items() if k.endswith("restart"))
        return self.verdict.ok and not self.errors and done == planned and not self.bugs


def run(scale: Scale, llm_base_url: str | None = None, base: Path | None = None) -> Outcome:
    """A run in a temporary directory, removed afterwards unless the run failed
    (its logs are then kept for a look)."""
    began = time.monotonic()
    tmp = Path(tempfile.mkdtemp(prefix="ragmesh-chaos-", dir=base))
    stack = ChaosStack(
        tmp, workers=scale.workers, gateways=scale.gateways, llm_base_url=llm_base_url
    )
    outcome = None
    try:
        stack.start()
        gw = Gateways(stack.gateway_addrs)
        try:
            outcome = _run(stack, gw, scale, began)
        finally:
            gw.close()
    finally:
        stack.close()
        if outcome is not None and outcome.ok:
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            print(f"chaos: the logs are kept in {stack.logs}", flush=True)
    return outcome


def _run(stack: ChaosStack, gw: Gateways, scale: Scale, began: float) -> Outcome:
    for kb, language in (
        (EN_KB, common_pb2.TEXT_LANGUAGE_ENGLISH),
        (ZH_KB, common_pb2.TEXT_LANGUAGE_CHINESE),
    ):
        gw.pick().CreateKnowledgeBase(
            pb.CreateKnowledgeBaseRequest(knowledge_base_id=kb, language=language),
            metadata=AUTH,
            timeout=60,
        )
    docs = documents(scale.docs, SHARED_DATA if SHARED_DATA.is_dir() else None)
    clients = Clients(gw, scale.clients, scale.max_tokens)
    faulter = Faulter(stack, fault_plan(scale.faults()), scale.gap_s)
    uploader = Uploader(gw, docs, faulter.progress, scale.mutate_every)
    clients.start()
    ingest_began = time.monotonic()
    faulter.start()
    uploader.start()
    errors: list[str] = []
    try:
        faulter.join()
        faults_done = time.monotonic()
        uploader.join()
        for thread in (faulter, uploader):
            if thread.error is not None:
                errors.append(f"{thread.name}: {thread.error!r}")
        try:
            wait_drained(gw, uploader.result, scale.drain_timeout_s)
        except TimeoutError as exc:  # the invariants say which jobs and why
            errors.append(str(exc))
        ingest_s = time.monotonic() - ingest_began
        drain_s = time.monotonic() - faults_done
    finally:
        clients.join()
    resent = {
        labels.split('"')[1] if '"' in labels else "?": int(n)
        for labels, n in stack.gateway_metric("ragmesh_reaper_resent_total").items()
    }
    verify_began = time.monotonic()
    verdict = verify(stack, gw, uploader.result, clients)
    return Outcome(
        scale=scale,
        faults=faulter.log,
        uploads=uploader.result,
        clients=clients.tally.outcomes,
        client_details=clients.tally.details,
        verdict=verdict,
        ingest_s=ingest_s,
        drain_s=drain_s,
        total_s=time.monotonic() - began,
        startup_s=ingest_began - began,
        verify_s=time.monotonic() - verify_began,
        errors=errors,
        resent=resent,
    )
