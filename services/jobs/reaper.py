"""The reaper: finds jobs nobody is working on and hands them out again.

It runs in the gateway (one replica at a time, under a lease in Redis):

- a RUNNING job whose worker stopped beating is re-queued (or FAILED,
  WORKER_LOST, after too many lost runs);
- a QUEUED job is never failed or sent again for waiting: a backlog of
  thousands of jobs on one worker simply drains. Once a QUEUED job has shown
  no sign of life for `requeue_after_s`, the reaper looks for its message in
  the broker (one scan of the queue and of the unacknowledged messages per
  pass, for every such job at once): found → the job is left waiting, and
  checked again `requeue_after_s` later; not found in two scans a pass apart,
  with the job unchanged in between → the message is lost (a Redis restart
  without the last writes, a worker killed while holding it, a failed send)
  and the job's task is sent again.

The two scans close the windows in which a healthy message is in neither
place: between a worker's BRPOP and kombu's write to `unacked` (a few
milliseconds), and between the gateway's commit of a job and its send.
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
from services.jobs.queue import IngestionQueue, QueueSnapshot
from services.jobs.records import ErrorRecord, JobRecord, JobState

log = logging.getLogger("ragmesh.reaper")

# Bump the last sign of life of the QUEUED jobs among ARGV[2..] (their message
# is in the broker), leaving any that changed state meanwhile alone.
# KEYS[1] the active-jobs zset, KEYS[2..] the job hashes; ARGV[1] now.
TOUCH_QUEUED = """
local touched = 0
for i = 2, #KEYS do
  if redis.call('HGET', KEYS[i], 'state') == 'QUEUED' then
    redis.call('ZADD', KEYS[1], 'XX', ARGV[1], ARGV[i])
    touched = touched + 1
  end
