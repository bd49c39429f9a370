"""The worker's side of an ingestion job's trace: the task's run continues the
trace that the gateway's send began (W3C `traceparent` in the task message's
headers, services.jobs.queue.CeleryQueue.send).

Spans: `<queue> process` (CONSUMER, the whole run, a child of the gateway's
`<queue> publish`), and beside it `ingest.queue_wait`, from the send to this
run's start (the send time travels in a header; the two clocks are the
gateway's and the worker's, so hosts out of sync skew it). The steps of the run
(`ingest.parse`, `ingest.embed`, `ingest.upsert`) are the pipeline's.

A retry is sent again by the worker, and Celery copies the first message's
headers into it: `restamp` gives it its own send time (its queue wait is the
backoff and the queue, not the earlier runs), and the current span as parent
when there is one.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from celery.signals import before_task_publish

from services.common import tracing
from services.jobs.queue import ENQUEUED_AT_HEADER, INGEST_TASK


def message_headers(request: Any) -> dict[str, Any]:
    """The custom headers of the task's message: Celery (protocol 2) keeps them
    on the request itself, and in `request.headers` in some versions."""
    found: dict[str, Any] = {}
    headers = getattr(request, "headers", None)
    if isinstance(headers, Mapping):
        found.update(headers)
    for name in ("traceparent", "tracestate", "baggage", ENQUEUED_AT_HEADER):
        value = getattr(request, name, None)
        if value is not None and name not in found:
            found[name] = value
    return found


@contextmanager
def traced_run(request: Any, job_id: str, queue: str = "") -> Iterator[tracing.Span]:
    """The CONSUMER span of one run of the ingestion task, current inside."""
    if not tracing.enabled():
        yield tracing.INVALID_SPAN
        return
    headers = message_headers(request)
    parent = tracing.extract(headers)
    queue = queue or str((getattr(request, "delivery_info", None) or {}).get("routing_key", ""))
    retries = int(getattr(request, "retries", 0) or 0)
    enqueued_at = headers.get(ENQUEUED_AT_HEADER)
    if isinstance(enqueued_at, (int, float)) and not isinstance(enqueued_at, bool):
        waited = max(0.0, time.time() - float(enqueued_at))
        wait = tracing.start(
            "ingest.queue_wait",
            {"ragmesh.job_id": job_id, "ragmesh.retries": retries, "ragmesh.waited_s": waited},
            context=parent,
            start_time_ns=tracing.epoch_ns(float(enqueued_at)),
        )
        wait.end()
    with tracing.span(
        f"{queue} process".strip(),
        {
            "messaging.system": "celery",
            "messaging.operation": "process",
            "messaging.destination.name": queue,
            "messaging.message.id": str(getattr(request, "id", "") or ""),
            "ragmesh.job_id": job_id,
            "ragmesh.retries": retries,
        },
        kind=tracing.SpanKind.CONSUMER,
        context=parent,
    ) as span:
        yield span


@before_task_publish.connect
def restamp(sender: str | None = None, headers: dict[str, Any] | None = None, **_: object) -> None:
    """Celery's hook before a message leaves: an ingestion message that carries
    trace headers gets the send time of now (and the current span, if any)."""
    if sender != INGEST_TASK or headers is None or not tracing.enabled():
        return
    if "traceparent" in headers or ENQUEUED_AT_HEADER in headers:
        headers.update(tracing.inject({}))
        headers[ENQUEUED_AT_HEADER] = time.time()
