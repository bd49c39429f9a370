"""The ingestion queue: how a job id reaches a worker, and which job ids the
broker still holds.

`IngestionQueue` is the interface; `CeleryQueue` sends the worker's task by
name through the Redis broker, so the gateway never builds (or imports) the
worker's Celery app. The broker options are shared with that app: both ends
of one queue must agree on them.

`CeleryQueue.snapshot` reads the broker the way kombu's Redis transport
stores it (kombu/transport/redis.py), without consuming anything:

- a waiting message is a JSON envelope in the Redis list named after the
  queue (LPUSH by the producer, BRPOP by a worker), or in one of its priority
  lists `<queue>\\x06\\x16<step>` (steps 3, 6, 9; none is used here);
- a message delivered to a worker and not acknowledged yet (acks_late: until
  its task ends) is in the hash `unacked` (delivery tag → JSON
  `[envelope, exchange, routing key]`), with its delivery time in the zset
  `unacked_index`; kombu moves it back to the list when the worker gives it
  back or after the visibility timeout.

The envelope's headers name the task (`task`) and its ETA (`eta`, a retry's
countdown); its body (base64) is Celery's protocol 2 `[args, kwargs, embed]`,
whose first argument is the job id.
"""

from __future__ import annotations

import base64
import binascii
import json
import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

import redis
from celery import Celery
from kombu.transport.redis import PRIORITY_STEPS
from kombu.transport.redis import Channel as RedisChannel

from services.common import tracing
from services.jobs.db import client_options
from services.jobs.settings import JobsSettings

INGEST_TASK = "ragmesh.ingest_document"
#: message header: when the message was sent (epoch seconds), for the worker's
#: queue-wait span (sent only when tracing is on, with `traceparent`)
ENQUEUED_AT_HEADER = "ragmesh_enqueued_at"
#: kombu's names (its Redis channel's defaults; this project sets none of them)
UNACKED_KEY: str = RedisChannel.unacked_key
UNACKED_INDEX_KEY: str = RedisChannel.unacked_index_key
PRIORITY_SEP: str = RedisChannel.sep
_TASK_BYTES = INGEST_TASK.encode()
#: list entries read per LRANGE while scanning a long queue
SCAN_PAGE = 1000


@dataclass
class QueueSnapshot:
    """The ingestion messages the broker holds, by job id."""

    #: job ids with a message waiting in the queue
    waiting: set[str] = field(default_factory=set)
    #: job id → when its unacknowledged message was delivered to a worker (its
    #: ETA instead, when that is later: a retry waiting for its countdown)
    delivered: dict[str, float] = field(default_factory=dict)
    #: messages read (waiting and unacknowledged, of every task)
    messages: int = 0
    seconds: float = 0.0


class IngestionQueue(Protocol):
    def send(self, job_id: str) -> None:
        """Queue the ingestion of one job (its record says what to ingest)."""

    def snapshot(self) -> QueueSnapshot:
        """The job ids whose messages the broker holds now (one scan)."""

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


def priority_lists(queue: str) -> list[str]:
    """The Redis lists of a queue: its own, then one per non-zero priority step."""
    return [queue] + [f"{queue}{PRIORITY_SEP}{step}" for step in PRIORITY_STEPS if step]


def _eta(headers: dict[str, Any]) -> float:
    raw = headers.get("eta")
    if not isinstance(raw, str) or not raw:
        return 0.0
    try:
        return datetime.fromisoformat(raw).timestamp()
    except ValueError:
        return 0.0


def ingest_envelope(envelope: Any) -> tuple[str, float] | None:
    """(job id, ETA or 0) of a decoded kombu envelope carrying INGEST_TASK; None
    for any other message (or one that cannot be read)."""
    try:
        headers = envelope.get("headers") or {}
        if headers.get("task") != INGEST_TASK:
            return None
        body = envelope.get("body", "")
        if envelope.get("properties", {}).get("body_encoding") == "base64":
            body = base64.b64decode(body)
        args = json.loads(body)[0]
    except (ValueError, TypeError, AttributeError, IndexError, KeyError, binascii.Error):
        return None
    if not args or not isinstance(args, list) or not isinstance(args[0], str):
        return None
    return args[0], _eta(headers)


