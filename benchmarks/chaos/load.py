"""What runs against the stack while it is broken: the clients that ask and
search, the uploader (uploads, new versions, deletes) and the fault injector.

Each counts what it saw by gRPC status: during a fault clients get UNAVAILABLE
and that is expected; what must not happen is accepted work lost, which the
invariants (benchmarks/chaos/invariants.py) check afterwards.
"""

from __future__ import annotations

import random
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import grpc

from benchmarks.chaos.corpus import Doc, new_version, questions
from benchmarks.chaos.stack import API_KEY, ChaosStack
from ragmesh.gateway.v1 import gateway_pb2 as pb
from ragmesh.gateway.v1 import gateway_pb2_grpc
from services.common.status import error_info_of

AUTH = [("authorization", f"Bearer {API_KEY}")]


def status_of(err: grpc.RpcError) -> str:
    return str(err.code().name)  # type: ignore[attr-defined]


class Gateways:
    """Stubs of every gateway replica; calls go round robin (a load balancer's job)."""

    def __init__(self, addrs: list[str]) -> None:
        self.channels = [grpc.insecure_channel(a) for a in addrs]
        self.stubs = [gateway_pb2_grpc.RagServiceStub(c) for c in self.channels]
        self._next = 0
        self._lock = threading.Lock()

    def pick(self) -> gateway_pb2_grpc.RagServiceStub:
        with self._lock:
            self._next += 1
            return self.stubs[self._next % len(self.stubs)]

    def close(self) -> None:
        for c in self.channels:
            c.close()


@dataclass
class ClientTally:
    outcomes: Counter[tuple[str, str]] = field(default_factory=Counter)  # (op, status)
    #: the first few error details of each (op, status), to say what a failure was
    details: dict[tuple[str, str], list[str]] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, op: str, status: str, detail: str = "") -> None:
        with self.lock:
            self.outcomes[(op, status)] += 1
            seen = self.details.setdefault((op, status), [])
            if detail and len(seen) < 3:
                seen.append(f"{time.strftime('%H:%M:%S')} {detail}")


class Clients:
    """`n` clients, each asking and searching in turn until stopped."""

    def __init__(self, gateways: Gateways, n: int, max_tokens: int) -> None:
        self.gateways = gateways
        self.max_tokens = max_tokens
        self.tally = ClientTally()
        self.stop = threading.Event()
        self.threads = [
            threading.Thread(target=self._run, args=(i,), name=f"client{i}", daemon=True)
            for i in range(n)
        ]

    def start(self) -> None:
        for t in self.threads:
            t.start()

    def join(self) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(60)

    def _run(self, i: int) -> None:
        asks: Iterator[tuple[str, str]] = questions()
        for _ in range(i):
            next(asks)
        n = i
        while not self.stop.is_set():
            kb, question = next(asks)
            op = "Ask" if n % 2 else "Search"
            n += 1
            try:
                if op == "Search":
                    self.search(kb, question)
                else:
                    self.ask(kb, question)
                self.tally.add(op, "OK")
            except grpc.RpcError as err:
                self.tally.add(op, status_of(err), str(err.details()))  # type: ignore[attr-defined]
                self.stop.wait(0.5)  # a client backs off after an error
            self.stop.wait(0.1)

    def search(self, kb: str, query: str) -> pb.SearchResponse:
        return self.gateways.pick().Search(
            pb.SearchRequest(knowledge_base_id=kb, query=query, top_k=3), metadata=AUTH, timeout=30
        )

    def ask(self, kb: str, question: str, timeout: float = 60) -> pb.AskFinal:
        final = None
        for event in self.gateways.pick().Ask(
            # Two passages: a short prompt, as the LLM shares two cores with everything.
            pb.AskRequest(
                knowledge_base_id=kb, question=question, max_tokens=self.max_tokens, top_k=2
            ),
            metadata=AUTH,
            timeout=timeout,
        ):
            if event.HasField("final"):
                final = event.final
        if final is None:
            raise AssertionError("the Ask stream ended without its final event")
        return final


# Statuses worth retrying an upload or a delete on: the stack is (partly) down.
RETRYABLE = {"UNAVAILABLE", "DEADLINE_EXCEEDED", "RESOURCE_EXHAUSTED", "ABORTED", "INTERNAL"}


@dataclass
class Uploads:
    accepted: dict[str, Doc] = field(default_factory=dict)  # job id → what it ingests
    latest: dict[tuple[str, str], Doc | None] = field(default_factory=dict)  # None: deleted
    rejected: dict[tuple[str, str], str] = field(default_factory=dict)  # → reason
    attempts: Counter[tuple[str, str]] = field(default_factory=Counter)  # (op, status)
    versions: int = 0
    deletes: int = 0


