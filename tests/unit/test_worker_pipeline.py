"""The worker's pieces: Celery settings, error classification over real gRPC,
and the heartbeat against the real Redis fixture."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import grpc
import pytest

from devstack.procs import free_port
from ragmesh.chunking.v1 import chunking_pb2, chunking_pb2_grpc
from services.common.config import CommonSettings
from services.common.server import start_server
from services.jobs.queue import INGEST_TASK
from services.jobs.records import DocumentRecord, JobStage, JobState, KnowledgeBaseRecord
from services.jobs.settings import JobsSettings
from services.jobs.state import JobsState
from services.worker import tasks  # noqa: F401 - registers the task
from services.worker.app import app
from services.worker.clients import Clients, Timeouts, classify_rpc_error
from services.worker.errors import JobLost, PermanentError, TransientError
from services.worker.pipeline import Heartbeat, Ingestor
from tests.support.toy_service import ToyService


def test_celery_reliability_settings() -> None:
    conf = app.conf
    assert conf.task_acks_late and conf.task_reject_on_worker_lost
    assert conf.worker_prefetch_multiplier == 1
    options = conf.broker_transport_options
    assert options["visibility_timeout"] > conf.task_time_limit
    assert options["unacked_restore_interval"] <= 10
    task = app.tasks[INGEST_TASK]
    assert task.max_retries >= 1 and TransientError in task.autoretry_for


async def test_classify_errors_over_real_grpc() -> None:
    port = free_port()
    running = await start_server(
        ToyService(),  # type: ignore[arg-type]
        port,
        CommonSettings(  # type: ignore[call-arg]
            metrics_enabled=False
        ),
    )
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = chunking_pb2_grpc.ChunkingServiceStub(channel)
            with pytest.raises(grpc.aio.AioRpcError) as exc:
                await stub.ChunkDocument(chunking_pb2.ChunkDocumentRequest(text="invalid"))
            error = classify_rpc_error(exc.value, "chunking")  # type: ignore[arg-type]
            assert isinstance(error, PermanentError)
            assert (error.error.code, error.error.reason) == ("INVALID_ARGUMENT", "TOY_INVALID")
            assert error.error.domain == "toy.ragmesh"
            assert error.error.metadata == {"field": "text"}
            # RESOURCE_EXHAUSTED: a limit the document exceeds fails the job at once;
            # an overloaded service (RetryInfo) is retried later
            for text, kind in (("too-large", PermanentError), ("busy", TransientError)):
                with pytest.raises(grpc.aio.AioRpcError) as exc:
                    await stub.ChunkDocument(chunking_pb2.ChunkDocumentRequest(text=text))
                classified = classify_rpc_error(exc.value, "chunking")  # type: ignore[arg-type]
                assert isinstance(classified, kind), text
                assert classified.error.code == "RESOURCE_EXHAUSTED"  # type: ignore[attr-defined]
    finally:
        await running.stop()
    # Nothing listens there any more: UNAVAILABLE, worth a retry.
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub_sync = chunking_pb2_grpc.ChunkingServiceStub(channel)
        with pytest.raises(grpc.RpcError) as sync_exc:
            stub_sync.ChunkDocument(chunking_pb2.ChunkDocumentRequest(text="x"), timeout=5)
    transient = classify_rpc_error(sync_exc.value, "chunking")
    assert isinstance(transient, TransientError)
    assert transient.error.code == "UNAVAILABLE"


@pytest.fixture
def store(redis_url: str) -> Iterator[JobsState]:
    s = JobsState.from_settings(JobsSettings(redis_url=redis_url))
    yield s
    s.close()


def queued_upload(store: JobsState) -> tuple[str, str]:
    """(tenant, job id) of a QUEUED upload of document `d` into knowledge base `kb`."""
    tenant = f"t{uuid.uuid4().hex[:8]}"
    store.catalogue.create_kb(
        KnowledgeBaseRecord(tenant=tenant, knowledge_base_id="kb", collection="c")
    )
    job_id = store.book.register_upload(
        tenant,
        "kb",
        DocumentRecord(tenant=tenant, knowledge_base_id="kb", document_id="d", version="v"),
        b"hello",
    ).job.job_id
    return tenant, job_id


@contextmanager
def ingestor_of_unreachable_services(store: JobsState) -> Iterator[Ingestor]:
    """An Ingestor whose services are all at an address nothing listens on."""
    from services.common.config import ServiceAddresses
    from services.worker.config import WorkerSettings

    down = f"127.0.0.1:{free_port()}"
    clients = Clients(
        ServiceAddresses(chunking_addr=down, embedding_addr=down, retrieval_addr=down),  # type: ignore[call-arg]
        Timeouts(chunk_s=10, embed_s=10, index_s=10),
    )
    try:
        yield Ingestor(store, clients, WorkerSettings(), heartbeat_timeout_s=30)  # type: ignore[call-arg]
    finally:
        clients.close()


def test_heartbeat_keeps_a_job_alive_and_notices_cancellation(store: JobsState) -> None:
    tenant, job_id = queued_upload(store)
    assert store.runs.claim_job(job_id, "me", 30) == "ok"
    first = store.book.get_job(job_id).heartbeat
    with Heartbeat(store, job_id, "me", interval_s=0.05) as beat:
        deadline = time.monotonic() + 10
        while store.book.get_job(job_id).heartbeat == first and time.monotonic() < deadline:
            time.sleep(0.02)
        assert store.book.get_job(job_id).heartbeat > first
        beat.progress(stage=JobStage.EMBEDDING, chunks_done=1)
        assert store.book.get_job(job_id).stage == JobStage.EMBEDDING
        store.book.cancel_job(tenant, job_id)
        with pytest.raises(JobLost):
            beat.progress(chunks_done=2)
    assert store.book.get_job(job_id).chunks_done == 1


def test_unreachable_service_requeues_then_fails_after_the_last_retry(store: JobsState) -> None:
    """Chunking is down (nothing listens at its address): the run hands the job
    back to the queue for a retry, and the last retry fails it with the reason."""
    _, job_id = queued_upload(store)
    with ingestor_of_unreachable_services(store) as ingestor:
        with pytest.raises(TransientError) as exc:
            ingestor.run(job_id, retries=0, max_retries=2)
        assert exc.value.error.code == "UNAVAILABLE"
        assert store.book.get_job(job_id).state == JobState.QUEUED
        outcome = ingestor.run(job_id, retries=2, max_retries=2)
        assert outcome.result == "failed"
        job = store.book.get_job(job_id)
        assert job.state == "FAILED" and job.error is not None
        assert job.error.code == "UNAVAILABLE" and job.attempt == 2
        assert "gave up after 3 attempts" in job.error.message


def test_a_job_whose_document_is_gone_ends_instead_of_waiting_for_the_reaper(
    store: JobsState,
) -> None:
    """The run finds its document's record gone while the job is still its own (a delete
    that did not end the job): it cancels the job, which would otherwise stay RUNNING
    until the reaper sent it again and finally failed it as WORKER_LOST."""
    tenant, job_id = queued_upload(store)
    store.db.r.delete(store.db.keys.doc(tenant, "kb", "d"))
    with ingestor_of_unreachable_services(store) as ingestor:  # never called: no record
        outcome = ingestor.run(job_id)
    assert outcome.result == "lost:DOCUMENT_DELETED"
    job = store.book.get_job(job_id)
    assert job.state == JobState.CANCELLED and job.error is not None
    assert job.error.reason == "DOCUMENT_DELETED"
    assert store.db.r.zscore(store.db.keys.active_jobs, job_id) is None
