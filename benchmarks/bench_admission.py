"""Ask under load, with the generation service's admission control on and off.

N concurrent clients (4, 12, 32 by default), half of them tenant A's and half
tenant B's, each asking ROUNDS questions one after the other through the gateway
with the bundled LLM (SmolLM2 on llama.cpp, one request at a time), generative
answers, a client deadline of DEADLINE_S. Raw gRPC stubs, no SDK retries: every
outcome is counted as the server gave it.

Both tenants ask the same questions (clients 2k and 2k + 1 ask the same ones), each
a sentence of the knowledge base's own text, so that the questions retrieve
relevant passages and go to the LLM, and both tenants' figures come from the same
work: before, each client asked its own random words, and the tenants' questions
(their abstentions, which need no LLM, and their answers' lengths) differed.

- on: the defaults (one LLM slot; a bounded queue, round robin across tenants,
  deadline-aware refusal with RetryInfo).
- off: today's behaviour before admission control, measured in the same run:
  the generation service lets every answer through at once
  (RAGMESH_GENERATION_LLM_MAX_CONCURRENCY above the client count) and the
  gateway does not check first, so the llama.cpp server's own queue and the LLM
  client's timeouts decide.

Pass (on): every request answered or refused with RESOURCE_EXHAUSTED; refusals
within 100 ms; no UNAVAILABLE, DEADLINE_EXCEEDED or INTERNAL. A refusal after the
Ask stream sent events (the queue slowed down while the answer waited) is counted
apart: it is not within 100 ms.

Scale with RAGMESH_BENCH_ADMISSION_CLIENTS ("4,12,32"), _ROUNDS (2),
_MAX_TOKENS (32), _DEADLINE_S (60).
"""

from __future__ import annotations

import collections
import os
import re
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import grpc

from benchmarks.chunking_data import english_text
from devstack.deps import start_llm, start_redis
from devstack.procs import ManagedProcess, start_service, worker_process
from ragmesh.eval_metrics import percentile
from ragmesh.gateway.v1 import gateway_pb2 as pb
from ragmesh.gateway.v1 import gateway_pb2_grpc
from ragmesh.rpc import error_info_of

KEYS = {"A": "tenant-a-key-0001", "B": "tenant-b-key-0002"}
KB = "load"
DOCS = 12
# Passages per Ask: short prompts keep the small LLM's prompt evaluation brief.
ASK_TOP_K = 3


def _env(name: str, default: str) -> str:
    return os.environ.get(f"RAGMESH_BENCH_ADMISSION_{name}", default)


@dataclass
class Outcome:
    tenant: str
    status: str  # OK or a gRPC status name
    reason: str
    seconds: float
    queued: bool
    #: events received before the end (a refusal with none came before any work)
    events: int = 0
    abstained: bool = False


@dataclass
class Run:
    mode: str
    clients: int
    wall_s: float
    outcomes: list[Outcome] = field(default_factory=list)


class Stack:
    """Redis, the LLM, the services, and one generation service + gateway per mode."""

    def __init__(self, tmp: Path, max_clients: int) -> None:
        logs = tmp / "logs"
        self.procs: list[ManagedProcess] = []
        redis, redis_url = start_redis(tmp / "redis", log_dir=logs)
        llm, llm_url = start_llm(log_dir=logs)
        self.procs += [redis, llm]
        addrs: dict[str, str] = {}
        for name, env in [
            ("retrieval", {"RAGMESH_RETRIEVAL_MILVUS_URI": str(tmp / "milvus.db")}),
            ("chunking", {}),
            ("embedding", {}),
        ]:
            proc, addrs[name] = start_service(name, env=env, log_dir=logs, timeout=300)
            self.procs.append(proc)
        self.env = {
            "RAGMESH_REDIS_URL": redis_url,
            "RAGMESH_CHUNKING_ADDR": addrs["chunking"],
            "RAGMESH_EMBEDDING_ADDR": addrs["embedding"],
            "RAGMESH_RETRIEVAL_ADDR": addrs["retrieval"],
            "RAGMESH_BLOB_DIR": str(tmp / "blobs"),
        }
        generation_env = {
            "on": {},
            "off": {"RAGMESH_GENERATION_LLM_MAX_CONCURRENCY": str(max_clients * 4)},
        }
        gateway_env = {"on": {}, "off": {"RAGMESH_GATEWAY_ASK_ADMISSION_CHECK": "false"}}
        keys = ",".join(f"{key}:{tenant}" for tenant, key in KEYS.items())
        self.gateways: dict[str, gateway_pb2_grpc.RagServiceStub] = {}
        for mode, extra in generation_env.items():
            gen, gen_addr = start_service(
                "generation",
                env={"RAGMESH_GENERATION_LLM_BASE_URL": llm_url, **extra},
                log_dir=logs,
            )
            gw, gw_addr = start_service(
                "gateway",
                env={
                    **self.env,
                    "RAGMESH_GENERATION_ADDR": gen_addr,
                    "RAGMESH_GATEWAY_API_KEYS": keys,
                    **gateway_env[mode],
                },
                log_dir=logs,
            )
            self.procs += [gen, gw]
            self.gateways[mode] = gateway_pb2_grpc.RagServiceStub(grpc.insecure_channel(gw_addr))
        worker = worker_process(
            "bench-worker", f"adm-{time.monotonic_ns()}@%h", env=self.env, log_dir=logs
        ).start()
        self.procs.append(worker)

    def load(self) -> None:
        """The same small knowledge base for both tenants."""
        rag = self.gateways["on"]
        for key in KEYS.values():
            auth = [("authorization", f"Bearer {key}")]
            rag.CreateKnowledgeBase(
                pb.CreateKnowledgeBaseRequest(knowledge_base_id=KB), metadata=auth, timeout=60
            )
            jobs = []
            for i in range(DOCS):
                text = english_text(4, seed=300 + i).encode()
                header = pb.UploadHeader(knowledge_base_id=KB, file_name=f"d{i}.txt")
                msgs = iter(
                    [pb.UploadDocumentRequest(header=header), pb.UploadDocumentRequest(data=text)]
                )
                jobs.append(rag.UploadDocument(msgs, metadata=auth, timeout=60).job.job_id)
            for job_id in jobs:
                last = None
                for event in rag.WatchIngestionJob(
                    pb.WatchIngestionJobRequest(job_id=job_id), metadata=auth, timeout=600
                ):
                    last = event.job
                if last is None or last.state != pb.JOB_STATE_SUCCEEDED:
                    raise RuntimeError(f"ingestion failed: {last}")

    def close(self) -> None:
        for proc in reversed(self.procs):
            proc.stop()


