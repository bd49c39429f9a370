"""The stack a chaos run breaks: real processes on fixed loopback ports, so that
each can be killed and started again where its clients expect it.

Its own Redis (AOF), a `milvus-lite server` (Milvus as a separate process, so
that it can die under the retrieval service), the chunking, embedding,
retrieval and generation services, one or two gateways and one or two Celery
workers sharing that Redis and that Milvus (two of each: the shape a cluster
runs). The LLM is the bundled llama.cpp server, started here unless a base URL
is given (the e2e test shares the session's).
"""

from __future__ import annotations

import re
import signal
import sys
import time
import urllib.request
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from devstack.deps import redis_process, start_llm
from devstack.procs import (
    ManagedProcess,
    free_port,
    health_status,
    port_open,
    service_process,
    worker_process,
)

API_KEY = "chaos-key-0001"
TENANT = "chaos"


def milvus_lite_process(data_dir: Path, port: int, log_dir: Path) -> ManagedProcess:
    """`milvus-lite server` (Milvus Lite behind its gRPC port), stopped with SIGINT."""
    # milvus-lite's own server, with ragmesh's fixes to Lite installed first
    exe = [sys.executable, "-m", "services.retrieval.lite_server"]
    data_dir.mkdir(parents=True, exist_ok=True)
    argv = [*exe, "server", "--data-dir", str(data_dir), "--host", "127.0.0.1", "--port", str(port)]
    return ManagedProcess("milvus-lite", argv, log_dir=log_dir, stop_signal=signal.SIGINT)


@dataclass
class Node:
    """One process of the stack and how to tell it is up again."""

    name: str
    proc: ManagedProcess
    ready: Callable[[], bool]
    ready_timeout_s: float = 180.0
    addr: str = ""

    def start(self) -> None:
        self.proc.start()
        self.proc.wait_until(self.ready, self.ready_timeout_s, f"{self.name} ready")


