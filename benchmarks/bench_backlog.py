"""An ingestion backlog: thousands of small documents uploaded at once to one
Celery worker (`make backlog`, written to docs/reliability.md).

The whole pipeline runs as real processes (its own Redis, Milvus Lite in the
retrieval service, the chunking and embedding services, the gateway, one
prefork worker of concurrency 1). The gateway's reaper checks a waiting job
after 10 s instead of 600 s and passes every second, so every job is checked
against the broker many times while it waits. Measured:

- time to drain: from the first upload to the last job SUCCEEDED;
- messages per job: every push onto the queue's Redis list, seen by MONITOR on
  the broker (devstack/queue_monitor.py) — sends, re-sends, retries, restores;
- ListIngestionJobs latency (a page of 50, and a page of 50 SUCCEEDED jobs,
  which scans past the waiting ones) while jobs wait;
- the reaper's broker scans (from the gateway's metrics) and one scan of the
  full queue timed directly.

Scale with RAGMESH_BENCH_BACKLOG_DOCS (default 2000).
"""

from __future__ import annotations

import os
import re
import tempfile
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import redis

from devstack.deps import start_redis
from devstack.procs import ManagedProcess, start_service, worker_process
from devstack.queue_monitor import QueueMonitor
from ragmesh.eval_metrics import percentile
from ragmesh.gateway.v1 import gateway_pb2 as pb
from ragmesh.gateway.v1 import gateway_pb2_grpc
from services.jobs.keys import Keys
from services.jobs.queue import CeleryQueue
from services.jobs.settings import JobsSettings

DOC = "reliability.md"
KEY = "bench-key-0001"
AUTH = [("authorization", f"Bearer {KEY}")]
KB = "backlog"
QUEUE = "ragmesh-bench-backlog"
REQUEUE_AFTER_S = 10
REAPER_INTERVAL_S = 1


def document(i: int) -> bytes:
    return (
        f"# Backlog note {i}\n\nNote number {i} of the backlog benchmark records that "
        f"shelf {i % 17} holds box {i * 7919 % 10007} and label {i * 104729 % 99991}.\n"
    ).encode()


class Stack:
    def __init__(self, tmp: Path) -> None:
        self.procs: list[ManagedProcess] = []
        self.logs = tmp / "logs"
        redis_proc, self.redis_url = start_redis(tmp / "redis", log_dir=self.logs)
        self.procs.append(redis_proc)
        addrs = {}
        for name, env in [
            ("retrieval", {"RAGMESH_RETRIEVAL_MILVUS_URI": str(tmp / "milvus" / "backlog.db")}),
            ("chunking", {}),
            ("embedding", {}),
        ]:
            proc, addrs[name] = start_service(name, env=env, log_dir=self.logs, timeout=300)
            self.procs.append(proc)
        self.env = {
            "RAGMESH_REDIS_URL": self.redis_url,
            "RAGMESH_WORKER_QUEUE": QUEUE,
            "RAGMESH_BLOB_DIR": str(tmp / "blobs"),
            "RAGMESH_CHUNKING_ADDR": addrs["chunking"],
            "RAGMESH_EMBEDDING_ADDR": addrs["embedding"],
            "RAGMESH_RETRIEVAL_ADDR": addrs["retrieval"],
            "RAGMESH_GENERATION_ADDR": "127.0.0.1:9",
        }
        gateway, self.gateway_addr = start_service(
            "gateway",
            env={
                **self.env,
                "RAGMESH_GATEWAY_API_KEYS": f"{KEY}:bench",
                "RAGMESH_GATEWAY_REAPER_INTERVAL_S": str(REAPER_INTERVAL_S),
                "RAGMESH_GATEWAY_QUEUED_REQUEUE_AFTER_S": str(REQUEUE_AFTER_S),
            },
            log_dir=self.logs,
        )
        self.procs.append(gateway)
        self.gateway_metrics = int(gateway.argv[gateway.argv.index("--metrics-port") + 1])
        self.rag = gateway_pb2_grpc.RagServiceStub(grpc.insecure_channel(self.gateway_addr))

    def start_worker(self) -> ManagedProcess:
        proc = worker_process(
            "backlog-worker", f"backlog-{time.monotonic_ns()}@%h", env=self.env, log_dir=self.logs
        ).start()
        self.procs.append(proc)
        proc.wait_until(
            lambda: " ready." in proc.log_path.read_text(errors="replace"), 120, "worker ready"
        )
        return proc

    def metric(self, name: str) -> float:
        """A sample of the gateway's Prometheus metrics (0 when absent)."""
        with urllib.request.urlopen(f"http://127.0.0.1:{self.gateway_metrics}/metrics") as resp:
            text = resp.read().decode()
        total = 0.0
        for match in re.finditer(rf"^{re.escape(name)}(?:{{[^}}]*}})? (\S+)$", text, re.M):
            total += float(match.group(1))
        return total

    def close(self) -> None:
        for proc in reversed(self.procs):
            proc.stop()