def ingest_message(raw: bytes) -> tuple[str, float] | None:
    """The same for a list entry (the envelope as JSON)."""
    if _TASK_BYTES not in raw:  # another task's message: not worth decoding
        return None
    try:
        envelope = json.loads(raw)
    except ValueError:
        return None
    return ingest_envelope(envelope)


class BrokerScanner:
    """One read-only scan of a queue's lists and of the unacknowledged messages."""

    def __init__(self, client: redis.Redis, queue: str, page: int = SCAN_PAGE) -> None:
        self.r: Any = client
        self.queue = queue
        self.page = page

    def snapshot(self) -> QueueSnapshot:
        start = time.perf_counter()
        snap = QueueSnapshot()
        lists = priority_lists(self.queue)
        pipe = self.r.pipeline(transaction=False)
        for name in lists:
            pipe.llen(name)
        for name, length in zip(lists, pipe.execute(), strict=True):
            if length:
                self._scan_list(name, snap)
        self._scan_unacked(snap)
        snap.seconds = time.perf_counter() - start
        return snap

    def _scan_list(self, name: str, snap: QueueSnapshot) -> None:
        # From the head (LPUSH end): new messages shift entries towards the tail,
        # so a page may repeat entries but never skips one that stays queued;
        # workers pop from the tail.
        offset = 0
        while True:
            entries = self.r.lrange(name, offset, offset + self.page - 1)
            for raw in entries:
                snap.messages += 1
                found = ingest_message(raw)
                if found is not None:
                    snap.waiting.add(found[0])
            if len(entries) < self.page:
                return
            offset += self.page

    def _scan_unacked(self, snap: QueueSnapshot) -> None:
        delivered_at = {
            (tag.decode() if isinstance(tag, bytes) else str(tag)): float(score)
            for tag, score in self.r.zrange(UNACKED_INDEX_KEY, 0, -1, withscores=True)
        }
        for tag, value in self.r.hscan_iter(UNACKED_KEY, count=self.page):
            try:
                # kombu keeps [message, exchange, routing key]; the hash is shared by
                # every queue of the Redis database: only this queue's count.
                envelope, _, routing_key = json.loads(value)[:3]
            except (ValueError, TypeError, IndexError, KeyError):
                continue
            if routing_key != self.queue:
                continue
            snap.messages += 1
            if _TASK_BYTES not in value:
                continue
            found = ingest_envelope(envelope)
            if found is None:
                continue
            job_id, eta = found
            key = tag.decode() if isinstance(tag, bytes) else str(tag)
            # Missing from the index (between kombu's two writes): just delivered.
            when = max(delivered_at.get(key, time.time()), eta)
            snap.delivered[job_id] = max(snap.delivered.get(job_id, 0.0), when)


class CeleryQueue:
    """Sends INGEST_TASK with the job id as its only argument."""

    def __init__(self, settings: JobsSettings) -> None:
        self.queue = settings.worker_queue
        self.redis_url = settings.redis_url
        self.app = Celery("ragmesh-producer", broker=settings.redis_url)
        self.app.conf.update(
            task_serializer="json",
            accept_content=["json"],
            broker_connection_retry_on_startup=True,
        )
        self._scanner: BrokerScanner | None = None

    def send(self, job_id: str) -> None:
        if not tracing.enabled():
            self.app.send_task(INGEST_TASK, args=[job_id], queue=self.queue)
            return
        # The worker continues this trace: W3C traceparent in the task's headers.
        with tracing.span(
            f"{self.queue} publish",
            {
                "messaging.system": "celery",
                "messaging.operation": "publish",
                "messaging.destination.name": self.queue,
                "ragmesh.job_id": job_id,
            },
            kind=tracing.SpanKind.PRODUCER,
        ):
            headers: dict[str, Any] = dict(tracing.inject({}))
            headers[ENQUEUED_AT_HEADER] = time.time()
            self.app.send_task(INGEST_TASK, args=[job_id], queue=self.queue, headers=headers)

    def snapshot(self) -> QueueSnapshot:
        if self._scanner is None:
            client = redis.Redis.from_url(self.redis_url, **client_options())
            self._scanner = BrokerScanner(client, self.queue)
        return self._scanner.snapshot()

    def close(self) -> None:
        if self._scanner is not None:
            self._scanner.r.close()
        self.app.close()
