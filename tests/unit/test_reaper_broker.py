"""The reaper against the real broker: a QUEUED job whose message is in the
Redis queue (or held, unacknowledged, by a live worker) is never failed or sent
again, however long it waits; a job whose message is really gone is sent again,
once. Messages are sent by the gateway's producer (CeleryQueue) and taken by a
real kombu consumer in another process, killed with SIGKILL while it holds one."""

from __future__ import annotations

import subprocess
import sys
import time
import uuid
from collections.abc import Iterator

import pytest
import redis

from services.jobs.queue import (
    INGEST_TASK,
    UNACKED_INDEX_KEY,
    UNACKED_KEY,
    CeleryQueue,
    ingest_message,
    priority_lists,
)
from services.jobs.reaper import Reaper, ReaperPolicy
from services.jobs.records import DocumentRecord, ErrorRecord, KnowledgeBaseRecord
from services.jobs.settings import JobsSettings
from services.jobs.state import JobsState

# A worker that takes one message from the queue (kombu's Redis transport puts it
# in `unacked`, as a Celery worker's does) and keeps it without acknowledging.
HOLDER = """
import sys, time
from kombu import Connection
with Connection(sys.argv[1]) as conn:
    queue = conn.SimpleQueue(sys.argv[2])
    message = queue.get(block=True, timeout=30)
    print("holding", message.delivery_tag, flush=True)
    time.sleep(300)
"""


@pytest.fixture
def settings(redis_url: str) -> JobsSettings:
    # Keys and a queue of this test's own: the reaper sees only its jobs.
    name = uuid.uuid4().hex[:8]
    return JobsSettings(
        redis_url=redis_url, redis_key_prefix=f"rp{name}", worker_queue=f"test-reaper-{name}"
    )


@pytest.fixture
def store(settings: JobsSettings) -> Iterator[JobsState]:
    s = JobsState.from_settings(settings)
    yield s
    s.close()


@pytest.fixture
def queue(settings: JobsSettings) -> Iterator[CeleryQueue]:
    q = CeleryQueue(settings)
    yield q
    q.close()