def _ask(
    rag: gateway_pb2_grpc.RagServiceStub,
    tenant: str,
    question: str,
    deadline_s: float,
    max_tokens: int,
) -> Outcome:
    start = time.perf_counter()
    queued = abstained = False
    events = 0
    try:
        for event in rag.Ask(
            pb.AskRequest(
                knowledge_base_id=KB,
                question=question,
                top_k=ASK_TOP_K,
                max_tokens=max_tokens,
                temperature=0.0,
                # generative answers: the LLM path is what is measured (AUTO answers
                # verbatim with the bundled model)
                answer_mode=pb.ANSWER_MODE_GENERATIVE,
            ),
            metadata=[("authorization", f"Bearer {KEYS[tenant]}")],
            timeout=deadline_s,
        ):
            events += 1
            queued = queued or event.HasField("queued")
            abstained = abstained or (event.HasField("final") and event.final.abstained)
    except grpc.RpcError as err:
        info = error_info_of(err)
        return Outcome(
            tenant,
            err.code().name,
            info.reason if info else "",
            time.perf_counter() - start,
            queued,
            events,
        )
    return Outcome(tenant, "OK", "", time.perf_counter() - start, queued, events, abstained)


def questions(count: int) -> list[str]:
    """`count` questions, each one sentence of the documents (see the module doc)."""
    sentences: list[str] = []
    for i in range(DOCS):
        text = english_text(4, seed=300 + i)
        sentences += [
            s.strip(" .?!").lower()
            for s in re.split(r"(?<=[.?!])\s+", text)
            if 6 <= len(s.split()) <= 14
        ]
    return [f"What does it say about {sentences[i % len(sentences)]}?" for i in range(count)]