end
return touched
"""
TOUCH_BATCH = 500


@dataclass(frozen=True)
class ReaperPolicy:
    #: RUNNING without a heartbeat this long: its worker vanished
    stale_after_s: float = 30.0
    #: runs a job gets before it is FAILED (WORKER_LOST)
    max_attempts: int = 3
    #: QUEUED this long without a sign of life: the broker is checked for its
    #: message (and again every this long while it waits)
    requeue_after_s: float = 600.0
    #: how often a pass runs
    interval_s: float = 5.0


@dataclass
class ReapResult:
    #: sent again: worker lost (RUNNING) or message lost (QUEUED)
    requeue: list[str] = field(default_factory=list)
    #: of those, the QUEUED jobs whose message was lost
    resent_missing: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    #: QUEUED jobs whose message was missing once (checked again next pass)
    suspect: list[str] = field(default_factory=list)
    #: QUEUED jobs checked against the broker, and how many were found there
    checked: int = 0
    waiting: int = 0
    #: the broker scan (None: no scan this pass)
    snapshot: QueueSnapshot | None = None


class Reaper:
    def __init__(self, book: JobBook, queue: IngestionQueue, policy: ReaperPolicy) -> None:
        self.book = book
        self.db = book.db
        self.keys = book.keys
        self.queue = queue
        self.policy = policy
        self.holder = f"{socket.gethostname()}-{uuid.uuid4().hex[:8]}"
        self._touch = self.db.r.register_script(TOUCH_QUEUED)
        #: job id → its update_time when its message was first found missing
        self._suspects: dict[str, str] = {}

    # ------------------------------------------------------------------ policy

    def reap(self, now: float | None = None) -> ReapResult:
        """One pass over the active jobs whose last sign of life is old enough."""
        p = self.policy
        now = now or time.time()
        threshold = now - min(p.stale_after_s, p.requeue_after_s)
        candidates = [
            (m.decode(), float(score))
            for m, score in self.db.r.zrangebyscore(
                self.keys.active_jobs, "-inf", threshold, withscores=True
            )
        ]
        result = ReapResult()
        pipe = self.db.r.pipeline(transaction=False)
        for job_id, _ in candidates:
            pipe.hmget(self.keys.job(job_id), "state", "update_time")
        queued: list[tuple[str, str]] = []
        for (job_id, score), (state, update) in zip(candidates, pipe.execute(), strict=True):
            if state == JobState.QUEUED.encode():
                if now - score >= p.requeue_after_s:
                    queued.append((job_id, (update or b"").decode()))
                continue
            action = self._reap_one(job_id, now)
            if action == "requeue":
                result.requeue.append(job_id)
            elif action == "failed":
                result.failed.append(job_id)
        self._check_queued(queued, now, result)
        return result

    def _check_queued(self, queued: list[tuple[str, str]], now: float, result: ReapResult) -> None:
        """Leaves the QUEUED jobs whose message the broker holds waiting; re-queues
        those whose message was missing in this scan and the previous one."""
        if not queued:
            self._suspects.clear()
            return
        snap = self.queue.snapshot()
        result.snapshot, result.checked = snap, len(queued)
        present: list[str] = []
        suspects: dict[str, str] = {}
        for job_id, update in queued:
            delivered = snap.delivered.get(job_id)
            if job_id in snap.waiting or (
                delivered is not None and now - delivered < self.policy.requeue_after_s
            ):
                present.append(job_id)
            elif self._suspects.get(job_id) == update:
                if self._requeue_queued(job_id, update, now):
                    result.requeue.append(job_id)
                    result.resent_missing.append(job_id)
            else:
                suspects[job_id] = update
        self._suspects = suspects
        result.suspect = list(suspects)
        result.waiting = self._touch_queued(present, now)

    def _touch_queued(self, job_ids: list[str], now: float) -> int:
        touched = 0
        for start in range(0, len(job_ids), TOUCH_BATCH):
            batch = job_ids[start : start + TOUCH_BATCH]
            touched += int(
                self._touch(
                    keys=[self.keys.active_jobs, *(self.keys.job(j) for j in batch)],
                    args=[now, *batch],
                )
            )
        return touched

    def _requeue_queued(self, job_id: str, update: str, now: float) -> bool:
        """Marks a QUEUED job whose message is lost as sent again, unless it changed
        since its message was first missed."""
        jkey = self.keys.job(job_id)

        def body(pipe: Any) -> bool:
            state, current = pipe.hmget(jkey, "state", "update_time")
            pipe.multi()
            if state != JobState.QUEUED.encode() or (current or b"").decode() != update:
                return False
            pipe.zadd(self.keys.active_jobs, {job_id: now}, xx=True)
            return True

        return self.db.txn(body, jkey)

    def _decide(self, job: JobRecord | None, now: float) -> str:
        p = self.policy
        if job is None or not job.active:
            return "dropped"
        if job.state == JobState.RUNNING:
            if now - job.heartbeat < p.stale_after_s:
                return "alive"
            return "fail-lost" if job.lost_count + 1 >= p.max_attempts else "requeue-lost"
        return "alive"  # QUEUED: checked against the broker

    def _reap_one(self, job_id: str, now: float) -> str:
        jkey, active = self.keys.job(job_id), self.keys.active_jobs

        def body(pipe: Any) -> str:
            raw = pipe.hgetall(jkey)
            job = JobRecord.from_hash(raw) if raw else None
            action = self._decide(job, now)
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
            return action

        action = self.db.txn(body, jkey, active)
        if action == "fail-lost":
            return self._fail(
                job_id,
                JobState.RUNNING,
                "WORKER_LOST",
                f"the worker running this job vanished {self.policy.max_attempts} times",
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
        self._suspects.clear()  # another replica reaps: start afresh if it comes back
        return False

    def run_once(self) -> ReapResult:
        """A pass if this replica holds the lease (else an empty result)."""
        return self.run_pass() if self.try_lease() else ReapResult()

    def run_pass(self) -> ReapResult:
        """One pass; re-sends what it re-queued."""
        result = self.reap()
        missing = set(result.resent_missing)
        for job_id in result.requeue:
            if job_id in missing:
                log.warning("job %s: its message is not in the broker; sending it again", job_id)
            else:
                log.warning("job %s: its worker vanished; sending it again", job_id)
            self.queue.send(job_id)
        for job_id in result.failed:
            log.warning("job %s failed: its workers vanished too many times", job_id)
        return result