@dataclass
class ChaosStack:
    base: Path
    workers: int = 1
    gateways: int = 1
    llm_base_url: str | None = None
    nodes: dict[str, Node] = field(default_factory=dict)
    gateway_addrs: list[str] = field(default_factory=list)
    redis_url: str = ""
    queue: str = field(default_factory=lambda: f"ragmesh-chaos-{uuid.uuid4().hex[:6]}")
    _extra: list[ManagedProcess] = field(default_factory=list)

    @property
    def logs(self) -> Path:
        return self.base / "logs"

    def start(self) -> ChaosStack:
        try:
            self._start()
        except BaseException:
            self.close()
            raise
        return self

    def _service(self, name: str, service: str, env: dict[str, str]) -> Node:
        port = free_port()
        addr = f"127.0.0.1:{port}"
        proc = service_process(service, port, env=env, log_dir=self.logs, metrics_port=free_port())
        proc.name = name
        proc.log_path = self.logs / f"{name}.log"
        node = Node(name, proc, lambda: health_status(addr) == "SERVING", addr=addr)
        node.start()
        self.nodes[name] = node
        return node

    def _start(self) -> None:
        redis_port, milvus_port = free_port(), free_port()
        redis = redis_process(redis_port, self.base / "redis", self.logs)
        self.redis_url = f"redis://127.0.0.1:{redis_port}/0"
        self.nodes["redis"] = Node("redis", redis, lambda: port_open("127.0.0.1", redis_port), 30)
        self.nodes["redis"].start()
        milvus = milvus_lite_process(self.base / "milvus", milvus_port, self.logs)
        self.nodes["milvus"] = Node("milvus", milvus, lambda: port_open("127.0.0.1", milvus_port))
        self.nodes["milvus"].start()
        if self.llm_base_url is None:
            llm, self.llm_base_url = start_llm(log_dir=self.logs)
            self._extra.append(llm)
        common = {"RAGMESH_LOG_FORMAT": "text", "RAGMESH_READINESS_INTERVAL_S": "0.5"}
        retrieval = self._service(
            "retrieval",
            "retrieval",
            {**common, "RAGMESH_RETRIEVAL_MILVUS_URI": f"http://127.0.0.1:{milvus_port}"},
        )
        chunking = self._service("chunking", "chunking", common)
        embedding = self._service("embedding", "embedding", common)
        generation = self._service(
            "generation",
            "generation",
            {**common, "RAGMESH_GENERATION_LLM_BASE_URL": self.llm_base_url},
        )
        shared = {
            **common,
            "RAGMESH_REDIS_URL": self.redis_url,
            "RAGMESH_CHUNKING_ADDR": chunking.addr,
            "RAGMESH_EMBEDDING_ADDR": embedding.addr,
            "RAGMESH_RETRIEVAL_ADDR": retrieval.addr,
            "RAGMESH_GENERATION_ADDR": generation.addr,
            "RAGMESH_WORKER_QUEUE": self.queue,
            # A killed worker's job is taken over after 5 s without a heartbeat.
            "RAGMESH_JOB_HEARTBEAT_TIMEOUT_S": "5",
            "RAGMESH_BLOB_DIR": str(self.base / "blobs"),
        }
        for i in range(self.gateways):
            gateway = self._service(
                f"gateway{i}",
                "gateway",
                {
                    **shared,
                    "RAGMESH_GATEWAY_API_KEYS": f"{API_KEY}:{TENANT}",
                    "RAGMESH_GATEWAY_REAPER_INTERVAL_S": "1",
                    # A QUEUED job's message is looked for in the broker after 10 s
                    # (600 s by default): one lost with a killed worker or Redis is
                    # sent again within the run, not ten minutes later.
                    "RAGMESH_GATEWAY_QUEUED_REQUEUE_AFTER_S": "10",
                    "RAGMESH_GATEWAY_SWEEP_AFTER_S": "2",
                },
            )
            self.gateway_addrs.append(gateway.addr)
        # Retries keep their defaults (5, backoff up to 60 s): outages must be
        # ridden out as a deployment would.
        self.worker_env = {**shared, "RAGMESH_WORKER_HEARTBEAT_INTERVAL_S": "0.5"}
        for i in range(self.workers):
            proc = worker_process(
                f"worker{i}", f"chaos{i}@%h", env=self.worker_env, log_dir=self.logs
            )
            proc.log_path = self.logs / f"worker{i}.log"
            node = Node(f"worker{i}", proc, _worker_ready(proc), 120)
            node.start()
            self.nodes[node.name] = node

    # faults

    def kill(self, name: str) -> None:
        """SIGKILL the process and everything it started (its process group)."""
        self.nodes[name].proc.kill()

    def restart(self, name: str) -> float:
        """Starts a killed process again where it was; returns the seconds it took
        to be ready."""
        node = self.nodes[name]
        if name.startswith("worker"):
            node.ready = _worker_ready(node.proc)
        began = time.monotonic()
        node.start()
        return time.monotonic() - began

    def wait_serving(self, name: str, timeout: float = 120) -> float:
        """Waits until a service's health says SERVING again; returns the seconds."""
        node = self.nodes[name]
        began = time.monotonic()
        node.proc.wait_until(node.ready, timeout, f"{name} SERVING again")
        return time.monotonic() - began

    def gateway_metric(self, name: str) -> dict[str, float]:
        """A counter of every gateway's Prometheus metrics, summed by its labels."""
        found: dict[str, float] = {}
        for node in self.nodes.values():
            if not node.name.startswith("gateway"):
                continue
            port = node.proc.argv[node.proc.argv.index("--metrics-port") + 1]
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as resp:
                text = resp.read().decode()
            for match in re.finditer(rf"^{re.escape(name)}(?:{{([^}}]*)}})? (\S+)$", text, re.M):
                labels = match.group(1) or ""
                found[labels] = found.get(labels, 0.0) + float(match.group(2))
        return found

    def worker_names(self) -> list[str]:
        return [n for n in self.nodes if n.startswith("worker")]

    def close(self) -> None:
        for node in reversed(list(self.nodes.values())):
            node.proc.stop()
        for proc in self._extra:
            proc.stop()


def _worker_ready(proc: ManagedProcess) -> Callable[[], bool]:
    """Celery prints ' ready.' once it consumes; only lines written after now count."""
    try:
        start = proc.log_path.stat().st_size
    except OSError:
        start = 0

    def ready() -> bool:
        try:
            with proc.log_path.open("rb") as fh:
                fh.seek(start)
                return b" ready." in fh.read()
        except OSError:
            return False

    return ready
