"""The running ragmesh stack shared by the end-to-end modules.

`stack` starts Redis-backed services around Milvus Lite and the llama.cpp server (all
five services and one Celery worker) once per test module, with two tenants' API keys.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
import redis

from devstack.deps import start_redis
from devstack.procs import ManagedProcess, free_port, worker_process
from ragmesh.chunking.v1 import chunking_pb2, chunking_pb2_grpc
from ragmesh.common.v1 import common_pb2
from ragmesh.gateway.v1 import gateway_pb2 as pb
from ragmesh.gateway.v1 import gateway_pb2_grpc
from ragmesh.retrieval.v1 import retrieval_pb2, retrieval_pb2_grpc
from services.jobs.keys import Keys

ALPHA_KEY, BETA_KEY = "alpha-key-0001", "beta-key-0002"
MAX_UPLOAD = 300_000
FINAL_STATES = (pb.JOB_STATE_SUCCEEDED, pb.JOB_STATE_FAILED, pb.JOB_STATE_CANCELLED)


class Stack:
    def __init__(
        self, gateway: str, chunking: str, retrieval: str, worker_env: dict[str, str], log_dir: Path
    ) -> None:
        self.gateway = gateway
        self.retrieval_addr = retrieval
        self.channel = grpc.insecure_channel(gateway)
        self.rag = gateway_pb2_grpc.RagServiceStub(self.channel)
        self.chunking = chunking_pb2_grpc.ChunkingServiceStub(grpc.insecure_channel(chunking))
        self.retrieval = retrieval_pb2_grpc.RetrievalServiceStub(grpc.insecure_channel(retrieval))
        self.worker_env = worker_env
        self.log_dir = log_dir
        self.workers: list[ManagedProcess] = []
        self.retrieval_proc: ManagedProcess | None = None

    def start_worker(self) -> ManagedProcess:
        proc = worker_process(
            f"worker{len(self.workers)}",
            f"w{len(self.workers)}-{uuid.uuid4().hex[:6]}@%h",
            env=self.worker_env,
            log_dir=self.log_dir,
        ).start()
        self.workers.append(proc)
        return proc

    # calls

    def call(self, method: str, request: Any, key: str | None = ALPHA_KEY) -> Any:
        metadata = [("authorization", f"Bearer {key}")] if key else []
        return getattr(self.rag, method)(request, metadata=metadata, timeout=60)

    def upload(
        self,
        kb: str,
        name: str,
        data: bytes,
        *,
        key: str = ALPHA_KEY,
        document_id: str = "",
        media_type: str = "",
        piece: int = 64 * 1024,
    ) -> pb.UploadDocumentResponse:
        def messages() -> Iterator[pb.UploadDocumentRequest]:
            yield pb.UploadDocumentRequest(
                header=pb.UploadHeader(
                    knowledge_base_id=kb,
                    file_name=name,
                    document_id=document_id,
                    media_type=media_type,
                )
            )
            for i in range(0, len(data), piece):
                yield pb.UploadDocumentRequest(data=data[i : i + piece])

        return self.rag.UploadDocument(
            messages(), metadata=[("authorization", f"Bearer {key}")], timeout=60
        )

    def wait(self, job_id: str, key: str = ALPHA_KEY, timeout: float = 240) -> pb.IngestionJob:
        """Watches the job until it ends; returns its final state."""
        stream = self.rag.WatchIngestionJob(
            pb.WatchIngestionJobRequest(job_id=job_id),
            metadata=[("authorization", f"Bearer {key}")],
            timeout=timeout,
        )
        last = None
        for event in stream:
            last = event.job
        assert last is not None and last.state in FINAL_STATES, last
        return last

    def search(
        self, kb: str, query: str, top_k: int = 3, key: str = ALPHA_KEY
    ) -> list[common_pb2.Citation]:
        return list(
            self.call(
                "Search", pb.SearchRequest(knowledge_base_id=kb, query=query, top_k=top_k), key
            ).hits
        )

    def stored_chunks(self, tenant: str, kb: str, document_id: str) -> list[int]:
        indexes: list[int] = []
        token = ""
        while True:
            resp = self.retrieval.ListChunks(
                retrieval_pb2.ListChunksRequest(
                    collection=self.collection(tenant, kb),
                    document_id=document_id,
                    page_size=500,
                    page_token=token,
                    omit_text=True,
                ),
                timeout=30,
            )
            indexes += [c.chunk_index for c in resp.chunks]
            token = resp.next_page_token
            if not token:
                return sorted(indexes)

    def collection(self, tenant: str, kb: str) -> str:
        """The Milvus collection of a knowledge base, from its record in Redis."""
        client = redis.Redis.from_url(self.worker_env["RAGMESH_REDIS_URL"])
        try:
            name = client.hget(Keys().kb(tenant, kb), "collection")
        finally:
            client.close()
        assert name, f"no knowledge base {kb!r} of {tenant!r}"
        return bytes(name).decode()

    def chunk_count(self, data: bytes, name: str) -> int:
        resp = self.chunking.ChunkDocument(
            chunking_pb2.ChunkDocumentRequest(content=data, file_name=name, document_id="x"),
            timeout=60,
        )
        return len(resp.chunks)

    def normalized_text(self, data: bytes, name: str) -> str:
        resp = self.chunking.ChunkDocument(
            chunking_pb2.ChunkDocumentRequest(
                content=data,
                file_name=name,
                document_id="x",
                options=chunking_pb2.ChunkingOptions(include_normalized_text=True),
            ),
            timeout=60,
        )
        return str(resp.normalized_text)


@pytest.fixture(scope="module")
def redis_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The data directory (AOF) of `redis_proc`."""
    return tmp_path_factory.mktemp("redis-own")