def _load(
    rag: gateway_pb2_grpc.RagServiceStub,
    mode: str,
    clients: int,
    rounds: int,
    deadline_s: float,
    max_tokens: int,
) -> Run:
    asked = questions(clients * rounds)
    run = Run(mode, clients, 0.0)
    lock = threading.Lock()

    def client(n: int) -> None:
        tenant = "A" if n % 2 == 0 else "B"
        for r in range(rounds):
            question = asked[(n // 2) * rounds + r]  # the same for A's and B's client
            outcome = _ask(rag, tenant, question, deadline_s, max_tokens)
            with lock:
                run.outcomes.append(outcome)

    threads = [threading.Thread(target=client, args=(n,)) for n in range(clients)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    run.wall_s = time.perf_counter() - start
    return run


def _seconds(values: list[float], q: float) -> str:
    return f"{percentile(values, q):.1f}" if values else "–"


def _ms(values: list[float]) -> str:
    """p50 / max in milliseconds."""
    if not values:
        return "–"
    return f"{percentile(values, 0.5) * 1000:.0f} / {max(values) * 1000:.0f} ms"


def _row(run: Run) -> str:
    answered = [o for o in run.outcomes if o.status == "OK"]
    refused = [o for o in run.outcomes if o.status == "RESOURCE_EXHAUSTED"]
    at_once = [o for o in refused if o.events == 0]
    in_line = len(refused) - len(at_once)
    failed = collections.Counter(
        f"{o.status} {o.reason}".strip()
        for o in run.outcomes
        if o.status not in ("OK", "RESOURCE_EXHAUSTED")
    )
    lat = [o.seconds for o in answered]
    per_tenant = {t: [o.seconds for o in answered if o.tenant == t] for t in KEYS}
    fairness = " / ".join(
        f"{t}: {len(v)} ({_seconds(v, 0.5)} s)" if v else f"{t}: 0" for t, v in per_tenant.items()
    )
    failures = ", ".join(f"{n} {k}" for k, n in failed.most_common()) or "none"
    per_min = len(answered) / run.wall_s * 60
    queued = sum(o.queued for o in answered)
    abstained = sum(o.abstained for o in answered)
    refusals = f"{len(at_once)} ({_ms([o.seconds for o in at_once])}{_by_reason(at_once)})"
    if in_line:
        refusals += f" + {in_line} in line"
    return (
        f"| {run.mode} | {run.clients} | {len(run.outcomes)} | {len(answered)} ({queued} queued"
        f"{f', {abstained} abstained' if abstained else ''}) | {refusals} | {failures} | "
        f"{_seconds(lat, 0.5)} / {_seconds(lat, 0.99)} | {per_min:.1f} | {fairness} |"
    )


def _by_reason(refusals: list[Outcome]) -> str:
    """`; REASON n ≤ max ms` per refusal reason, when there are several: a full queue
    is refused by the gateway's check before retrieval; a deadline the queue slowed
    down for may only show when the answer itself is queued, after retrieval."""
    reasons = sorted({o.reason for o in refusals})
    if len(reasons) < 2:
        return ""
    parts = []
    for reason in reasons:
        times = [o.seconds for o in refusals if o.reason == reason]
        parts.append(f"{reason or '?'} {len(times)} ≤ {max(times) * 1000:.0f} ms")
    return "; " + ", ".join(parts)


def _verdict(run: Run) -> bool:
    bad = [o for o in run.outcomes if o.status not in ("OK", "RESOURCE_EXHAUSTED")]
    slow_refusals = [
        o for o in run.outcomes if o.status == "RESOURCE_EXHAUSTED" and o.seconds > 0.1
    ]
    return not bad and not slow_refusals


def run() -> str:
    levels = [int(n) for n in _env("CLIENTS", "4,12,32").split(",")]
    rounds = int(_env("ROUNDS", "2"))
    max_tokens = int(_env("MAX_TOKENS", "32"))
    deadline_s = float(_env("DEADLINE_S", "60"))
    runs: list[Run] = []
    loads: list[float] = []
    with tempfile.TemporaryDirectory(prefix="ragmesh-bench-admission-") as tmp:
        stack = Stack(Path(tmp), max(levels))
        try:
            stack.load()
            for clients in levels:
                for mode in ("on", "off"):
                    loads.append(os.getloadavg()[0])
                    run_ = _load(
                        stack.gateways[mode], mode, clients, rounds, deadline_s, max_tokens
                    )
                    print(_row(run_), flush=True)
                    runs.append(run_)
        finally:
            stack.close()
    on_ok = all(_verdict(r) for r in runs if r.mode == "on")
    return "\n".join(
        [
            "## Ask under load: admission control on vs off",
            "",
            f"Clients from two tenants (alternating), each asking {rounds} questions in turn "
            f"through the gateway (generative, max_tokens {max_tokens}, temperature 0, deadline "
            f"{deadline_s:.0f} s, no client retries) against SmolLM2-135M on one llama.cpp "
            "server. **on**: the defaults (one LLM slot, a bounded queue fair across tenants, "
            "deadline-aware refusal). **off**: the generation service lets every answer through "
            "at once (the behaviour before admission control). Latency of answered requests in "
            "seconds; refused: before any event (p50 / max latency), + after waiting in line; "
            "tenants: answered (p50 latency). Both tenants ask the same questions, each "
            "a sentence of the documents (an abstention, which needs no LLM, is counted "
            "apart).",
            "",
            "| admission | clients | requests | answered | refused (RESOURCE_EXHAUSTED) | "
            "failed | p50 / p99 s | answers/min | tenants A / B |",
            "|---|---:|---:|---:|---:|---|---:|---:|---|",
            *[_row(r) for r in runs],
            "",
            "Target (on): every request answered or refused with RESOURCE_EXHAUSTED within "
            "100 ms, no UNAVAILABLE, DEADLINE_EXCEEDED or INTERNAL: "
            f"{'ok' if on_ok else 'MISSED'}. Load average (1 min) at the start of each run: "
            f"{', '.join(f'{x:.1f}' for x in loads)} (other work on the machine slows the LLM "
            "and the gateway alike; compare on and off within a row pair).",
        ]
    )


if __name__ == "__main__":
    print(run())