class Lister(threading.Thread):
    """Lists jobs every 0.25 s while any waits: a first page, and a page of
    SUCCEEDED jobs (which has to scan past the waiting ones)."""

    def __init__(self, rag: gateway_pb2_grpc.RagServiceStub) -> None:
        super().__init__(name="lister", daemon=True)
        self.rag = rag
        self.stop = threading.Event()
        self.page: list[float] = []
        self.succeeded: list[float] = []

    def _timed(self, request: pb.ListIngestionJobsRequest, into: list[float]) -> None:
        start = time.perf_counter()
        self.rag.ListIngestionJobs(request, metadata=AUTH, timeout=30)
        into.append(time.perf_counter() - start)

    def run(self) -> None:
        while not self.stop.wait(0.25):
            self._timed(pb.ListIngestionJobsRequest(knowledge_base_id=KB, page_size=50), self.page)
            self._timed(
                pb.ListIngestionJobsRequest(
                    knowledge_base_id=KB, page_size=50, state=pb.JOB_STATE_SUCCEEDED
                ),
                self.succeeded,
            )


def _final_states(stack: Stack) -> dict[str, str]:
    states: dict[str, str] = {}
    token = ""
    while True:
        resp = stack.rag.ListIngestionJobs(
            pb.ListIngestionJobsRequest(knowledge_base_id=KB, page_size=1000, page_token=token),
            metadata=AUTH,
            timeout=60,
        )
        for job in resp.jobs:
            states[job.job_id] = pb.JobState.Name(job.state).removeprefix("JOB_STATE_")
        token = resp.next_page_token
        if not token:
            return states


def _ms(values: list[float], q: float) -> str:
    return f"{percentile(values, q) * 1000:.0f}" if values else "–"


def run() -> str:
    docs = int(os.environ.get("RAGMESH_BENCH_BACKLOG_DOCS", "2000"))
    with tempfile.TemporaryDirectory(prefix="ragmesh-bench-backlog-") as tmp:
        stack = Stack(Path(tmp))
        try:
            return _run(stack, docs)
        finally:
            stack.close()


