"""Rebuilding an index from the kept originals: REPAIR jobs (a document
ingested again into its knowledge base's collection) and re-indexing (every
document embedded into a new collection, maybe with another model, while
searches keep using the old one; the knowledge base switches in one
transaction once every document is in).

Re-index state: the knowledge base record's `reindex_*` fields; the documents
still to do ({p}:{t}:reindex:{kb}); those done, with their chunk counts
({p}:{t}:reindexed:{kb}); their jobs ({p}:{t}:reindex_jobs:{kb}). The gateway's
housekeeping keeps it moving (`reconcile`): a document uploaded during a
re-index, or whose re-index job failed for a passing reason, gets a new job.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from services.common.errors import FailedPrecondition
from services.jobs.catalogue import kb_not_found
from services.jobs.keys import Keys
from services.jobs.records import (
    DocumentRecord,
    DocumentState,
    JobKind,
    JobRecord,
    KnowledgeBaseRecord,
)

if TYPE_CHECKING:
    from services.jobs.jobbook import JobBook


def queue_reindex_again(
    pipe: Any, keys: Keys, tenant: str, kb: str, doc_id: str, reindexing: bool
) -> None:
    """(pipe in MULTI) A new upload during a re-index: its version is embedded into
    the new collection too, once indexed."""
    if reindexing:
        pipe.sadd(keys.reindex_pending(tenant, kb), doc_id)
        pipe.hdel(keys.reindexed(tenant, kb), doc_id)


def queue_reindexed(
    pipe: Any, keys: Keys, job: JobRecord, doc: DocumentRecord, chunks: int
) -> None:
    """(pipe in MULTI) A REINDEX job's document is in the new collection, if the
    job embedded the document's current version (else it stays to do)."""
    t, kb, d = job.tenant, job.knowledge_base_id, job.document_id
    if doc.original_version == job.version and doc.state != DocumentState.DELETING:
        pipe.hset(keys.reindexed(t, kb), d, f"{job.version}|{chunks}")
        pipe.srem(keys.reindex_pending(t, kb), d)


def reindex_jobs_key(keys: Keys, tenant: str, kb: str) -> str:
    return f"{keys.prefix}:{tenant}:reindex_jobs:{kb}"


@dataclass(frozen=True)
class ReindexProgress:
    collection: str
    model: str
    pending: int
    done: int


