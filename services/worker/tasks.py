"""The Celery task: one per document, the job id in the message."""

from __future__ import annotations

import logging

from celery import Task
from celery.signals import worker_process_shutdown

from services.common import tracing
from services.common.config import ServiceAddresses
from services.jobs.queue import INGEST_TASK
from services.jobs.state import JobsState
from services.worker.app import app, jobs_settings, settings
from services.worker.clients import Clients, Timeouts
from services.worker.errors import TransientError
from services.worker.pipeline import Ingestor
from services.worker.trace import traced_run

log = logging.getLogger("ragmesh.worker")

_ingestor: Ingestor | None = None


def ingestor() -> Ingestor:
    """Per worker process, created on first use: gRPC channels and Redis
    connections must not cross the prefork fork."""
    global _ingestor  # noqa: PLW0603 - one per process by design
    if _ingestor is None:
        # Here, after the fork, like the channels: the exporter's own gRPC channel
        # and batching thread must not cross it either.
        tracing.configure("worker")
        clients = Clients(
            ServiceAddresses(),
            Timeouts(settings.chunk_timeout_s, settings.embed_timeout_s, settings.index_timeout_s),
        )
        _ingestor = Ingestor(
            JobsState.from_settings(jobs_settings),
            clients,
            settings,
            jobs_settings.job_heartbeat_timeout_s,
        )
    return _ingestor


@worker_process_shutdown.connect
def _close(**_: object) -> None:
    if _ingestor is not None:
        _ingestor.clients.close()
        _ingestor.state.close()
    tracing.shutdown()


@app.task(
    name=INGEST_TASK,
    bind=True,
    autoretry_for=(TransientError,),
    retry_backoff=2,
    retry_backoff_max=settings.retry_backoff_max_s,
    retry_jitter=True,
    max_retries=settings.max_retries,
)
def ingest_document(self: Task, job_id: str) -> str:
    runner = ingestor()
    with traced_run(self.request, job_id, jobs_settings.worker_queue) as span:
        outcome = runner.run(
            job_id, retries=self.request.retries, max_retries=self.max_retries or 0
        )
        span.set_attribute("ragmesh.outcome", outcome.result)
    return outcome.result
