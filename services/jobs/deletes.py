"""Deletes that never leave searchable chunks behind.

A document is first marked DELETING — hidden from Search, Ask and lists at once,
even while Milvus is down — and its job cancelled; its chunks are deleted next
(by the caller, under the document lock); only then does the record go. A
knowledge base's record moves to a tombstone ({p}:{t}:gone:{kb}:{col}) in one
transaction (it is gone for the tenant at once), its documents and jobs are
purged, its collection is dropped, then the tombstone goes.

Each step is idempotent and each interrupted delete stays listed
({p}:deleting_docs, {p}:deleting_kbs) until the gateway's sweeper (or a repeated
delete) finishes it. A re-created knowledge base gets a new collection (its
name carries a generation), so it never sees the old one's chunks.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from services.common.errors import FailedPrecondition, NotFound
from services.jobs.catalogue import doc_not_found, kb_not_found
from services.jobs.jobbook import JobBook
from services.jobs.outcomes import cancelled
from services.jobs.quotas import queue_usage_change
from services.jobs.rebuilds import reindex_jobs_key
from services.jobs.records import (
    ACTIVE_STATES,
    DocumentRecord,
    DocumentState,
    JobRecord,
    JobState,
    KnowledgeBaseRecord,
)


@dataclass(frozen=True)
class PendingDoc:
    tenant: str
    knowledge_base_id: str
    document_id: str

    @property
    def member(self) -> str:
        return f"{self.tenant}|{self.knowledge_base_id}|{self.document_id}"


@dataclass(frozen=True)
class PendingKb:
    tenant: str
    knowledge_base_id: str
    collection: str

    @property
    def member(self) -> str:
        return f"{self.tenant}|{self.knowledge_base_id}|{self.collection}"


class Deletes:
    def __init__(self, book: JobBook) -> None:
        self.book = book
        self.db = book.db
        self.keys = book.keys
        self.blobs = book.blobs

    # ---------------------------------------------------------------- documents

    def mark_doc_deleting(
        self, tenant: str, kb: str, doc_id: str
    ) -> tuple[DocumentRecord, list[str]]:
        """Hides the document and cancels its job; (the record, the collections
        whose chunks to delete: the knowledge base's, and the one a re-index
        fills). Again on a DELETING document: the same answer."""
        k = self.keys
        dkey, kkey = k.doc(tenant, kb, doc_id), k.kb(tenant, kb)
        drop_blobs: list[str] = []
        now = time.time()

        def body(pipe: Any) -> tuple[DocumentRecord, list[str]]:
            drop_blobs.clear()
            collection, reindexing = pipe.hmget(kkey, "collection", "reindex_collection")
            raw = pipe.hgetall(dkey)
            if collection is None:
                raise kb_not_found(kb)
            if not raw:
                raise doc_not_found(kb, doc_id)
            doc: DocumentRecord = DocumentRecord.from_hash(raw)
            job = self.book._watch_job(pipe, doc.last_job_id)
            reindex_jobs = reindex_jobs_key(k, tenant, kb)
            pipe.watch(reindex_jobs)
            reindex_job_id = pipe.hget(reindex_jobs, doc_id)
            reindex_job = self.book._watch_job(
                pipe, reindex_job_id.decode() if reindex_job_id else ""
            )
            pipe.multi()
            if doc.state != DocumentState.DELETING:
                pipe.hset(dkey, mapping={"state": DocumentState.DELETING, "update_time": str(now)})
                pipe.sadd(k.deleting_docs_of(tenant, kb), doc_id)
                pipe.srem(k.reindex_pending(tenant, kb), doc_id)
                pipe.hdel(k.reindexed(tenant, kb), doc_id)
                pipe.hdel(reindex_jobs, doc_id)
            if reindex_job is not None and reindex_job.active:
                # Its document is going: it would only find the record gone.
                reason = cancelled("DOCUMENT_DELETED", "the document was deleted")
                self.book.queue_end(pipe, reindex_job, JobState.CANCELLED, reason, now)
            # Scored by the last attempt: the sweeper leaves a fresh one to its caller.
            pipe.zadd(k.deleting_docs, {PendingDoc(tenant, kb, doc_id).member: now})
            if job is not None:
                drop_blobs.append(job.job_id)
                self.book.queue_drop_blob(pipe, job)
                if job.active:
                    reason = cancelled("DOCUMENT_DELETED", "the document was deleted")
                    self.book.queue_end(pipe, job, JobState.CANCELLED, reason, now)
            return doc, [c.decode() for c in (collection, reindexing) if c]

        result = self.db.txn(body, dkey, kkey)
        self.blobs.delete(*drop_blobs)
        return result

    def finish_doc_delete(self, tenant: str, kb: str, doc_id: str) -> None:
        """Once its chunks are gone: the record goes (its count with it)."""
        k = self.keys
        dkey, kkey = k.doc(tenant, kb, doc_id), k.kb(tenant, kb)

        def body(pipe: Any) -> None:
            raw = pipe.hgetall(dkey)
            kb_exists = pipe.exists(kkey)
            doc = DocumentRecord.from_hash(raw) if raw else None
            pipe.multi()
            pipe.zrem(k.deleting_docs, PendingDoc(tenant, kb, doc_id).member)
            pipe.srem(k.deleting_docs_of(tenant, kb), doc_id)
            if doc is None or doc.state != DocumentState.DELETING:
                return
            pipe.delete(dkey)
            pipe.zrem(k.docs(tenant, kb), doc_id)
            queue_usage_change(pipe, k, tenant, documents=-1, stored_bytes=-doc.original_bytes)
            if kb_exists and doc.chunk_count:
                pipe.hincrby(kkey, "chunk_count", -doc.chunk_count)
            gone.append(doc.original_version)

        gone: list[str] = []
        self.db.txn(body, dkey, kkey)
        for version in gone:
            self.book.drop_originals(tenant, kb, doc_id, version)

    def pending_docs(self, idle_s: float = 0.0) -> list[PendingDoc]:
        """Documents being deleted whose last attempt is at least `idle_s` old;
        each one returned is stamped as attempted now."""
        return [PendingDoc(*m.split("|", 2)) for m in self._take(self.keys.deleting_docs, idle_s)]

    def _take(self, index: str, idle_s: float) -> list[str]:
        now = time.time()
        raw = self.db.r.zrangebyscore(index, "-inf", now - idle_s)
        members = [m.decode() for m in raw if m.decode().count("|") == 2]
        if members:
            self.db.r.zadd(index, dict.fromkeys(members, now), xx=True)
        return members

    # ---------------------------------------------------------- knowledge bases

    def begin_kb_delete(self, tenant: str, kb: str) -> KnowledgeBaseRecord:
        """The record becomes a tombstone: the knowledge base is gone for the
        tenant at once; its documents, jobs and collection follow."""
        k = self.keys
        key = k.kb(tenant, kb)

        def body(pipe: Any) -> KnowledgeBaseRecord:
            raw = pipe.hgetall(key)
            if not raw:
                raise kb_not_found(kb)
            rec: KnowledgeBaseRecord = KnowledgeBaseRecord.from_hash(raw)
            pipe.multi()
            pipe.hset(
                k.gone_kb(tenant, kb, rec.collection), mapping={**rec.to_hash(), "purged": "0"}
            )
            pipe.zadd(k.deleting_kbs, {PendingKb(tenant, kb, rec.collection).member: time.time()})
            pipe.delete(key)
            pipe.zrem(k.kbs(tenant), kb)
            if rec.reindex_collection:  # a re-index under way: its collection goes too
                pipe.zadd(k.drop_collections, {rec.reindex_collection: 0})
                pipe.srem(k.reindexing, f"{tenant}|{kb}")
            return rec

        return self.db.txn(body, key)

    def pending_kbs(self, idle_s: float = 0.0) -> list[PendingKb]:
        """Knowledge bases being deleted whose last attempt is at least `idle_s`
        old; each one returned is stamped as attempted now."""
        return [PendingKb(*m.split("|", 2)) for m in self._take(self.keys.deleting_kbs, idle_s)]

    def pending_kbs_of(self, tenant: str, kb: str) -> list[PendingKb]:
        """The deleted knowledge bases of that id not gone yet (their collection)."""
        return [p for p in self.pending_kbs_of_tenant(tenant) if p.knowledge_base_id == kb]

    def pending_kbs_of_tenant(self, tenant: str) -> list[PendingKb]:
        members = [m.decode() for m in self.db.r.zrange(self.keys.deleting_kbs, 0, -1)]
        found = [PendingKb(*m.split("|", 2)) for m in members if m.count("|") == 2]
        return [p for p in found if p.tenant == tenant]

    def check_recreate(self, tenant: str, kb: str) -> None:
        """A knowledge base can be created again once its deleted namesake's
        records are purged (its old collection may still be dropped later)."""
        for pending in self.pending_kbs_of(tenant, kb):
            gone = self.keys.gone_kb(tenant, kb, pending.collection)
            if self.db.r.hget(gone, "purged") == b"0":
                raise FailedPrecondition(
                    f"knowledge base {kb!r} is still being deleted; create it again shortly",
                    reason="KNOWLEDGE_BASE_BEING_DELETED",
                    metadata={"knowledge_base_id": kb},
                )

    def purge_kb(self, pending: PendingKb) -> None:
        """Documents, jobs and uploads of a deleted knowledge base (idempotent)."""
        k, tenant, kb = self.keys, pending.tenant, pending.knowledge_base_id
        reason = cancelled("KNOWLEDGE_BASE_DELETED", "the knowledge base was deleted")
        members = [m.decode() for m in self.db.r.zrange(k.jobs(tenant, kb), 0, -1)]
        job_ids = [m.split("|", 1)[1] for m in members]
        for job_id in job_ids:
            self.book.end_job(job_id, JobState.CANCELLED, reason, from_states=ACTIVE_STATES)
        raws = self.db.hashes(k.job(j) for j in job_ids)
        held = sum(JobRecord.from_hash(r).blob_bytes for r in raws if r)
        docs = [m.decode() for m in self.db.r.zrange(k.docs(tenant, kb), 0, -1)]
        doc_raws = self.db.hashes(k.doc(tenant, kb, d) for d in docs)
        kept = [DocumentRecord.from_hash(r) for r in doc_raws if r]
        held += sum(d.original_bytes for d in kept)
        pipe = self.db.r.pipeline(transaction=True)
        for doc in docs:
            pipe.delete(k.doc(tenant, kb, doc))
            pipe.zrem(k.deleting_docs, PendingDoc(tenant, kb, doc).member)
        pipe.delete(k.docs(tenant, kb), k.deleting_docs_of(tenant, kb))
        for member, job_id in zip(members, job_ids, strict=True):
            pipe.delete(k.job(job_id))
            pipe.zrem(k.jobs(tenant), member)
            pipe.zrem(k.active_jobs, job_id)
            pipe.zrem(k.retained_blobs, job_id)
        pipe.delete(
            k.jobs(tenant, kb),
            k.reindex_pending(tenant, kb),
            k.reindexed(tenant, kb),
            reindex_jobs_key(k, tenant, kb),
        )
        queue_usage_change(pipe, k, tenant, documents=-len(docs), stored_bytes=-held)
        pipe.hset(k.gone_kb(tenant, kb, pending.collection), "purged", "1")
        pipe.execute()
        self.blobs.delete(*job_ids)
        for doc in kept:
            self.book.drop_originals(tenant, kb, doc.document_id, doc.original_version)

    def finish_kb_delete(self, pending: PendingKb) -> None:
        """Once the collection is dropped: the tombstone goes."""
        pipe = self.db.r.pipeline(transaction=True)
        pipe.zrem(self.keys.deleting_kbs, pending.member)
        pipe.delete(
            self.keys.gone_kb(pending.tenant, pending.knowledge_base_id, pending.collection)
        )
        pipe.execute()

    # ------------------------------------------------------------ blob expiry

    def _due(self, index: str, before: float, limit: int) -> list[str]:
        """Up to `limit` members of a zset scored by time, the oldest, scored before `before`."""
        return [m.decode() for m in self.db.r.zrangebyscore(index, "-inf", before, 0, limit)]

    def expire_retained_blobs(self, ended_before: float, limit: int = 500) -> list[str]:
        """Drops the upload bytes of FAILED/CANCELLED jobs that ended before
        `ended_before` (a retry of them then says UPLOAD_GONE); their ids."""
        k = self.keys
        dropped = []
        for job_id in self._due(k.retained_blobs, ended_before, limit):

            def body(pipe: Any, job_id: str = job_id) -> bool:
                raw = pipe.hgetall(k.job(job_id))
                job = JobRecord.from_hash(raw) if raw else None
                pipe.multi()
                pipe.zrem(k.retained_blobs, job_id)
                if job is None or job.active:
                    return False
                self.book.queue_drop_blob(pipe, job)
                return True

            if self.db.txn(body, k.job(job_id)):
                dropped.append(job_id)
        self.blobs.delete(*dropped)
        return dropped

    def expire_ended_jobs(self, ended_before: float, now: float, limit: int = 500) -> list[str]:
        """Deletes the records of jobs that ended before `ended_before` (their ids). A
        job that is still its document's last (the document's state and error are its)
        is kept and looked at again a retention period later; one that runs again (a
        retry) leaves the index until it ends again."""
        k = self.keys
        expired = []
        for job_id in self._due(k.ended_jobs, ended_before, limit):

            def body(pipe: Any, job_id: str = job_id) -> bool:
                raw = pipe.hgetall(k.job(job_id))
                job = JobRecord.from_hash(raw) if raw else None
                doc_key = k.doc(job.tenant, job.knowledge_base_id, job.document_id) if job else ""
                if doc_key:
                    pipe.watch(doc_key)
                last_job = pipe.hget(doc_key, "last_job_id") if doc_key else None
                pipe.multi()
                if job is None or job.active:
                    pipe.zrem(k.ended_jobs, job_id)
                    return False
                if last_job is not None and last_job.decode() == job_id:
                    pipe.zadd(k.ended_jobs, {job_id: now})
                    return False
                self.book.queue_drop_blob(pipe, job)
                pipe.zrem(k.ended_jobs, job_id)
                pipe.delete(k.job(job_id))
                pipe.zrem(k.jobs(job.tenant), job.index_member)
                pipe.zrem(k.jobs(job.tenant, job.knowledge_base_id), job.index_member)
                return True

            if self.db.txn(body, k.job(job_id)):
                expired.append(job_id)
        self.blobs.delete(*expired)
        return expired


def not_found_is_done(exc: NotFound) -> bool:
    """A delete that finds nothing to delete (the collection was dropped, the
    chunks were gone) has done its work."""
    return exc.reason in {"COLLECTION_NOT_FOUND", "DOCUMENT_NOT_FOUND"}
