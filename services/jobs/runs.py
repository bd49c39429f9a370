"""The worker's side of the job state machine: claim a job, prove it is still
being worked on (heartbeat with progress), give it back for a retry, finish or
fail it. Each step checks the run token, so a worker that lost its job (the
reaper handed it to another, a caller cancelled it) can never overwrite it.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

from services.jobs.jobbook import JobBook
from services.jobs.lua import BEAT, CLAIM
from services.jobs.records import ErrorRecord, JobRecord, JobState


class JobRuns:
    def __init__(self, book: JobBook) -> None:
        self.book = book
        self.db = book.db
        self.keys = book.keys
        self._claim = self.db.r.register_script(CLAIM)
        self._beat = self.db.r.register_script(BEAT)

    def claim_job(
        self, job_id: str, token: str, stale_after_s: float, now: float | None = None
    ) -> str:
        """'ok' when this worker now owns the job; otherwise why not ('missing',
        'busy' = another live worker runs it, or the job's final state)."""
        now = now or time.time()
        result = self._claim(
            keys=[self.keys.job(job_id), self.keys.active_jobs],
            args=[token, now, stale_after_s, job_id, self.keys.events(job_id)],
        )
        return bytes(result).decode()

    def heartbeat(self, job_id: str, token: str, **fields: object) -> str:
        """Records a sign of life (and progress fields); 'ok' while the job is
        still this worker's, else why it is not."""
        args: list[Any] = [token, time.time(), job_id, self.keys.events(job_id)]
        for name, value in fields.items():
            args += [name, value]
        result = self._beat(keys=[self.keys.job(job_id), self.keys.active_jobs], args=args)
        return bytes(result).decode()

    def release_for_retry(self, job_id: str, token: str, error: ErrorRecord) -> bool:
        """RUNNING → QUEUED before the task retries after a transient error."""
        jkey = self.keys.job(job_id)
        now = time.time()

        def body(pipe: Any) -> bool:
            raw = pipe.hgetall(jkey)
            job = JobRecord.from_hash(raw) if raw else None
            pipe.multi()
            if job is None or job.state != JobState.RUNNING or job.run_token != token:
                return False
            pipe.hset(
                jkey,
                mapping={
                    "state": JobState.QUEUED,
                    "stage": "",
                    "run_token": "",
                    "queued_since": str(now),
                    "update_time": str(now),
                    "last_error": error.to_json(),
                },
            )
            pipe.zadd(self.keys.active_jobs, {job_id: now})
            pipe.publish(self.keys.events(job_id), "1")
            return True

        return self.db.txn(body, jkey)

    def finish_job(
        self,
        job_id: str,
        token: str,
        chunk_count: int,
        title: str,
        original_bytes: int | None = None,
        media_type: str | None = None,
    ) -> JobRecord | None:
        """SUCCEEDED; `original_bytes` when the job kept its document's original,
        `media_type` as the parse detected it."""
        return self.book.end_job(
            job_id,
            JobState.SUCCEEDED,
            None,
            from_states=(JobState.RUNNING,),
            token=token,
            chunk_count=chunk_count,
            title=title,
            original_bytes=original_bytes,
            media_type=media_type,
        )

    def cancel_run(self, job_id: str, token: str, error: ErrorRecord) -> JobRecord | None:
        """RUNNING → CANCELLED by the run that owns it (what it was for is gone)."""
        return self.book.end_job(
            job_id, JobState.CANCELLED, error, from_states=(JobState.RUNNING,), token=token
        )

    def fail_job(
        self,
        job_id: str,
        error: ErrorRecord,
        *,
        token: str | None = None,
        from_states: Iterable[JobState] = (JobState.RUNNING,),
        chunk_count: int | None = None,
    ) -> JobRecord | None:
        return self.book.end_job(
            job_id,
            JobState.FAILED,
            error,
            from_states=from_states,
            token=token,
            chunk_count=chunk_count,
        )