@pytest.fixture(scope="module")
def redis_proc(redis_data: Path, log_dir: Path) -> Iterator[ManagedProcess]:
    """A Redis of the module's own, for tests that stop, restart or restore it
    (`.port` is its port)."""
    port = free_port()
    proc, _ = start_redis(redis_data, port=port, log_dir=log_dir)
    proc.port = port  # type: ignore[attr-defined]
    yield proc
    proc.stop()


def build_stack(
    start: Any,
    redis_url: str,
    milvus_dir: Path,
    log_dir: Path,
    *,
    llm_base_url: str | None = None,
    retrieval_env: dict[str, str] | None = None,
    gateway_env: dict[str, str] | None = None,
    generation_env: dict[str, str] | None = None,
) -> Stack:
    """The five services (generation only with an LLM) and one worker, on free
    ports; `start` is the `start_ragmesh_service` fixture."""
    retrieval_proc, retrieval = start(
        "retrieval",
        env={"RAGMESH_RETRIEVAL_MILVUS_URI": str(milvus_dir / "e2e.db"), **(retrieval_env or {})},
    )
    _, chunking = start("chunking")
    _, embedding = start("embedding")
    generation = "127.0.0.1:9"  # nothing listens: Ask is not used without an LLM
    if llm_base_url is not None:
        _, generation = start(
            "generation",
            env={"RAGMESH_GENERATION_LLM_BASE_URL": llm_base_url, **(generation_env or {})},
        )
    shared = {
        "RAGMESH_REDIS_URL": redis_url,
        "RAGMESH_CHUNKING_ADDR": chunking,
        "RAGMESH_EMBEDDING_ADDR": embedding,
        "RAGMESH_RETRIEVAL_ADDR": retrieval,
        "RAGMESH_GENERATION_ADDR": generation,
        # A queue of this module's own, so no other test's worker takes its tasks.
        "RAGMESH_WORKER_QUEUE": f"ragmesh-e2e-{uuid.uuid4().hex[:8]}",
        "RAGMESH_JOB_HEARTBEAT_TIMEOUT_S": "5",
        # Kept originals, shared by the gateway and the worker like `make run`'s data/blobs.
        "RAGMESH_BLOB_DIR": str(milvus_dir / "blobs"),
    }
    _, gateway = start(
        "gateway",
        env={
            **shared,
            "RAGMESH_GATEWAY_API_KEYS": f"{ALPHA_KEY}:alpha,{BETA_KEY}:beta",
            "RAGMESH_GATEWAY_MAX_UPLOAD_BYTES": str(MAX_UPLOAD),
            "RAGMESH_GATEWAY_REAPER_INTERVAL_S": "1",
            **(gateway_env or {}),
        },
    )
    worker_env = {
        **shared,
        "RAGMESH_WORKER_HEARTBEAT_INTERVAL_S": "0.5",
        "RAGMESH_WORKER_EMBED_BATCH_SIZE": "4",
        "RAGMESH_WORKER_RETRY_BACKOFF_MAX_S": "2",
    }
    s = Stack(gateway, chunking, retrieval, worker_env, log_dir)
    s.retrieval_proc = retrieval_proc
    s.start_worker()
    return s


@pytest.fixture(scope="module")
def stack(
    redis_url: str,
    llm_base_url: str,
    start_ragmesh_service: Any,
    tmp_path_factory: pytest.TempPathFactory,
    log_dir: Path,
) -> Iterator[Stack]:
    s = build_stack(
        start_ragmesh_service,
        redis_url,
        tmp_path_factory.mktemp("milvus"),
        log_dir,
        llm_base_url=llm_base_url,
    )
    try:
        yield s
    finally:
        for proc in s.workers:
            proc.stop()
