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
from collections.abc import Iterable, Mapping
from dataclasses import replace
from typing import Any

from services.common.api import encode_page_token
from services.common.errors import FailedPrecondition
from services.jobs.blobs import BlobStore, original_key, text_key
from services.jobs.catalogue import kb_not_found
from services.jobs.db import RedisDb, page_scope
from services.jobs.outcomes import (
    DocOutcome,
    UploadResult,
    cancelled,
    check_not_deleting,
    job_not_found,
)
from services.jobs.quotas import Quotas, Usage, check_upload, queue_usage_change
from services.jobs.rebuilds import queue_reindex_again, queue_reindexed
from services.jobs.records import (
    ACTIVE_STATES,
    DocumentRecord,
    DocumentState,
    ErrorRecord,
    JobKind,
    JobRecord,
    JobState,
)


def job_of(raw: Mapping[Any, Any], job_id: str, tenant: str | None = None) -> JobRecord:
    """The job of a job hash as read from Redis; another tenant's job is NOT_FOUND
    like a missing one."""
    job: JobRecord | None = JobRecord.from_hash(raw) if raw else None
    if job is None or (tenant is not None and job.tenant != tenant):
        raise job_not_found(job_id)
    return job


class JobBook:
    def __init__(
        self,
        db: RedisDb,
        blobs: BlobStore,
        quotas: Quotas | None = None,
        originals: BlobStore | None = None,
    ) -> None:
        self.db = db
        self.keys = db.keys
        self.blobs = blobs
        self.quotas = quotas or Quotas()
        self.originals = originals

    def drop_originals(self, tenant: str, kb: str, doc: str, version: str) -> None:
        """Deletes a document version's kept original and text (if any)."""
        if self.originals is not None and version:
            self.originals.delete(
                original_key(tenant, kb, doc, version), text_key(tenant, kb, doc, version)
            )

    def queue_drop_blob(self, pipe: Any, job: JobRecord) -> None:
        """Queue the bookkeeping of a job letting go of its upload bytes (pipe in
        MULTI); the caller deletes the blob once the transaction committed."""
        if job.blob_bytes:
            queue_usage_change(pipe, self.keys, job.tenant, stored_bytes=-job.blob_bytes)
            pipe.hset(self.keys.job(job.job_id), "blob_bytes", "0")
            job.blob_bytes = 0
        pipe.zrem(self.keys.retained_blobs, job.job_id)

    # ------------------------------------------------------------------ uploads

    def register_upload(
        self,
        tenant: str,
        kb: str,
        document: DocumentRecord,
        content: bytes | memoryview,
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
            collection, reindexing = pipe.hmget(kkey, "collection", "reindex_collection")
            if collection is None:
                raise kb_not_found(kb)
            raw_doc = pipe.hgetall(dkey)
            old: DocumentRecord | None = DocumentRecord.from_hash(raw_doc) if raw_doc else None
            check_not_deleting(old)
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
                collection=collection.decode(),
            )
            if old and old.version == document.version:
                if old_job is not None and old_job.active:
                    pipe.multi()
                    return UploadResult(old_job, old, enqueue=False)
                if old.state == DocumentState.INDEXED:
                    return self._deduplicated(pipe, job, old, document.file_name, now)
            pipe.watch(k.usage(tenant))
            usage = Usage.read(pipe, k, tenant)
            freed = old_job.blob_bytes if old_job is not None else 0
            check_upload(
                self.quotas,
                replace(usage, stored_bytes=usage.stored_bytes - freed),
                len(content),
                new_document=old is None,
            )
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
                # The version indexed so far stays the one whose original is kept until
                # the new one succeeds: search finds its chunks meanwhile (and after a
                # failed replacement), and the success drops (and uncounts) it.
                original_version=old.original_version if old else "",
                original_bytes=old.original_bytes if old else 0,
            )
            job.blob_bytes = len(content)
            if not stored_blob:
                # Written before MULTI (outside the retry loop's writes) so a
                # retried transaction does not send the bytes again.
                self.blobs.put(job_id, content)
                stored_blob = True
            pipe.multi()
            superseded = ""
            if old_job is not None:
                drop_blobs.append(old_job.job_id)
                self.queue_drop_blob(pipe, old_job)
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
            queue_usage_change(
                pipe, k, tenant, documents=1 if old is None else 0, stored_bytes=len(content)
            )
            pipe.zadd(k.active_jobs, {job_id: now})
            pipe.zadd(k.docs(tenant, kb), {document.document_id: 0})
            queue_reindex_again(pipe, k, tenant, kb, document.document_id, bool(reindexing))
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

    def _check_quotas(
        self,
        pipe: Any,
        tenant: str,
        old: DocumentRecord | None,
        old_job: JobRecord | None,
        size: int,
    ) -> None:
        """The upload fits the tenant's quotas (the replaced upload's bytes freed)."""
        pipe.watch(self.keys.usage(tenant))
        usage = Usage.read(pipe, self.keys, tenant)
        freed = old_job.blob_bytes if old_job is not None else 0
        usage = replace(usage, stored_bytes=usage.stored_bytes - freed)
        check_upload(self.quotas, usage, size, new_document=old is None)

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
        pipe.zadd(self.keys.ended_jobs, {job.job_id: now})
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
        return job_of(raw, job_id, tenant)

    def list_jobs(
        self,
        tenant: str,
        kb: str | None,
        state: JobState | None,
        page_size: int,
        page_token: str,
        newest_first: bool = False,
    ) -> tuple[list[JobRecord], str]:
        index = self.keys.jobs(tenant, kb)
        out: list[JobRecord] = []
        token = page_token
        # Filtering by state scans forward until the page is full.
        while True:
            members, token = self.db.page(index, page_size, token, reverse=newest_first)
            raws = self.db.hashes(self.keys.job(m.split("|", 1)[1]) for m in members)
            for member, raw in zip(members, raws, strict=True):
                if not raw:
                    continue
                job = JobRecord.from_hash(raw)
                if state is None or job.state == state:
                    out.append(job)
                if len(out) == page_size:
                    if member != members[-1] or token:
                        return out, encode_page_token(member, page_scope(index, newest_first))
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
        pipe.zadd(self.keys.ended_jobs, {job.job_id: now})  # for RAGMESH_GATEWAY_JOB_RETENTION_S
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
        original_bytes: int | None = None,
        media_type: str | None = None,
    ) -> JobRecord | None:
        """Moves a job to a final state and its document along with it (when it
        is the document's latest job; a REINDEX job records its chunks for the
        switch instead). None when the job was not in `from_states` (or not owned
        by `token`). `original_bytes`: the job kept its document's original;
        `media_type`: the one the parse detected (the upload may not declare one)."""
        now = time.time()
        jkey = self.keys.job(job_id)
        allowed = tuple(from_states)
        replaced: list[str] = []

        def body(pipe: Any) -> JobRecord | None:
            replaced.clear()
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
                self.queue_drop_blob(pipe, job)  # indexed: the bytes are not needed any more
            elif job.blob_bytes:
                # Kept for a retry, for RAGMESH_GATEWAY_FAILED_UPLOAD_RETENTION_S.
                pipe.zadd(self.keys.retained_blobs, {job_id: now})
            if job.kind == JobKind.REINDEX:
                if state == JobState.SUCCEEDED and doc is not None:
                    queue_reindexed(pipe, self.keys, job, doc, chunk_count or 0)
            elif (
                doc is not None
                and doc.last_job_id == job_id
                and doc.state != DocumentState.DELETING
            ):
                outcome = DocOutcome(state, now, chunk_count, title, original_bytes, media_type)
                replaced.extend(
                    self._queue_doc_end(pipe, job, doc, outcome, kkey if kb_exists else "")
                )
            job.state = state
            job.error = error
            job.end_time = now
            return job

        ended = self.db.txn(body, jkey)
        if ended is not None and state == JobState.SUCCEEDED:
            self.blobs.delete(job_id)
            for version in replaced:
                self.drop_originals(
                    ended.tenant, ended.knowledge_base_id, ended.document_id, version
                )
        return ended

    def _queue_doc_end(
        self, pipe: Any, job: JobRecord, doc: DocumentRecord, outcome: DocOutcome, kkey: str
    ) -> list[str]:
        """Queue the writes that move a document along with its last job's end;
        the versions whose kept originals the caller deletes after."""
        indexed = outcome.state == JobState.SUCCEEDED
        fields = {
            "state": DocumentState.INDEXED if indexed else DocumentState.FAILED,
            "update_time": str(outcome.now),
        }
        if outcome.title is not None:
            fields["title"] = outcome.title
        if outcome.media_type:
            fields["media_type"] = outcome.media_type
        if outcome.chunk_count is not None:
            fields["chunk_count"] = str(outcome.chunk_count)
            if kkey:
                pipe.hincrby(kkey, "chunk_count", outcome.chunk_count - doc.chunk_count)
        replaced = []
        if indexed and outcome.original_bytes is not None:
            fields["original_version"] = job.version
            fields["original_bytes"] = str(outcome.original_bytes)
            growth = outcome.original_bytes - doc.original_bytes
            queue_usage_change(pipe, self.keys, job.tenant, stored_bytes=growth)
            if doc.original_version and doc.original_version != job.version:
                replaced.append(doc.original_version)
        pipe.hset(self.keys.doc(job.tenant, job.knowledge_base_id, job.document_id), mapping=fields)
        return replaced

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
            if doc.state == DocumentState.DELETING:
                raise FailedPrecondition(
                    "the job's document is being deleted",
                    reason="JOB_DOCUMENT_DELETED",
                    metadata={"job_id": job_id},
                )
            if not job.blob_bytes or not self.blobs.exists(job_id):
                expired = " (kept for a limited time after the job ended)" if job.end_time else ""
                raise FailedPrecondition(
                    f"the uploaded bytes are no longer stored{expired}; upload the document again",
                    reason="UPLOAD_GONE",
                    metadata={"job_id": job_id},
                )
            pipe.multi()
            pipe.zrem(self.keys.retained_blobs, job_id)
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
