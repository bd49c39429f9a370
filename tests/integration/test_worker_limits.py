"""What bounds one document's hold on a worker, against a real chunking service
and Redis: a document with more chunks than RAGMESH_WORKER_MAX_CHUNKS_PER_DOCUMENT
fails DOCUMENT_TOO_MANY_CHUNKS before any is embedded (found by the hostile-upload
corpus: a 30 MB HTML page held the only worker for the whole task time limit), and
a run stopped by Celery's soft time limit fails INGEST_TIME_LIMIT instead of
INTERNAL_ERROR."""

from __future__ import annotations

import signal
import socket
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from celery.exceptions import SoftTimeLimitExceeded

from services.common.config import ServiceAddresses
from services.jobs.records import JobState
from services.jobs.settings import JobsSettings
from services.jobs.state import JobsState
from services.worker.clients import Clients, Timeouts
from services.worker.config import WorkerSettings
from services.worker.pipeline import Ingestor
from tests.support.jobs import uploaded_job

DOC = "\n\n".join(f"Paragraph {i}. " + "The zebra finch sings at dawn. " * 60 for i in range(12))


@pytest.fixture
def store(redis_url: str) -> Iterator[JobsState]:
    s = JobsState.from_settings(JobsSettings(redis_url=redis_url))
    yield s
    s.close()


def _job(store: JobsState, content: bytes) -> str:
    return uploaded_job(store, content).job_id


def _ingestor(store: JobsState, chunking: str, **settings: Any) -> Ingestor:
    nowhere = "127.0.0.1:9"  # embedding and retrieval must never be called
    clients = Clients(
        ServiceAddresses(chunking_addr=chunking, embedding_addr=nowhere, retrieval_addr=nowhere),  # type: ignore[call-arg]
        Timeouts(chunk_s=30, embed_s=5, index_s=5),
    )
    return Ingestor(store, clients, WorkerSettings(**settings), heartbeat_timeout_s=30)


def test_too_many_chunks_fails_before_embedding(
    store: JobsState, start_ragmesh_service: Any
) -> None:
    _, chunking = start_ragmesh_service("chunking")
    job_id = _job(store, DOC.encode())
    ingestor = _ingestor(store, chunking, max_chunks_per_document=3)
    try:
        assert ingestor.run(job_id).result == "failed"
    finally:
        ingestor.clients.close()
    job = store.book.get_job(job_id)
    assert job.state == JobState.FAILED and job.error is not None
    assert (job.error.code, job.error.reason) == ("INVALID_ARGUMENT", "DOCUMENT_TOO_MANY_CHUNKS")
    assert "RAGMESH_WORKER_MAX_CHUNKS_PER_DOCUMENT" in job.error.message
    assert job.chunks_done == 0


def test_the_soft_time_limit_fails_the_job_precisely(store: JobsState) -> None:
    """Celery's soft limit arrives as a signal whose handler raises
    SoftTimeLimitExceeded in the task (billiard's prefork child does exactly this);
    here it interrupts a ChunkDocument call to a server that never answers."""
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)

    def soft_limit(*_: object) -> None:
        raise SoftTimeLimitExceeded()

    previous = signal.signal(signal.SIGUSR1, soft_limit)
    timer = threading.Timer(1.0, signal.raise_signal, (signal.SIGUSR1,))
    job_id = _job(store, DOC.encode())
    ingestor = _ingestor(store, f"127.0.0.1:{silent.getsockname()[1]}", task_time_limit_s=60)
    try:
        timer.start()
        assert ingestor.run(job_id).result == "failed"
    finally:
        timer.cancel()
        signal.signal(signal.SIGUSR1, previous)
        ingestor.clients.close()
        silent.close()
    job = store.book.get_job(job_id)
    assert job.state == JobState.FAILED and job.error is not None
    assert (job.error.code, job.error.reason) == ("DEADLINE_EXCEEDED", "INGEST_TIME_LIMIT")
    assert "RAGMESH_WORKER_TASK_TIME_LIMIT_S" in job.error.message
