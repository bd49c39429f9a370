"""The job state machine, as the gateway drives it: uploads register jobs
(or deduplicate), callers cancel and retry them, deletes end them with their
document or knowledge base. The worker's side (claim, heartbeat, finish) is in
services.jobs.runs; both end jobs through `end_job`.

Every change that spans several keys runs in a WATCH/MULTI transaction; with
Redis AOF the records survive restarts of everything.

    QUEUED ──claim──► RUNNING ──finish──► SUCCEEDED
      ▲  │              │  │
      │  └──cancel──┐   │  └──fail──► FAILED ──retry──► QUEUED
      └─release─────┼───┘
    (transient error,  └──► CANCELLED ──retry──► QUEUED
     lost worker)
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import Any

from services.common.api import encode_page_token
from services.common.errors import FailedPrecondition, NotFound
from services.jobs.blobs import BlobStore
from services.jobs.catalogue import doc_not_found, kb_not_found
from services.jobs.db import RedisDb
from services.jobs.records import (
    ACTIVE_STATES,
    DocumentRecord,
    DocumentState,
    ErrorRecord,
    JobRecord,
    JobState,
)

GATEWAY_DOMAIN = "gateway.ragmesh"


def job_not_found(job_id: str) -> NotFound:
    return NotFound(
        f"ingestion job {job_id!r} not found", reason="JOB_NOT_FOUND", metadata={"job_id": job_id}
    )


def cancelled(reason: str, message: str) -> ErrorRecord:
    return ErrorRecord("CANCELLED", reason, message, domain=GATEWAY_DOMAIN)


@dataclass
class UploadResult:
    job: JobRecord
    document: DocumentRecord
    #: whether a task must be sent (False: deduplicated or already in progress)
    enqueue: bool
    superseded_job_id: str = ""


class JobBook:
    def __init__(self, db: RedisDb, blobs: BlobStore) -> None:
        self.db = db
        self.keys = db.keys
        self.blobs = blobs

    # ------------------------------------------------------------------ uploads

    def register_upload(
        self,
        tenant: str,
        kb: str,
        document: DocumentRecord,
        content: bytes,
        now: float | None = None,
    ) -> UploadResult:
        """Stores the bytes and queues a job for them, or deduplicates.

        Same document version already INDEXED → a SUCCEEDED, deduplicated job;
        same version being ingested → that job; otherwise a new QUEUED job, and
        an active job of an older version of the document is CANCELLED.
        """
        now = now or time.time()
        job_id = uuid.uuid4().hex
        member = f"{int(now * 1000):015d}|{job_id}"
        k = self.keys
        dkey, kkey = k.doc(tenant, kb, document.document_id), k.kb(tenant, kb)
        stored_blob = False
        drop_blobs: list[str] = []

        def body(pipe: Any) -> UploadResult:
            nonlocal stored_blob
            drop_blobs.clear()
            if not pipe.exists(kkey):
                raise kb_not_found(kb)
            raw_doc = pipe.hgetall(dkey)
            old: DocumentRecord | None = DocumentRecord.from_hash(raw_doc) if raw_doc else None
            old_job = self._watch_job(pipe, old.last_job_id if old else "")
            job = JobRecord(
                job_id=job_id,
                tenant=tenant,
                knowledge_base_id=kb,
                document_id=document.document_id,
                file_name=document.file_name,
                media_type=document.media_type,
                version=document.version,
                create_time=now,
                update_time=now,
                queued_since=now,
                index_member=member,
            )
            if old and old.version == document.version:
                if old_job is not None and old_job.active:
                    pipe.multi()
                    return UploadResult(old_job, old, enqueue=False)
                if old.state == DocumentState.INDEXED:
                    return self._deduplicated(pipe, job, old, document.file_name, now)
            doc = replace(
                document,
                tenant=tenant,
                knowledge_base_id=kb,
                state=DocumentState.PENDING,
                last_job_id=job_id,
                update_time=now,
                create_time=old.create_time if old else now,
                chunk_count=old.chunk_count if old else 0,
                title=old.title if old else "",
            )
            if not stored_blob:
                # Written before MULTI (outside the retry loop's writes) so a
                # retried transaction does not send the bytes again.
                self.blobs.put(job_id, content)
                stored_blob = True
            pipe.multi()
            superseded = ""
            if old_job is not None:
                drop_blobs.append(old_job.job_id)
                if old_job.active:
                    superseded = old_job.job_id
                    self.queue_end(
                        pipe,
                        old_job,
                        JobState.CANCELLED,
                        cancelled(
                            "SUPERSEDED", f"document replaced by a newer upload (job {job_id})"
                        ),
                        now,
                    )
            self._queue_new_job(pipe, job, doc, now)
            pipe.zadd(k.active_jobs, {job_id: now})
            pipe.zadd(k.docs(tenant, kb), {document.document_id: 0})
            return UploadResult(job, doc, enqueue=True, superseded_job_id=superseded)

        try:
            result = self.db.txn(body, kkey, dkey)
        except BaseException:
            if stored_blob:
                self.blobs.delete(job_id)
            raise
        if stored_blob and result.job.job_id != job_id:
            drop_blobs.append(job_id)
        self.blobs.delete(*drop_blobs)
        return result

    def _watch_job(self, pipe: Any, job_id: str) -> JobRecord | None:
        """Watches and reads a job inside a transaction (None if absent)."""
        if not job_id:
            return None
        pipe.watch(self.keys.job(job_id))
        raw = pipe.hgetall(self.keys.job(job_id))
        return JobRecord.from_hash(raw) if raw else None

    def _deduplicated(
        self, pipe: Any, job: JobRecord, old: DocumentRecord, file_name: str, now: float
    ) -> UploadResult:
        """The same version is already indexed: a job that SUCCEEDED at once."""
        job.state = JobState.SUCCEEDED
        job.deduplicated = True
        job.chunks_done = job.chunks_total = old.chunk_count
        job.start_time = job.end_time = now
        doc = replace(old, last_job_id=job.job_id, update_time=now, file_name=file_name)
        pipe.multi()
        self._queue_new_job(pipe, job, doc, now)
        return UploadResult(job, doc, enqueue=False)

    def _queue_new_job(self, pipe: Any, job: JobRecord, doc: DocumentRecord, now: float) -> None:
        k = self.keys
        pipe.hset(k.job(job.job_id), mapping=job.to_hash())
        pipe.zadd(k.jobs(job.tenant), {job.index_member: 0})
        pipe.zadd(k.jobs(job.tenant, job.knowledge_base_id), {job.index_member: 0})
        pipe.hset(k.doc(job.tenant, job.knowledge_base_id, job.document_id), mapping=doc.to_hash())
        pipe.publish(k.events(job.job_id), "1")

    # --------------------------------------------------------------------- jobs

    def get_job(self, job_id: str, tenant: str | None = None) -> JobRecord:
        """The job; another tenant's job is NOT_FOUND like a missing one."""
        raw = self.db.r.hgetall(self.keys.job(job_id)) if job_id else {}
        job: JobRecord | None = JobRecord.from_hash(raw) if raw else None
        if job is None or (tenant is not None and job.tenant != tenant):
            raise job_not_found(job_id)
        return job

    def list_jobs(
        self,
        tenant: str,
        kb: str | None,
        state: JobState | None,
        page_size: int,
        page_token: str,
    ) -> tuple[list[JobRecord], str]:
        index = self.keys.jobs(tenant, kb)
        out: list[JobRecord] = []
        token = page_token
        # Filtering by state scans forward until the page is full.
        while True:
            members, token = self.db.page(index, page_size, token)
            raws = self.db.hashes(self.keys.job(m.split("|", 1)[1]) for m in members)
            for member, raw in zip(members, raws, strict=True):
                if not raw:
                    continue
                job = JobRecord.from_hash(raw)
                if state is None or job.state == state:
                    out.append(job)
                if len(out) == page_size:
                    if member != members[-1] or token:
                        return out, encode_page_token(member)
                    return out, ""
            if not token:
                return out, ""

    def queue_end(
        self, pipe: Any, job: JobRecord, state: JobState, error: ErrorRecord | None, now: float
    ) -> None:
        """Queue the writes that end `job` in `state` (pipe in MULTI)."""
        fields = {
            "state": state,
            "stage": "",
            "end_time": str(now),
            "update_time": str(now),
            "run_token": "",
        }
        if error is not None:
            fields["error"] = error.to_json()
        pipe.hset(self.keys.job(job.job_id), mapping=fields)
        pipe.zrem(self.keys.active_jobs, job.job_id)
        pipe.publish(self.keys.events(job.job_id), "1")

    def end_job(
        self,
        job_id: str,
        state: JobState,
        error: ErrorRecord | None,
        *,
        from_states: Iterable[JobState],
        token: str | None = None,
        tenant: str | None = None,
        chunk_count: int | None = None,
        title: str | None = None,
    ) -> JobRecord | None:
        """Moves a job to a final state and its document along with it (when it
        is the document's latest job). None when the job was not in
        `from_states` (or not owned by `token`)."""
        now = time.time()
        jkey = self.keys.job(job_id)
        allowed = tuple(from_states)

        def body(pipe: Any) -> JobRecord | None:
            raw = pipe.hgetall(jkey)
            job: JobRecord | None = JobRecord.from_hash(raw) if raw else None
            if (
                job is None
                or (tenant is not None and job.tenant != tenant)
                or job.state not in allowed
                or (token is not None and job.run_token != token)
            ):
                pipe.multi()
                return None
            dkey = self.keys.doc(job.tenant, job.knowledge_base_id, job.document_id)
            kkey = self.keys.kb(job.tenant, job.knowledge_base_id)
            pipe.watch(dkey, kkey)
            raw_doc = pipe.hgetall(dkey)
            doc: DocumentRecord | None = DocumentRecord.from_hash(raw_doc) if raw_doc else None
            kb_exists = pipe.exists(kkey)
            pipe.multi()
            self.queue_end(pipe, job, state, error, now)
            if state == JobState.SUCCEEDED:
                count = str(chunk_count or 0)
                pipe.hset(jkey, mapping={"chunks_done": count, "chunks_total": count})
            if doc is not None and doc.last_job_id == job_id:
                doc_fields = {
                    "state": DocumentState.INDEXED
                    if state == JobState.SUCCEEDED
                    else DocumentState.FAILED,
                    "update_time": str(now),
                }
                if title is not None:
                    doc_fields["title"] = title
                if chunk_count is not None:
                    doc_fields["chunk_count"] = str(chunk_count)
                    if kb_exists:
                        pipe.hincrby(kkey, "chunk_count", chunk_count - doc.chunk_count)
                pipe.hset(dkey, mapping=doc_fields)
            job.state = state
            job.error = error
            job.end_time = now
            return job

        ended = self.db.txn(body, jkey)
        if ended is not None and state == JobState.SUCCEEDED:
            self.blobs.delete(job_id)  # indexed: the bytes are not needed any more
        return ended

    def cancel_job(self, tenant: str, job_id: str) -> JobRecord:
        self.get_job(job_id, tenant)
        ended = self.end_job(
            job_id,
            JobState.CANCELLED,
            cancelled("CANCELLED_BY_USER", "cancelled by the caller"),
            from_states=ACTIVE_STATES,
            tenant=tenant,
        )
        if ended is None:
            job = self.get_job(job_id, tenant)
            raise FailedPrecondition(
                f"job {job_id!r} already ended ({job.state})",
                reason="JOB_ALREADY_ENDED",
                metadata={"job_id": job_id, "state": job.state},
            )
        return self.get_job(job_id, tenant)

    def retry_job(self, tenant: str, job_id: str, now: float | None = None) -> JobRecord:
        """Queues a FAILED or CANCELLED job again (the caller sends the task)."""
        now = now or time.time()
        jkey = self.keys.job(job_id)

        def body(pipe: Any) -> None:
            raw = pipe.hgetall(jkey)
            job: JobRecord | None = JobRecord.from_hash(raw) if raw else None
            if job is None or job.tenant != tenant:
                raise job_not_found(job_id)
            if job.state not in (JobState.FAILED, JobState.CANCELLED):
                raise FailedPrecondition(
                    f"only FAILED or CANCELLED jobs can be retried; job {job_id!r} is {job.state}",
                    reason="JOB_NOT_RETRYABLE",
                    metadata={"job_id": job_id, "state": job.state},
                )
            dkey = self.keys.doc(tenant, job.knowledge_base_id, job.document_id)
            pipe.watch(dkey)
            raw_doc = pipe.hgetall(dkey)
            if not raw_doc:
                raise FailedPrecondition(
                    "the job's document was deleted",
                    reason="JOB_DOCUMENT_DELETED",
                    metadata={"job_id": job_id},
                )
            doc = DocumentRecord.from_hash(raw_doc)
            if doc.last_job_id != job_id:
                raise FailedPrecondition(
                    f"the document was uploaded again since (job {doc.last_job_id})",
                    reason="JOB_SUPERSEDED",
                    metadata={"job_id": job_id},
                )
            if not self.blobs.exists(job_id):
                raise FailedPrecondition(
                    "the uploaded bytes are gone; upload again",
                    reason="UPLOAD_GONE",
                    metadata={"job_id": job_id},
                )
            pipe.multi()
            pipe.hset(
                jkey,
                mapping={
                    "state": JobState.QUEUED,
                    "stage": "",
                    "error": "",
                    "end_time": "0",
                    "update_time": str(now),
                    "queued_since": str(now),
                    "run_token": "",
                    "chunks_done": "0",
                    "lost_count": "0",
                },
            )
            pipe.zadd(self.keys.active_jobs, {job_id: now})
            pipe.hset(dkey, mapping={"state": DocumentState.PENDING, "update_time": str(now)})
            pipe.publish(self.keys.events(job_id), "1")

        self.db.txn(body, jkey)
        return self.get_job(job_id, tenant)

    # ------------------------------------------------- deletes that end jobs

    def delete_doc(self, tenant: str, kb: str, doc_id: str) -> DocumentRecord:
        """Removes the document record and cancels its active job. The caller
        then deletes its chunks under the document lock."""
        dkey, kkey = self.keys.doc(tenant, kb, doc_id), self.keys.kb(tenant, kb)
        now = time.time()
        drop_blobs: list[str] = []

        def body(pipe: Any) -> DocumentRecord:
            drop_blobs.clear()
            raw = pipe.hgetall(dkey)
            if not raw:
                if not pipe.exists(kkey):
                    raise kb_not_found(kb)
                raise doc_not_found(kb, doc_id)
            doc: DocumentRecord = DocumentRecord.from_hash(raw)
            job = self._watch_job(pipe, doc.last_job_id)
            kb_exists = pipe.exists(kkey)
            pipe.multi()
            if job is not None:
                drop_blobs.append(job.job_id)
                if job.active:
                    self.queue_end(
                        pipe,
                        job,
                        JobState.CANCELLED,
                        cancelled("DOCUMENT_DELETED", "the document was deleted"),
                        now,
                    )
            pipe.delete(dkey)
            pipe.zrem(self.keys.docs(tenant, kb), doc_id)
            if kb_exists and doc.chunk_count:
                pipe.hincrby(kkey, "chunk_count", -doc.chunk_count)
            return doc

        doc = self.db.txn(body, dkey, kkey)
        self.blobs.delete(*drop_blobs)
        return doc

    def purge_kb(self, tenant: str, kb: str) -> None:
        """Documents, jobs and uploads of a deleted knowledge base."""
        k = self.keys
        reason = cancelled("KNOWLEDGE_BASE_DELETED", "the knowledge base was deleted")
        members = [m.decode() for m in self.db.r.zrange(k.jobs(tenant, kb), 0, -1)]
        job_ids = [m.split("|", 1)[1] for m in members]
        for job_id in job_ids:
            self.end_job(job_id, JobState.CANCELLED, reason, from_states=ACTIVE_STATES)
        docs = [m.decode() for m in self.db.r.zrange(k.docs(tenant, kb), 0, -1)]
        pipe = self.db.r.pipeline(transaction=False)
        for doc in docs:
            pipe.delete(k.doc(tenant, kb, doc))
        pipe.delete(k.docs(tenant, kb))
        for member, job_id in zip(members, job_ids, strict=True):
            pipe.delete(k.job(job_id))
            pipe.zrem(k.jobs(tenant), member)
            pipe.zrem(k.active_jobs, job_id)
        pipe.delete(k.jobs(tenant, kb))
        pipe.execute()
        self.blobs.delete(*job_ids)