def _run(stack: Stack, docs: int) -> str:
    stack.rag.CreateKnowledgeBase(
        pb.CreateKnowledgeBaseRequest(knowledge_base_id=KB), metadata=AUTH, timeout=60
    )
    r = redis.Redis.from_url(stack.redis_url)
    producer = CeleryQueue(JobsSettings(redis_url=stack.redis_url, worker_queue=QUEUE))
    lister = Lister(stack.rag)
    with QueueMonitor(stack.redis_url, QUEUE) as monitor:
        stack.start_worker()
        start = time.monotonic()
        lister.start()

        def upload(i: int) -> str:
            header = pb.UploadHeader(knowledge_base_id=KB, file_name=f"note{i}.md")
            resp = stack.rag.UploadDocument(
                iter(
                    [
                        pb.UploadDocumentRequest(header=header),
                        pb.UploadDocumentRequest(data=document(i)),
                    ]
                ),
                metadata=AUTH,
                timeout=120,
            )
            return str(resp.job.job_id)

        with ThreadPoolExecutor(8) as pool:  # the gateway's per-tenant upload limit
            job_ids = list(pool.map(upload, range(docs)))
        uploaded_s = time.monotonic() - start
        queued = int(r.llen(QUEUE))
        scans = [producer.snapshot() for _ in range(3)]
        active = Keys().active_jobs
        while r.zcard(active):
            time.sleep(0.5)
        drain_s = time.monotonic() - start
        lister.stop.set()
        lister.join(30)
        time.sleep(1)
    producer.close()
    r.close()
    states = _final_states(stack)
    succeeded = sum(1 for j in job_ids if states.get(j) == "SUCCEEDED")
    pushes = [monitor.result.pushes.get(j, 0) for j in job_ids]
    messages = [len(monitor.result.messages.get(j, ())) for j in job_ids]
    scan_count = stack.metric("ragmesh_reaper_broker_scan_seconds_count")
    scan_sum = stack.metric("ragmesh_reaper_broker_scan_seconds_sum")
    resent = stack.metric("ragmesh_reaper_resent_total")
    scan_ms = min(s.seconds for s in scans) * 1000
    lines = [
        "## Ingestion backlog",
        "",
        f"{docs} small Markdown documents (one chunk each) uploaded at once (8 streams, the "
        "gateway's per-tenant limit) to **one** Celery worker (prefork, concurrency 1), with "
        "the chunking, embedding and retrieval services (Milvus Lite) and a Redis of its own. "
        f"The gateway's reaper passes every {REAPER_INTERVAL_S} s and checks a waiting job "
        f"against the broker once it has waited {REQUEUE_AFTER_S} s "
        "(`RAGMESH_GATEWAY_QUEUED_REQUEUE_AFTER_S`, 600 s by default), so each job was checked "
        "many times while it waited. Messages are counted on the broker itself: MONITOR sees "
        "every push onto the queue's Redis list, whoever makes it (`benchmarks/bench_backlog.py`, "
        "`make backlog`).",
        "",
        "| figure | value |",
        "|---|---:|",
        f"| jobs SUCCEEDED | {succeeded} / {docs} |",
        f"| uploads done after | {uploaded_s:.1f} s ({queued} messages in the queue then) |",
        f"| time to drain (first upload → last job SUCCEEDED) | {drain_s:.0f} s "
        f"({docs / drain_s:.1f} documents/s) |",
        f"| messages per job (min / max) | {min(messages)} / {max(messages)} |",
        f"| pushes onto the queue per job (min / max) | {min(pushes)} / {max(pushes)} |",
        f"| tasks the reaper sent again | {resent:.0f} |",
        f"| reaper broker scans during the drain | {scan_count:.0f}, "
        f"{scan_sum / max(scan_count, 1) * 1000:.0f} ms on average |",
        f"| one scan of the full queue ({scans[0].messages} messages) | {scan_ms:.0f} ms |",
        f"| ListIngestionJobs, first page of 50, p50 / p99 ({len(lister.page)} calls) | "
        f"{_ms(lister.page, 0.5)} / {_ms(lister.page, 0.99)} ms |",
        f"| ListIngestionJobs, 50 SUCCEEDED jobs, p50 / p99 ({len(lister.succeeded)} calls) | "
        f"{_ms(lister.succeeded, 0.5)} / {_ms(lister.succeeded, 0.99)} ms |",
        "",
        "Before this change the reaper sent the task of every job QUEUED for 600 s again (every "
        "600 s) and failed it with QUEUE_TIMEOUT after an hour: with these intervals the "
        "backlog test (`tests/e2e/test_backlog.py`, 150 documents, 3 s) saw up to 5 messages "
        "per job under the old reaper, and exactly 1 with this one.",
    ]
    return "\n".join(lines) + "\n"