class Uploader(threading.Thread):
    """Uploads every document once, paced by `progress()` (the share of the
    fault plan done) so that uploads spread over the faults; every
    `mutate_every` uploads it sends a new version of an earlier document and
    deletes another. Each call is retried until it gets an answer."""

    def __init__(
        self,
        gateways: Gateways,
        docs: list[Doc],
        progress: Callable[[], float],
        mutate_every: int,
        seed: int = 5,
    ) -> None:
        super().__init__(name="uploader", daemon=True)
        self.gateways = gateways
        self.docs = docs
        self.progress = progress
        self.mutate_every = mutate_every
        self.rng = random.Random(seed)
        self.result = Uploads()
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self._run()
        except BaseException as exc:  # reported by the driver
            self.error = exc

    def _run(self) -> None:
        done: list[Doc] = []
        for i, doc in enumerate(self.docs):
            while self.progress() < 0.85 * i / len(self.docs):
                time.sleep(0.05)
            self.upload(doc)
            done.append(doc)
            if self.mutate_every and i % self.mutate_every == self.mutate_every - 1:
                alive = [
                    d
                    for d in done
                    if self.result.latest.get((d.knowledge_base_id, d.document_id)) is not None
                    and not d.expect_failure
                ]
                if len(alive) >= 2:
                    renew, remove = self.rng.sample(alive, 2)
                    self.result.versions += 1
                    self.upload(new_version(renew, self.result.versions))
                    self.delete(remove)

    def _retry(self, op: str, call: Any) -> Any:
        delay = 0.2
        while True:
            try:
                out = call()
                self.result.attempts[(op, "OK")] += 1
                return out
            except grpc.RpcError as err:
                status = status_of(err)
                self.result.attempts[(op, status)] += 1
                if status not in RETRYABLE:
                    raise
                time.sleep(delay)
                delay = min(delay * 2, 3.0)

    def upload(self, doc: Doc) -> None:
        def call() -> pb.UploadDocumentResponse:
            header = pb.UploadHeader(
                knowledge_base_id=doc.knowledge_base_id, file_name=doc.document_id
            )
            return self.gateways.pick().UploadDocument(
                iter(
                    [
                        pb.UploadDocumentRequest(header=header),
                        pb.UploadDocumentRequest(data=doc.data),
                    ]
                ),
                metadata=AUTH,
                timeout=30,
            )

        key = (doc.knowledge_base_id, doc.document_id)
        try:
            resp = self._retry("Upload", call)
        except grpc.RpcError as err:
            info = error_info_of(err)
            self.result.rejected[key] = info.reason if info is not None else status_of(err)
            self.result.latest[key] = doc
            return
        self.result.accepted[resp.job.job_id] = doc
        self.result.latest[key] = doc

    def delete(self, doc: Doc) -> None:
        def call() -> pb.DeleteDocumentResponse:
            return self.gateways.pick().DeleteDocument(
                pb.DeleteDocumentRequest(
                    knowledge_base_id=doc.knowledge_base_id, document_id=doc.document_id
                ),
                metadata=AUTH,
                timeout=30,
            )

        key = (doc.knowledge_base_id, doc.document_id)
        try:
            self._retry("Delete", call)
        except grpc.RpcError as err:
            # NOT_FOUND after a retry: an earlier attempt deleted it, its answer lost.
            if status_of(err) != "NOT_FOUND":
                raise
        self.result.latest[key] = None
        self.result.deletes += 1


@dataclass
class FaultLog:
    counts: Counter[str] = field(default_factory=Counter)  # "worker kill", "redis restart", …
    recovery_s: dict[str, list[float]] = field(default_factory=dict)
    done: int = 0
    planned: int = 0


class Faulter(threading.Thread):
    """Runs the fault plan, one fault at a time, `gap_s` apart: each process is
    SIGKILLed and started again where it was (after `down_s`); the next fault
    waits until it is ready again."""

    def __init__(self, stack: ChaosStack, plan: list[str], gap_s: float, seed: int = 11) -> None:
        super().__init__(name="faulter", daemon=True)
        self.stack = stack
        self.rng = random.Random(seed)
        self.plan = plan
        self.gap_s = gap_s
        self.log = FaultLog(planned=len(plan))
        self.stopping = threading.Event()
        self.error: BaseException | None = None

    def progress(self) -> float:
        return 1.0 if not self.is_alive() else self.log.done / max(self.log.planned, 1)

    def run(self) -> None:
        try:
            for fault in self.plan:
                if self.stopping.wait(self.gap_s):
                    return
                self.inject(fault)
                self.log.done += 1
        except BaseException as exc:  # reported by the driver
            self.error = exc

    def inject(self, fault: str) -> None:
        name = self.rng.choice(self.stack.worker_names()) if fault == "worker" else fault
        down_s = {"redis": 2.0, "milvus": 2.0}.get(fault, 0.5)
        print(f"{time.strftime('%H:%M:%S')} chaos: SIGKILL {name}", flush=True)
        self.stack.kill(name)
        self.log.counts[f"{fault} kill"] += 1
        time.sleep(down_s)
        took = self.stack.restart(name)
        if fault == "milvus":  # the retrieval service serves again once it reconnects
            took += self.stack.wait_serving("retrieval")
        self.log.counts[f"{fault} restart"] += 1
        print(
            f"{time.strftime('%H:%M:%S')} chaos: {name} back after {took + down_s:.1f} s",
            flush=True,
        )
        self.log.recovery_s.setdefault(fault, []).append(took + down_s)


def fault_plan(counts: dict[str, int], seed: int = 3) -> list[str]:
    """The faults in a shuffled order, worker kills spread evenly among the others."""
    rng = random.Random(seed)
    others = [f for f, n in counts.items() if f != "worker" for _ in range(n)]
    rng.shuffle(others)
    workers = counts.get("worker", 0)
    total = len(others) + workers
    plan: list[str] = []
    for i in range(total):
        # Bresenham-like: worker kills land every total/workers slots.
        if workers and (i + 1) * workers // total > i * workers // total:
            plan.append("worker")
        else:
            plan.append(others.pop() if others else "worker")
    return plan