@pytest.fixture
def r(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()


def upload(store: JobsState, queue: CeleryQueue, name: str = "a.md", send: bool = True) -> str:
    """A QUEUED job, registered and sent as the gateway does."""
    tenant = f"t{uuid.uuid4().hex[:8]}"
    store.catalogue.create_kb(
        KnowledgeBaseRecord(tenant=tenant, knowledge_base_id="kb1", collection=f"c_{tenant}")
    )
    doc = DocumentRecord(tenant=tenant, knowledge_base_id="kb1", document_id=name, version="v1")
    job_id = store.book.register_upload(tenant, "kb1", doc, b"hello").job.job_id
    if send:
        queue.send(job_id)
    return job_id


def queued_ids(r: redis.Redis, queue: CeleryQueue) -> list[str]:
    """The job ids of the messages in the queue's list, in order."""
    found = [ingest_message(raw) for raw in r.lrange(queue.queue, 0, -1)]
    return [f[0] for f in found if f is not None]


def reaper(store: JobsState, queue: CeleryQueue, requeue_after_s: float) -> Reaper:
    policy = ReaperPolicy(stale_after_s=30, requeue_after_s=requeue_after_s, interval_s=1)
    return Reaper(store.book, queue, policy)


def test_the_scan_reads_kombu_messages(
    store: JobsState, queue: CeleryQueue, r: redis.Redis
) -> None:
    jobs = [upload(store, queue, f"d{i}.md") for i in range(3)]
    queue.app.send_task("another.task", args=["not-a-job"], queue=queue.queue)
    # A retry waiting for its countdown carries an ETA.
    queue.app.send_task(INGEST_TASK, args=[jobs[0]], queue=queue.queue, countdown=120)
    snap = queue.snapshot()
    assert snap.waiting == set(jobs) and snap.delivered == {}
    assert snap.messages == 5
    assert priority_lists(queue.queue)[1] == f"{queue.queue}\x06\x163"
    assert r.llen(queue.queue) == 5


def test_a_waiting_job_is_never_failed_nor_sent_again(
    store: JobsState, queue: CeleryQueue, r: redis.Redis
) -> None:
    job_id = upload(store, queue)
    reap = reaper(store, queue, requeue_after_s=60)
    start = time.time()
    # Checked every minute for a week: it is waiting in an intact queue.
    for minute in range(1, 7 * 24 * 60, 97):
        result = reap.reap(now=start + 60 * minute + 1)
        assert result.requeue == [] and result.failed == [] and result.suspect == []
    assert result.checked == 1 and result.waiting == 1
    assert store.book.get_job(job_id).state == "QUEUED"
    assert queued_ids(r, queue) == [job_id]


def test_a_lost_message_is_sent_again_once(
    store: JobsState, queue: CeleryQueue, r: redis.Redis
) -> None:
    waiting = upload(store, queue, "waiting.md")
    lost = upload(store, queue, "lost.md")
    reap = reaper(store, queue, requeue_after_s=0.3)
    time.sleep(0.4)
    assert reap.run_pass().requeue == []  # both messages are there
    (raw,) = [m for m in r.lrange(queue.queue, 0, -1) if _body_has(m, lost)]
    assert r.lrem(queue.queue, 1, raw) == 1  # the message is really gone
    time.sleep(0.4)
    first = reap.run_pass()
    assert first.requeue == [] and first.suspect == [lost]  # missing once: not yet
    second = reap.run_pass()
    assert second.requeue == [lost] and second.resent_missing == [lost]
    assert sorted(queued_ids(r, queue)) == sorted([waiting, lost])
    # Sent again: its message is back, so later passes leave it alone.
    time.sleep(0.4)
    for _ in range(3):
        assert reap.run_pass().requeue == []
    assert sorted(queued_ids(r, queue)) == sorted([waiting, lost])


def _body_has(raw: bytes, job_id: str) -> bool:
    found = ingest_message(raw)
    return found is not None and found[0] == job_id


def test_a_job_that_changes_between_scans_is_not_sent_again(
    store: JobsState, queue: CeleryQueue
) -> None:
    job_id = upload(store, queue, send=False)  # committed, not sent yet
    reap = reaper(store, queue, requeue_after_s=0.2)
    time.sleep(0.3)
    assert reap.run_pass().suspect == [job_id]
    # A worker claims it and gives it back for a retry before the next pass.
    assert store.runs.claim_job(job_id, "tok", 30) == "ok"
    store.runs.release_for_retry(job_id, "tok", ErrorRecord("UNAVAILABLE", "X", "x"))
    store.db.r.zadd(store.db.keys.active_jobs, {job_id: time.time() - 1})
    result = reap.run_pass()
    assert result.requeue == [] and result.suspect == [job_id]


def test_a_message_held_by_a_dead_worker_is_sent_again_after_the_wait(
    store: JobsState, queue: CeleryQueue, r: redis.Redis, redis_url: str
) -> None:
    job_id = upload(store, queue)
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, redis_url, queue.queue],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None
        line = holder.stdout.readline()
        assert line.startswith("holding"), line
        tag = line.split()[1]
    finally:
        holder.kill()  # SIGKILL: the message stays in `unacked`
        holder.wait(10)
    assert r.llen(queue.queue) == 0 and r.hexists(UNACKED_KEY, tag)
    delivered = float(r.zscore(UNACKED_INDEX_KEY, tag) or 0)
    snap = queue.snapshot()
    assert snap.waiting == set() and snap.delivered[job_id] == pytest.approx(delivered)
    reap = reaper(store, queue, requeue_after_s=60)
    # It had waited in a backlog for 100 s before a worker took it.
    store.db.r.zadd(store.db.keys.active_jobs, {job_id: delivered - 100})
    # Delivered a moment ago: a live worker would claim it now; left alone.
    result = reap.reap(now=delivered + 5)
    assert result.requeue == [] and result.suspect == [] and result.waiting == 1
    # Held for longer than the wait and the job never started: its holder is gone.
    assert reap.reap(now=delivered + 70).suspect == [job_id]
    assert reap.reap(now=delivered + 71).requeue == [job_id]
    r.hdel(UNACKED_KEY, tag)
    r.zrem(UNACKED_INDEX_KEY, tag)


def test_a_retry_waiting_for_its_countdown_is_not_sent_again(
    store: JobsState, queue: CeleryQueue, r: redis.Redis, redis_url: str
) -> None:
    job_id = upload(store, queue, send=False)
    queue.app.send_task(INGEST_TASK, args=[job_id], queue=queue.queue, countdown=600)
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, redis_url, queue.queue], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout is not None
        tag = holder.stdout.readline().split()[1]
        snap = queue.snapshot()
        eta = snap.delivered[job_id]
        assert eta == pytest.approx(time.time() + 600, abs=30)
        reap = reaper(store, queue, requeue_after_s=60)
        for later in (100, 300, 500, 650):
            result = reap.reap(now=time.time() + later)
            assert result.requeue == [] and result.suspect == [], later
    finally:
        holder.kill()
        holder.wait(10)
        r.hdel(UNACKED_KEY, tag)
        r.zrem(UNACKED_INDEX_KEY, tag)