class Rebuilds:
    def __init__(self, book: JobBook) -> None:
        self.book = book
        self.db = book.db
        self.keys = book.keys

    # ------------------------------------------------------------------ jobs

    def register_from_original(
        self, tenant: str, kb: str, doc_id: str, kind: JobKind
    ) -> JobRecord | None:
        """A QUEUED REPAIR or REINDEX job for the document's kept original (the
        caller sends it); None when there is nothing to do now: no original, the
        document is being deleted, or it has a job of that kind in flight."""
        k = self.keys
        dkey, kkey = k.doc(tenant, kb, doc_id), k.kb(tenant, kb)
        jobs_of_kb = reindex_jobs_key(k, tenant, kb)
        now = time.time()
        job_id = uuid.uuid4().hex
        member = f"{int(now * 1000):015d}|{job_id}"

        def body(pipe: Any) -> JobRecord | None:
            raw_kb, raw_doc = pipe.hgetall(kkey), pipe.hgetall(dkey)
            if not raw_kb:
                raise kb_not_found(kb)
            record: KnowledgeBaseRecord = KnowledgeBaseRecord.from_hash(raw_kb)
            doc = DocumentRecord.from_hash(raw_doc) if raw_doc else None
            if doc is None or doc.state == DocumentState.DELETING or not doc.original_bytes:
                pipe.multi()
                return None
            if kind == JobKind.REINDEX:
                if doc.state != DocumentState.INDEXED:  # its upload is under way: later
                    pipe.multi()
                    return None
                collection = record.reindex_collection
                running = pipe.hget(jobs_of_kb, doc_id)
                current = self.book._watch_job(pipe, running.decode() if running else "")
            else:
                collection = record.collection
                current = self.book._watch_job(pipe, doc.last_job_id)
            if not collection or (current is not None and current.active):
                pipe.multi()
                return None
            job = JobRecord(
                job_id=job_id,
                tenant=tenant,
                knowledge_base_id=kb,
                document_id=doc_id,
                file_name=doc.file_name,
                media_type=doc.media_type,
                version=doc.original_version,
                kind=kind,
                collection=collection,
                create_time=now,
                update_time=now,
                queued_since=now,
                index_member=member,
            )
            pipe.multi()
            pipe.hset(k.job(job_id), mapping=job.to_hash())
            pipe.zadd(k.jobs(tenant), {member: 0})
            pipe.zadd(k.jobs(tenant, kb), {member: 0})
            pipe.zadd(k.active_jobs, {job_id: now})
            if kind == JobKind.REINDEX:
                pipe.hset(jobs_of_kb, doc_id, job_id)
            else:
                fields = {"state": DocumentState.PENDING, "last_job_id": job_id, "update_time": now}
                pipe.hset(dkey, mapping={n: str(v) for n, v in fields.items()})
            pipe.publish(k.events(job_id), "1")
            return job

        return self.db.txn(body, kkey, dkey, jobs_of_kb)

    # --------------------------------------------------------------- re-index

    def start_reindex(
        self, tenant: str, kb: str, collection: str, model: str, dimension: int
    ) -> list[str]:
        """Starts filling `collection`; the documents to embed into it."""
        k = self.keys
        kkey = k.kb(tenant, kb)

        def body(pipe: Any) -> list[str]:
            raw = pipe.hgetall(kkey)
            if not raw:
                raise kb_not_found(kb)
            record: KnowledgeBaseRecord = KnowledgeBaseRecord.from_hash(raw)
            if record.reindex_collection:
                raise FailedPrecondition(
                    f"knowledge base {kb!r} is being re-indexed already",
                    reason="REINDEX_IN_PROGRESS",
                    metadata={"knowledge_base_id": kb},
                )
            docs = [m.decode() for m in pipe.zrange(k.docs(tenant, kb), 0, -1)]
            deleting = {m.decode() for m in pipe.smembers(k.deleting_docs_of(tenant, kb))}
            todo = [d for d in docs if d not in deleting]
            pipe.multi()
            pipe.hset(
                kkey,
                mapping={
                    "reindex_collection": collection,
                    "reindex_model": model,
                    "reindex_dimension": str(dimension),
                },
            )
            pipe.delete(
                k.reindex_pending(tenant, kb),
                k.reindexed(tenant, kb),
                reindex_jobs_key(k, tenant, kb),
            )
            if todo:
                pipe.sadd(k.reindex_pending(tenant, kb), *todo)
            pipe.sadd(k.reindexing, f"{tenant}|{kb}")
            return todo

        return self.db.txn(body, kkey)

    def in_progress(self) -> list[tuple[str, str]]:
        """(tenant, knowledge base) of every re-index under way."""
        members = [m.decode() for m in self.db.r.smembers(self.keys.reindexing)]
        return [(t, kb) for t, _, kb in (m.partition("|") for m in sorted(members))]

    def progress(self, tenant: str, kb: str) -> ReindexProgress | None:
        raw = self.db.r.hgetall(self.keys.kb(tenant, kb))
        record = KnowledgeBaseRecord.from_hash(raw) if raw else None
        if record is None or not record.reindex_collection:
            return None
        pipe = self.db.r.pipeline(transaction=False)
        pipe.scard(self.keys.reindex_pending(tenant, kb))
        pipe.hlen(self.keys.reindexed(tenant, kb))
        pending, done = pipe.execute()
        return ReindexProgress(record.reindex_collection, record.reindex_model, pending, done)

    def needing_jobs(self, tenant: str, kb: str) -> list[str]:
        """Documents still to re-index whose job is not in flight. Those with
        nothing to carry over (gone, or a first upload that failed) are dropped."""
        k = self.keys
        todo = sorted(m.decode() for m in self.db.r.smembers(k.reindex_pending(tenant, kb)))
        docs = self.db.hashes(k.doc(tenant, kb, d) for d in todo)
        nothing = [
            d
            for d, raw in zip(todo, docs, strict=True)
            if not raw
            or (
                DocumentRecord.from_hash(raw).state == DocumentState.FAILED
                and not DocumentRecord.from_hash(raw).original_bytes
            )
        ]
        if nothing:
            self.db.r.srem(k.reindex_pending(tenant, kb), *nothing)
            todo = [d for d in todo if d not in nothing]
        running = self.db.r.hmget(reindex_jobs_key(k, tenant, kb), todo) if todo else []
        job_ids = [r.decode() if r else "" for r in running]
        raws = self.db.hashes(k.job(j) for j in job_ids if j)
        active = {
            JobRecord.from_hash(r).document_id for r in raws if r and JobRecord.from_hash(r).active
        }
        return [d for d in todo if d not in active]

    def switch_if_done(self, tenant: str, kb: str) -> str | None:
        """When every document is in the new collection: the knowledge base uses
        it from now on (one transaction); the old collection, returned, is queued
        to be dropped after the sweeper's delay. None while work remains."""
        k = self.keys
        kkey, pending_key = k.kb(tenant, kb), k.reindex_pending(tenant, kb)

        def body(pipe: Any) -> str | None:
            raw = pipe.hgetall(kkey)
            record = KnowledgeBaseRecord.from_hash(raw) if raw else None
            if record is None or not record.reindex_collection or pipe.scard(pending_key):
                pipe.multi()
                if record is None:
                    pipe.srem(k.reindexing, f"{tenant}|{kb}")
                return None
            done = {
                d.decode(): v.decode() for d, v in pipe.hgetall(k.reindexed(tenant, kb)).items()
            }
            counts = {d: int(v.rpartition("|")[2] or 0) for d, v in done.items()}
            pipe.multi()
            for doc_id, count in counts.items():
                pipe.hset(k.doc(tenant, kb, doc_id), "chunk_count", str(count))
            pipe.hset(
                kkey,
                mapping={
                    "collection": record.reindex_collection,
                    "embedding_model": record.reindex_model or record.embedding_model,
                    "dimension": str(record.reindex_dimension or record.dimension),
                    "chunk_count": str(sum(counts.values())),
                    "reindex_collection": "",
                    "reindex_model": "",
                    "reindex_dimension": "0",
                },
            )
            pipe.delete(k.reindexed(tenant, kb), reindex_jobs_key(k, tenant, kb))
            pipe.srem(k.reindexing, f"{tenant}|{kb}")
            # Dropped once unused for the sweeper's delay, counted from now: a search that
            # read the record just before the switch still reaches the old collection.
            pipe.zadd(k.drop_collections, {record.collection: time.time()})
            return record.collection

        return self.db.txn(body, kkey, pending_key, k.reindexed(tenant, kb))

    def abort_reindex(self, tenant: str, kb: str) -> str:
        """Gives a re-index up: the knowledge base keeps its collection; the one
        being filled (returned) is queued to be dropped."""
        k = self.keys
        kkey = k.kb(tenant, kb)

        def body(pipe: Any) -> str:
            collection = pipe.hget(kkey, "reindex_collection")
            pipe.multi()
            pipe.srem(k.reindexing, f"{tenant}|{kb}")
            if not collection:
                return ""
            pipe.hset(
                kkey,
                mapping={"reindex_collection": "", "reindex_model": "", "reindex_dimension": "0"},
            )
            pipe.delete(
                k.reindex_pending(tenant, kb),
                k.reindexed(tenant, kb),
                reindex_jobs_key(k, tenant, kb),
            )
            pipe.zadd(k.drop_collections, {collection.decode(): 0})
            return str(collection.decode())

        return self.db.txn(body, kkey)

    # ------------------------------------------------------ collections to drop

    def collections_to_drop(self, idle_s: float) -> list[str]:
        now = time.time()
        names = [
            m.decode()
            for m in self.db.r.zrangebyscore(self.keys.drop_collections, "-inf", now - idle_s)
        ]
        if names:
            self.db.r.zadd(self.keys.drop_collections, dict.fromkeys(names, now), xx=True)
        return names

    def dropped(self, collection: str) -> None:
        self.db.r.zrem(self.keys.drop_collections, collection)
