"""The Celery app of the ingestion workers (Redis broker).

Run: `python -m celery -A services.worker.app worker --concurrency 1 --pool prefork`.
Messages carry a job id only; the bytes and the job record live in Redis
(services.jobs). Tasks are acknowledged after they finish (acks_late) and given
back when their worker process dies (task_reject_on_worker_lost); a whole
worker killed with SIGKILL is caught by the gateway's reaper through the job
heartbeat, and, as a second line, by the broker's visibility timeout.
"""

from __future__ import annotations

from celery import Celery

from services.common import tracing
from services.jobs.queue import broker_transport_options
from services.jobs.settings import JobsSettings
from services.worker.broker import TRANSPORT
from services.worker.config import WorkerSettings

settings = WorkerSettings()
jobs_settings = JobsSettings()
# A mistyped OTEL_* variable stops the worker here, at start-up; tracing itself is set
# up in each forked child (services.worker.tasks.ingestor).
tracing.check()

app = Celery("ragmesh", broker=jobs_settings.redis_url, include=["services.worker.tasks"])
app.conf.update(
    # kombu's Redis transport with a fix: the worker survives a broker restart.
    broker_transport=TRANSPORT,
    task_acks_late=True,
    task_reject_on_worker_lost=True,
    worker_prefetch_multiplier=1,
    task_default_queue=jobs_settings.worker_queue,
    task_ignore_result=True,
    task_serializer="json",
    accept_content=["json"],
    task_time_limit=settings.task_time_limit_s,
    task_soft_time_limit=max(settings.task_time_limit_s - 30, 5),
    broker_connection_retry_on_startup=True,
    broker_transport_options=broker_transport_options(
        settings.visibility_timeout_s, settings.unacked_restore_interval_s
    ),
    worker_cancel_long_running_tasks_on_connection_loss=True,
)
