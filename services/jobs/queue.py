"""The ingestion queue: how a job id reaches a worker.

`IngestionQueue` is the interface; `CeleryQueue` sends the worker's task by
name through the Redis broker, so the gateway never builds (or imports) the
worker's Celery app. The broker options are shared with that app: both ends
of one queue must agree on them.
"""

from __future__ import annotations

from typing import Any, Protocol

from celery import Celery

from services.jobs.settings import JobsSettings

INGEST_TASK = "ragmesh.ingest_document"


class IngestionQueue(Protocol):
    def send(self, job_id: str) -> None:
        """Queue the ingestion of one job (its record says what to ingest)."""

    def close(self) -> None: ...


def broker_transport_options(visibility_timeout_s: int, restore_interval_s: int) -> dict[str, Any]:
    """kombu's Redis transport options for the ingestion queue."""
    return {
        # Longer than the longest task: a running task must not be redelivered.
        "visibility_timeout": visibility_timeout_s,
        # Restore expired unacked messages promptly (kombu scans every
        # interval × throttle seconds).
        "unacked_restore_interval": restore_interval_s,
        "unacked_restore_throttle": 1,
    }


class CeleryQueue:
    """Sends INGEST_TASK with the job id as its only argument."""

    def __init__(self, settings: JobsSettings) -> None:
        self.queue = settings.worker_queue
        self.app = Celery("ragmesh-producer", broker=settings.redis_url)
        self.app.conf.update(
            task_serializer="json",
            accept_content=["json"],
            broker_connection_retry_on_startup=True,
        )

    def send(self, job_id: str) -> None:
        self.app.send_task(INGEST_TASK, args=[job_id], queue=self.queue)

    def close(self) -> None:
        self.app.close()
