"""The reaper: finds jobs nobody is working on and hands them out again.

It runs in the gateway (one replica at a time, under a lease in Redis): a
RUNNING job whose worker stopped beating is re-queued (or FAILED after too many
lost runs); a QUEUED job whose message seems lost is sent again.
"""

from __future__ import annotations

import logging
import socket
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from services.jobs.jobbook import JobBook
from services.jobs.outcomes import GATEWAY_DOMAIN
from services.jobs.queue import IngestionQueue
from services.jobs.records import ErrorRecord, JobRecord, JobState

log = logging.getLogger("ragmesh.reaper")


@dataclass(frozen=True)
class ReaperPolicy:
    #: RUNNING without a heartbeat this long: its worker vanished
    stale_after_s: float = 30.0
    #: runs a job gets before it is FAILED (WORKER_LOST)
    max_attempts: int = 3
    #: QUEUED this long without a worker taking it: its message is sent again
    requeue_after_s: float = 600.0
    #: QUEUED this long: FAILED (QUEUE_TIMEOUT)
    queued_timeout_s: float = 3600.0
    #: how often a pass runs
    interval_s: float = 5.0


@dataclass
class ReapResult:
    requeue: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)


class Reaper:
    def __init__(self, book: JobBook, queue: IngestionQueue, policy: ReaperPolicy) -> None:
        self.book = book
        self.db = book.db
        self.keys = book.keys
        self.queue = queue
        self.policy = policy
        self.holder = f"{socket.gethostname()}-{uuid.uuid4().hex[:8]}"

    # ------------------------------------------------------------------ policy

    def reap(self, now: float | None = None) -> ReapResult:
        """One pass over the active jobs whose last sign of life is old enough."""
        p = self.policy
        now = now or time.time()
        threshold = now - min(p.stale_after_s, p.requeue_after_s)
        candidates = [
            m.decode() for m in self.db.r.zrangebyscore(self.keys.active_jobs, "-inf", threshold)
        ]
        result = ReapResult()
        for job_id in candidates:
            action = self._reap_one(job_id, now)
            if action == "requeue":
                result.requeue.append(job_id)
            elif action == "failed":
                result.failed.append(job_id)
        return result

    def _decide(self, job: JobRecord | None, score: float | None, now: float) -> str:
        p = self.policy
        if job is None or not job.active:
            return "dropped"
        if job.state == JobState.RUNNING:
            if now - job.heartbeat < p.stale_after_s:
                return "alive"
            return "fail-lost" if job.lost_count + 1 >= p.max_attempts else "requeue-lost"
        if now - job.queued_since >= p.queued_timeout_s:
            return "fail-queued"
        if score is not None and now - score < p.requeue_after_s:
            return "alive"
        return "requeue"

    def _reap_one(self, job_id: str, now: float) -> str:
        jkey, active = self.keys.job(job_id), self.keys.active_jobs

        def body(pipe: Any) -> str:
            raw = pipe.hgetall(jkey)
            job = JobRecord.from_hash(raw) if raw else None
            score = pipe.zscore(active, job_id)
            action = self._decide(job, float(score) if score is not None else None, now)
            pipe.multi()
            if action == "dropped":
                pipe.zrem(active, job_id)
            elif action == "requeue-lost" and job is not None:
                pipe.hset(
                    jkey,
                    mapping={
                        "state": JobState.QUEUED,
                        "stage": "",
                        "run_token": "",
                        "queued_since": str(now),
                        "update_time": str(now),
                        "lost_count": str(job.lost_count + 1),
                    },
                )
                pipe.zadd(active, {job_id: now})
                pipe.publish(self.keys.events(job_id), "1")
                action = "requeue"
            elif action == "requeue":
                pipe.zadd(active, {job_id: now})
            return action

        action = self.db.txn(body, jkey, active)
        if action == "fail-lost":
            return self._fail(
                job_id,
                JobState.RUNNING,
                "WORKER_LOST",
                f"the worker running this job vanished {self.policy.max_attempts} times",
            )
        if action == "fail-queued":
            return self._fail(
                job_id,
                JobState.QUEUED,
                "QUEUE_TIMEOUT",
                f"no worker took this job within {self.policy.queued_timeout_s:.0f} s",
            )
        return action

    def _fail(self, job_id: str, from_state: JobState, reason: str, message: str) -> str:
        error = ErrorRecord("UNAVAILABLE", reason, message, domain=GATEWAY_DOMAIN)
        ended = self.book.end_job(job_id, JobState.FAILED, error, from_states=(from_state,))
        return "failed" if ended else "alive"

    # -------------------------------------------------------------------- loop

    def try_lease(self) -> bool:
        """One reaper at a time across gateway replicas."""
        key, ttl_ms = self.keys.reaper_lease, int(self.policy.interval_s * 3 * 1000)
        if self.db.r.set(key, self.holder, nx=True, px=ttl_ms):
            return True
        current = self.db.r.get(key)
        if current is not None and current.decode() == self.holder:
            self.db.r.pexpire(key, ttl_ms)
            return True
        return False

    def run_once(self) -> ReapResult:
        """A pass if this replica holds the lease (else an empty result)."""
        return self.run_pass() if self.try_lease() else ReapResult()

    def run_pass(self) -> ReapResult:
        """One pass; re-sends what it re-queued."""
        result = self.reap()
        for job_id in result.requeue:
            log.warning("re-queueing job %s (worker lost or message missing)", job_id)
            self.queue.send(job_id)
        for job_id in result.failed:
            log.warning("job %s failed: no worker finished it", job_id)
        return result
