"""Knowledge bases, documents, ingestion jobs and raw uploads in Redis.

Shared by the gateway (through `asyncio.to_thread`) and the Celery worker.
Every record is a hash under a per-tenant key; every state change that spans
several keys runs in a WATCH/MULTI transaction, and the hot worker updates
(claim, heartbeat/progress) are Lua scripts that check the job's state and run
token atomically. With Redis AOF the records survive restarts of everything.

Keys (`t` tenant, `kb` knowledge base, `doc` document):
  rm:{t}:kb:{kb}            hash  KnowledgeBaseRecord
  rm:{t}:kbs                zset  knowledge base ids (lexicographic paging)
  rm:{t}:doc:{kb}:{doc}     hash  DocumentRecord
  rm:{t}:docs:{kb}          zset  document ids
  rm:job:{job}              hash  JobRecord (carries its tenant)
  rm:{t}:jobs, rm:{t}:jobs:{kb}  zset  "<create ms>|<job>" (chronological paging)
  rm:blob:{job}             string  the uploaded bytes, until the job succeeds
  rm:active_jobs            zset  QUEUED/RUNNING job ids scored by last sign of life
  rm:lock:{t}:{kb}:{doc}    string  held around chunk writes and deletes of a document
  rm:events:{job}           pub/sub channel, a message on every job change
"""

from __future__ import annotations

import base64
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, TypeVar

import redis

from services.common.errors import AlreadyExists, FailedPrecondition, InvalidArgument, NotFound
from services.gateway.models import (
    ACTIVE_STATES,
    CANCELLED,
    DOC_FAILED,
    DOC_INDEXED,
    DOC_PENDING,
    FAILED,
    QUEUED,
    RUNNING,
    SUCCEEDED,
    DocumentRecord,
    ErrorRecord,
    JobRecord,
    KnowledgeBaseRecord,
)

T = TypeVar("T")
ACTIVE_KEY = "rm:active_jobs"


def kb_key(tenant: str, kb: str) -> str:
    return f"rm:{tenant}:kb:{kb}"


def kbs_index(tenant: str) -> str:
    return f"rm:{tenant}:kbs"


def doc_key(tenant: str, kb: str, doc: str) -> str:
    return f"rm:{tenant}:doc:{kb}:{doc}"


def docs_index(tenant: str, kb: str) -> str:
    return f"rm:{tenant}:docs:{kb}"


def job_key(job_id: str) -> str:
    return f"rm:job:{job_id}"


def jobs_index(tenant: str, kb: str | None = None) -> str:
    return f"rm:{tenant}:jobs" if kb is None else f"rm:{tenant}:jobs:{kb}"


def blob_key(job_id: str) -> str:
    return f"rm:blob:{job_id}"


def lock_key(tenant: str, kb: str, doc: str) -> str:
    return f"rm:lock:{tenant}:{kb}:{doc}"


def events_channel(job_id: str) -> str:
    return f"rm:events:{job_id}"


# Claim a QUEUED job, or a RUNNING one whose worker stopped beating.
_CLAIM = """
local j = redis.call('HMGET', KEYS[1], 'state', 'heartbeat', 'attempt', 'start_time')
if not j[1] then return 'missing' end
if j[1] == 'RUNNING' then
  if tonumber(ARGV[2]) - tonumber(j[2] or '0') < tonumber(ARGV[3]) then return 'busy' end
elseif j[1] ~= 'QUEUED' then
  return j[1]
end
redis.call('HSET', KEYS[1], 'state', 'RUNNING', 'run_token', ARGV[1], 'heartbeat', ARGV[2],
  'update_time', ARGV[2], 'attempt', tonumber(j[3] or '0') + 1, 'stage', 'PARSING')
if (j[4] or '') == '' or j[4] == '0' or j[4] == '0.0' then
  redis.call('HSET', KEYS[1], 'start_time', ARGV[2])
end
redis.call('ZADD', KEYS[2], ARGV[2], ARGV[4])
redis.call('PUBLISH', ARGV[5], '1')
return 'ok'
"""

# Heartbeat and progress of the owner of a RUNNING job; anything else means the
# worker lost the job (cancelled, deleted, re-queued to another worker).
_BEAT = """
local j = redis.call('HMGET', KEYS[1], 'state', 'run_token')
if not j[1] then return 'missing' end
if j[1] ~= 'RUNNING' then return j[1] end
if j[2] ~= ARGV[1] then return 'token' end
redis.call('HSET', KEYS[1], 'heartbeat', ARGV[2])
if #ARGV > 4 then
  for i = 5, #ARGV, 2 do redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1]) end
  redis.call('HSET', KEYS[1], 'update_time', ARGV[2])
  redis.call('PUBLISH', ARGV[4], '1')
end
redis.call('ZADD', KEYS[2], ARGV[2], ARGV[3])
return 'ok'
"""

_UNLOCK = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


_TOKEN_PREFIX = "p1|"


def encode_token(member: str) -> str:
    """An opaque page token: the last member of the page."""
    return base64.urlsafe_b64encode((_TOKEN_PREFIX + member).encode()).decode().rstrip("=")


def decode_token(token: str) -> str:
    try:
        raw = base64.b64decode(token + "=" * (-len(token) % 4), altchars=b"-_", validate=True)
        text = raw.decode()
    except (ValueError, UnicodeDecodeError):
        text = ""
    if not text.startswith(_TOKEN_PREFIX):
        raise InvalidArgument(
            "page_token is not a token this server issued", reason="INVALID_PAGE_TOKEN"
        )
    return text[len(_TOKEN_PREFIX) :]


@dataclass
class UploadResult:
    job: JobRecord
    document: DocumentRecord
    #: whether a task must be sent (False: deduplicated or already in progress)
    enqueue: bool
    superseded_job_id: str = ""


@dataclass
class ReapResult:
    requeue: list[str]
    failed: list[str]


class Store:
    def __init__(self, client: redis.Redis) -> None:
        # Any: redis-py's types cannot tell that replies are bytes here.
        self.r: Any = client
        self._claim = client.register_script(_CLAIM)
        self._beat = client.register_script(_BEAT)
        self._unlock = client.register_script(_UNLOCK)

    @classmethod
    def from_url(cls, url: str) -> Store:
        return cls(
            redis.Redis.from_url(
                url, socket_timeout=10, socket_connect_timeout=5, health_check_interval=15
            )
        )

    def ping(self) -> bool:
        return bool(self.r.ping())

    def close(self) -> None:
        self.r.close()

    # ------------------------------------------------------------------ helpers

    def _txn(self, body: Callable[[Any], T], *watch: str) -> T:
        """Run `body(pipe)` in WATCH/MULTI, again whenever a watched key changed.

        `body` reads through the pipe (immediate mode), may watch more keys, then
        calls `pipe.multi()` and queues its writes.
        """
        with self.r.pipeline() as pipe:
            while True:
                try:
                    if watch:
                        pipe.watch(*watch)
                    result = body(pipe)
                    pipe.execute()
                    return result
                except redis.WatchError:
                    continue

    @staticmethod
    def _page(client: Any, index: str, page_size: int, page_token: str) -> tuple[list[str], str]:
        start = "(" + decode_token(page_token) if page_token else "-"
        raw = client.zrangebylex(index, start, "+", start=0, num=page_size + 1)
        members = [m.decode() for m in raw]
        if len(members) > page_size:
            members = members[:page_size]
            return members, encode_token(members[-1])
        return members, ""

    def _hashes(self, keys: Iterable[str]) -> list[dict[bytes, bytes]]:
        pipe = self.r.pipeline(transaction=False)
        for key in keys:
            pipe.hgetall(key)
        return list(pipe.execute())

    # ---------------------------------------------------------- knowledge bases

    def create_kb(self, record: KnowledgeBaseRecord) -> KnowledgeBaseRecord:
        key = kb_key(record.tenant, record.knowledge_base_id)

        def body(pipe: Any) -> KnowledgeBaseRecord:
            if pipe.exists(key):
                raise AlreadyExists(
                    f"knowledge base {record.knowledge_base_id!r} already exists",
                    reason="KNOWLEDGE_BASE_EXISTS",
                )
            pipe.multi()
            pipe.hset(key, mapping=record.to_hash())
            pipe.zadd(kbs_index(record.tenant), {record.knowledge_base_id: 0})
            return record

        return self._txn(body, key)

    def get_kb(self, tenant: str, kb: str) -> KnowledgeBaseRecord:
        raw = self.r.hgetall(kb_key(tenant, kb))
        if not raw:
            raise NotFound(
                f"knowledge base {kb!r} not found",
                reason="KNOWLEDGE_BASE_NOT_FOUND",
                metadata={"knowledge_base_id": kb},
            )
        rec: KnowledgeBaseRecord = KnowledgeBaseRecord.from_hash(raw)
        return rec

    def update_kb(self, tenant: str, kb: str, **fields: object) -> None:
        self.r.hset(kb_key(tenant, kb), mapping={k: str(val) for k, val in fields.items()})

    def document_count(self, tenant: str, kb: str) -> int:
        return int(self.r.zcard(docs_index(tenant, kb)))

    def list_kbs(
        self, tenant: str, page_size: int, page_token: str
    ) -> tuple[list[KnowledgeBaseRecord], str]:
        ids, nxt = self._page(self.r, kbs_index(tenant), page_size, page_token)
        raws = self._hashes(kb_key(tenant, kb) for kb in ids)
        return [KnowledgeBaseRecord.from_hash(r) for r in raws if r], nxt

    def delete_kb_record(self, tenant: str, kb: str) -> KnowledgeBaseRecord:
        """Removes the knowledge base record (so nothing new can enter it) and
        cancels its active jobs; `purge_kb` removes the rest afterwards."""
        key = kb_key(tenant, kb)

        def body(pipe: Any) -> KnowledgeBaseRecord:
            raw = pipe.hgetall(key)
            if not raw:
                raise NotFound(
                    f"knowledge base {kb!r} not found",
                    reason="KNOWLEDGE_BASE_NOT_FOUND",
                    metadata={"knowledge_base_id": kb},
                )
            pipe.multi()
            pipe.delete(key)
            pipe.zrem(kbs_index(tenant), kb)
            rec: KnowledgeBaseRecord = KnowledgeBaseRecord.from_hash(raw)
            return rec

        return self._txn(body, key)

    def purge_kb(self, tenant: str, kb: str) -> None:
        """Documents, jobs and uploads of a deleted knowledge base."""
        reason = ErrorRecord(
            "CANCELLED",
            "KNOWLEDGE_BASE_DELETED",
            "the knowledge base was deleted",
            domain="gateway.ragmesh",
        )
        members = [m.decode() for m in self.r.zrange(jobs_index(tenant, kb), 0, -1)]
        for member in members:
            job_id = member.split("|", 1)[1]
            self._end_job(job_id, CANCELLED, reason, from_states=ACTIVE_STATES)
        docs = [m.decode() for m in self.r.zrange(docs_index(tenant, kb), 0, -1)]
        pipe = self.r.pipeline(transaction=False)
        for doc in docs:
            pipe.delete(doc_key(tenant, kb, doc))
        pipe.delete(docs_index(tenant, kb))
        for member in members:
            job_id = member.split("|", 1)[1]
            pipe.delete(job_key(job_id), blob_key(job_id))
            pipe.zrem(jobs_index(tenant), member)
            pipe.zrem(ACTIVE_KEY, job_id)
        pipe.delete(jobs_index(tenant, kb))
        pipe.execute()

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
        dkey = doc_key(tenant, kb, document.document_id)
        kkey = kb_key(tenant, kb)
        stored_blob = False

        def body(pipe: Any) -> UploadResult:
            nonlocal stored_blob
            if not pipe.exists(kkey):
                raise NotFound(
                    f"knowledge base {kb!r} not found",
                    reason="KNOWLEDGE_BASE_NOT_FOUND",
                    metadata={"knowledge_base_id": kb},
                )
            raw_doc = pipe.hgetall(dkey)
            old: DocumentRecord | None = DocumentRecord.from_hash(raw_doc) if raw_doc else None
            old_job: JobRecord | None = None
            if old and old.last_job_id:
                pipe.watch(job_key(old.last_job_id))
                raw_job = pipe.hgetall(job_key(old.last_job_id))
                old_job = JobRecord.from_hash(raw_job) if raw_job else None
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
                if old.state == DOC_INDEXED:
                    job.state = SUCCEEDED
                    job.deduplicated = True
                    job.chunks_done = job.chunks_total = old.chunk_count
                    job.start_time = job.end_time = now
                    doc = DocumentRecord(
                        **{
                            **old.__dict__,
                            "last_job_id": job_id,
                            "update_time": now,
                            "file_name": document.file_name,
                        }
                    )
                    pipe.multi()
                    pipe.hset(job_key(job_id), mapping=job.to_hash())
                    pipe.zadd(jobs_index(tenant), {member: 0})
                    pipe.zadd(jobs_index(tenant, kb), {member: 0})
                    pipe.hset(dkey, mapping=doc.to_hash())
                    pipe.publish(events_channel(job_id), "1")
                    return UploadResult(job, doc, enqueue=False)
            doc = DocumentRecord(
                **{
                    **document.__dict__,
                    "tenant": tenant,
                    "knowledge_base_id": kb,
                    "state": DOC_PENDING,
                    "last_job_id": job_id,
                    "update_time": now,
                    "create_time": old.create_time if old else now,
                    "chunk_count": old.chunk_count if old else 0,
                    "title": old.title if old else "",
                }
            )
            if not stored_blob:
                # Written before MULTI (outside the retry loop's writes) so a
                # retried transaction does not send the bytes again.
                self.r.set(blob_key(job_id), content)
                stored_blob = True
            pipe.multi()
            superseded = ""
            if old_job is not None:
                pipe.delete(blob_key(old_job.job_id))
                if old_job.active:
                    superseded = old_job.job_id
                    self._queue_end(
                        pipe,
                        old_job,
                        CANCELLED,
                        ErrorRecord(
                            "CANCELLED",
                            "SUPERSEDED",
                            f"document replaced by a newer upload (job {job_id})",
                            domain="gateway.ragmesh",
                        ),
                        now,
                    )
            pipe.hset(job_key(job_id), mapping=job.to_hash())
            pipe.zadd(jobs_index(tenant), {member: 0})
            pipe.zadd(jobs_index(tenant, kb), {member: 0})
            pipe.zadd(ACTIVE_KEY, {job_id: now})
            pipe.hset(dkey, mapping=doc.to_hash())
            pipe.zadd(docs_index(tenant, kb), {document.document_id: 0})
            pipe.publish(events_channel(job_id), "1")
            return UploadResult(job, doc, enqueue=True, superseded_job_id=superseded)

        try:
            result = self._txn(body, kkey, dkey)
        except BaseException:
            if stored_blob:
                self.r.delete(blob_key(job_id))
            raise
        if stored_blob and result.job.job_id != job_id:
            self.r.delete(blob_key(job_id))
        return result

    def load_blob(self, job_id: str) -> bytes | None:
        data = self.r.get(blob_key(job_id))
        return bytes(data) if data is not None else None

    # --------------------------------------------------------------------- jobs

    def get_job(self, job_id: str, tenant: str | None = None) -> JobRecord:
        """The job; another tenant's job is NOT_FOUND like a missing one."""
        raw = self.r.hgetall(job_key(job_id)) if job_id else {}
        job: JobRecord | None = JobRecord.from_hash(raw) if raw else None
        if job is None or (tenant is not None and job.tenant != tenant):
            raise NotFound(
                f"ingestion job {job_id!r} not found",
                reason="JOB_NOT_FOUND",
                metadata={"job_id": job_id},
            )
        return job

    def list_jobs(
        self, tenant: str, kb: str | None, state: str | None, page_size: int, page_token: str
    ) -> tuple[list[JobRecord], str]:
        index = jobs_index(tenant, kb)
        out: list[JobRecord] = []
        token = page_token
        # Filtering by state scans forward until the page is full.
        while True:
            members, token = self._page(self.r, index, page_size, token)
            raws = self._hashes(job_key(m.split("|", 1)[1]) for m in members)
            for member, raw in zip(members, raws, strict=True):
                if not raw:
                    continue
                job = JobRecord.from_hash(raw)
                if state is None or job.state == state:
                    out.append(job)
                if len(out) == page_size:
                    if member != members[-1] or token:
                        return out, encode_token(member)
                    return out, ""
            if not token:
                return out, ""

    def _queue_end(
        self, pipe: Any, job: JobRecord, state: str, error: ErrorRecord | None, now: float
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
        pipe.hset(job_key(job.job_id), mapping=fields)
        pipe.zrem(ACTIVE_KEY, job.job_id)
        pipe.publish(events_channel(job.job_id), "1")

    def _end_job(
        self,
        job_id: str,
        state: str,
        error: ErrorRecord | None,
        *,
        from_states: Iterable[str],
        token: str | None = None,
        tenant: str | None = None,
        chunk_count: int | None = None,
        title: str | None = None,
    ) -> JobRecord | None:
        """Moves a job to a final state and its document along with it (when it
        is the document's latest job). None when the job was not in
        `from_states` (or not owned by `token`)."""
        now = time.time()
        jkey = job_key(job_id)
        allowed = tuple(from_states)

        def body(pipe: Any) -> JobRecord | None:
            raw = pipe.hgetall(jkey)
            if not raw:
                pipe.multi()
                return None
            job: JobRecord = JobRecord.from_hash(raw)
            if tenant is not None and job.tenant != tenant:
                pipe.multi()
                return None
            if job.state not in allowed or (token is not None and job.run_token != token):
                pipe.multi()
                return None
            dkey = doc_key(job.tenant, job.knowledge_base_id, job.document_id)
            kkey = kb_key(job.tenant, job.knowledge_base_id)
            pipe.watch(dkey, kkey)
            raw_doc = pipe.hgetall(dkey)
            doc: DocumentRecord | None = DocumentRecord.from_hash(raw_doc) if raw_doc else None
            kb_exists = pipe.exists(kkey)
            pipe.multi()
            self._queue_end(pipe, job, state, error, now)
            if state == SUCCEEDED:
                pipe.hset(
                    jkey,
                    mapping={
                        "chunks_done": str(chunk_count or 0),
                        "chunks_total": str(chunk_count or 0),
                    },
                )
                pipe.delete(blob_key(job_id))
            if doc is not None and doc.last_job_id == job_id:
                doc_fields = {
                    "state": DOC_INDEXED if state == SUCCEEDED else DOC_FAILED,
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

        return self._txn(body, jkey)

    def cancel_job(self, tenant: str, job_id: str) -> JobRecord:
        job = self.get_job(job_id, tenant)
        ended = self._end_job(
            job_id,
            CANCELLED,
            ErrorRecord(
                "CANCELLED",
                "CANCELLED_BY_USER",
                "cancelled by the caller",
                domain="gateway.ragmesh",
            ),
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
        jkey = job_key(job_id)

        def body(pipe: Any) -> None:
            raw = pipe.hgetall(jkey)
            job: JobRecord | None = JobRecord.from_hash(raw) if raw else None
            if job is None or job.tenant != tenant:
                raise NotFound(
                    f"ingestion job {job_id!r} not found",
                    reason="JOB_NOT_FOUND",
                    metadata={"job_id": job_id},
                )
            if job.state not in (FAILED, CANCELLED):
                raise FailedPrecondition(
                    f"only FAILED or CANCELLED jobs can be retried; job {job_id!r} is {job.state}",
                    reason="JOB_NOT_RETRYABLE",
                    metadata={"job_id": job_id, "state": job.state},
                )
            dkey = doc_key(tenant, job.knowledge_base_id, job.document_id)
            pipe.watch(dkey)
            raw_doc = pipe.hgetall(dkey)
            if not raw_doc:
                raise FailedPrecondition(
                    "the job's document was deleted",
                    reason="DOCUMENT_DELETED",
                    metadata={"job_id": job_id},
                )
            doc = DocumentRecord.from_hash(raw_doc)
            if doc.last_job_id != job_id:
                raise FailedPrecondition(
                    f"the document was uploaded again since (job {doc.last_job_id})",
                    reason="JOB_SUPERSEDED",
                    metadata={"job_id": job_id},
                )
            if not pipe.exists(blob_key(job_id)):
                raise FailedPrecondition(
                    "the uploaded bytes are gone; upload again",
                    reason="UPLOAD_GONE",
                    metadata={"job_id": job_id},
                )
            pipe.multi()
            pipe.hset(
                jkey,
                mapping={
                    "state": QUEUED,
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
            pipe.zadd(ACTIVE_KEY, {job_id: now})
            pipe.hset(dkey, mapping={"state": DOC_PENDING, "update_time": str(now)})
            pipe.publish(events_channel(job_id), "1")

        self._txn(body, jkey)
        return self.get_job(job_id, tenant)

    # ---------------------------------------------------------------- documents

    def get_doc(self, tenant: str, kb: str, doc: str) -> DocumentRecord:
        raw = self.r.hgetall(doc_key(tenant, kb, doc))
        if not raw:
            self.get_kb(tenant, kb)
            raise NotFound(
                f"document {doc!r} not found in knowledge base {kb!r}",
                reason="DOCUMENT_NOT_FOUND",
                metadata={"knowledge_base_id": kb, "document_id": doc},
            )
        rec: DocumentRecord = DocumentRecord.from_hash(raw)
        return rec

    def list_docs(
        self, tenant: str, kb: str, page_size: int, page_token: str
    ) -> tuple[list[DocumentRecord], str]:
        self.get_kb(tenant, kb)
        ids, nxt = self._page(self.r, docs_index(tenant, kb), page_size, page_token)
        raws = self._hashes(doc_key(tenant, kb, d) for d in ids)
        return [DocumentRecord.from_hash(r) for r in raws if r], nxt

    def delete_doc(self, tenant: str, kb: str, doc_id: str) -> DocumentRecord:
        """Removes the document record and cancels its active job. The caller
        then deletes its chunks under the document lock."""
        dkey = doc_key(tenant, kb, doc_id)
        kkey = kb_key(tenant, kb)
        now = time.time()

        def body(pipe: Any) -> DocumentRecord:
            raw = pipe.hgetall(dkey)
            if not raw:
                if not pipe.exists(kkey):
                    raise NotFound(
                        f"knowledge base {kb!r} not found",
                        reason="KNOWLEDGE_BASE_NOT_FOUND",
                        metadata={"knowledge_base_id": kb},
                    )
                raise NotFound(
                    f"document {doc_id!r} not found in knowledge base {kb!r}",
                    reason="DOCUMENT_NOT_FOUND",
                    metadata={"knowledge_base_id": kb, "document_id": doc_id},
                )
            doc: DocumentRecord = DocumentRecord.from_hash(raw)
            job: JobRecord | None = None
            if doc.last_job_id:
                pipe.watch(job_key(doc.last_job_id))
                raw_job = pipe.hgetall(job_key(doc.last_job_id))
                job = JobRecord.from_hash(raw_job) if raw_job else None
            kb_exists = pipe.exists(kkey)
            pipe.multi()
            if job is not None:
                pipe.delete(blob_key(job.job_id))
                if job.active:
                    self._queue_end(
                        pipe,
                        job,
                        CANCELLED,
                        ErrorRecord(
                            "CANCELLED",
                            "DOCUMENT_DELETED",
                            "the document was deleted",
                            domain="gateway.ragmesh",
                        ),
                        now,
                    )
            pipe.delete(dkey)
            pipe.zrem(docs_index(tenant, kb), doc_id)
            if kb_exists and doc.chunk_count:
                pipe.hincrby(kkey, "chunk_count", -doc.chunk_count)
            return doc

        return self._txn(body, dkey, kkey)

    # ----------------------------------------------------------- document lock

    def acquire_doc_lock(self, tenant: str, kb: str, doc: str, ttl_s: float = 60.0) -> str | None:
        """One try; a token to release with, or None when someone holds it."""
        token = uuid.uuid4().hex
        ok = self.r.set(lock_key(tenant, kb, doc), token, nx=True, px=int(ttl_s * 1000))
        return token if ok else None

    def release_doc_lock(self, tenant: str, kb: str, doc: str, token: str) -> None:
        self._unlock(keys=[lock_key(tenant, kb, doc)], args=[token])

    # ------------------------------------------------------------ worker side

    def claim_job(
        self, job_id: str, token: str, stale_after_s: float, now: float | None = None
    ) -> str:
        """'ok' when this worker now owns the job; otherwise why not ('missing',
        'busy' = another live worker runs it, or the job's final state)."""
        now = now or time.time()
        result = self._claim(
            keys=[job_key(job_id), ACTIVE_KEY],
            args=[token, now, stale_after_s, job_id, events_channel(job_id)],
        )
        return bytes(result).decode()

    def heartbeat(self, job_id: str, token: str, **fields: object) -> str:
        """Records a sign of life (and progress fields); 'ok' while the job is
        still this worker's, else why it is not."""
        args: list[Any] = [token, time.time(), job_id, events_channel(job_id)]
        for name, value in fields.items():
            args += [name, value]
        result = self._beat(keys=[job_key(job_id), ACTIVE_KEY], args=args)
        return bytes(result).decode()

    def release_for_retry(self, job_id: str, token: str, error: ErrorRecord) -> bool:
        """RUNNING → QUEUED before the task retries after a transient error."""
        jkey = job_key(job_id)
        now = time.time()

        def body(pipe: Any) -> bool:
            raw = pipe.hgetall(jkey)
            job = JobRecord.from_hash(raw) if raw else None
            pipe.multi()
            if job is None or job.state != RUNNING or job.run_token != token:
                return False
            pipe.hset(
                jkey,
                mapping={
                    "state": QUEUED,
                    "stage": "",
                    "run_token": "",
                    "queued_since": str(now),
                    "update_time": str(now),
                    "last_error": error.to_json(),
                },
            )
            pipe.zadd(ACTIVE_KEY, {job_id: now})
            pipe.publish(events_channel(job_id), "1")
            return True

        return self._txn(body, jkey)

    def finish_job(self, job_id: str, token: str, chunk_count: int, title: str) -> JobRecord | None:
        return self._end_job(
            job_id,
            SUCCEEDED,
            None,
            from_states=(RUNNING,),
            token=token,
            chunk_count=chunk_count,
            title=title,
        )

    def fail_job(
        self,
        job_id: str,
        error: ErrorRecord,
        *,
        token: str | None = None,
        from_states: Iterable[str] = (RUNNING,),
        chunk_count: int | None = None,
    ) -> JobRecord | None:
        return self._end_job(
            job_id, FAILED, error, from_states=from_states, token=token, chunk_count=chunk_count
        )

    # ------------------------------------------------------------------ reaper

    def reap(
        self,
        *,
        stale_after_s: float,
        max_attempts: int,
        requeue_after_s: float,
        queued_timeout_s: float,
        now: float | None = None,
    ) -> ReapResult:
        """Finds jobs nobody is working on.

        RUNNING without a heartbeat for `stale_after_s`: its worker vanished →
        QUEUED again (to be re-sent), or FAILED (WORKER_LOST) after
        `max_attempts` losses. QUEUED for `requeue_after_s` without a worker
        taking it: re-sent (duplicates are harmless: a task only runs a job it
        can claim), and FAILED (QUEUE_TIMEOUT) after `queued_timeout_s`.
        """
        now = now or time.time()
        threshold = now - min(stale_after_s, requeue_after_s)
        candidates = [m.decode() for m in self.r.zrangebyscore(ACTIVE_KEY, "-inf", threshold)]
        result = ReapResult([], [])
        for job_id in candidates:
            action = self._reap_one(
                job_id,
                now=now,
                stale_after_s=stale_after_s,
                max_attempts=max_attempts,
                requeue_after_s=requeue_after_s,
                queued_timeout_s=queued_timeout_s,
            )
            if action == "requeue":
                result.requeue.append(job_id)
            elif action == "failed":
                result.failed.append(job_id)
        return result

    def _reap_one(
        self,
        job_id: str,
        *,
        now: float,
        stale_after_s: float,
        max_attempts: int,
        requeue_after_s: float,
        queued_timeout_s: float,
    ) -> str:
        jkey = job_key(job_id)

        def body(pipe: Any) -> str:
            raw = pipe.hgetall(jkey)
            job = JobRecord.from_hash(raw) if raw else None
            score = pipe.zscore(ACTIVE_KEY, job_id)
            if job is None or not job.active:
                pipe.multi()
                pipe.zrem(ACTIVE_KEY, job_id)
                return "dropped"
            if job.state == RUNNING:
                if now - job.heartbeat < stale_after_s:
                    pipe.multi()
                    return "alive"
                if job.lost_count + 1 >= max_attempts:
                    pipe.multi()
                    return "fail-lost"
                pipe.multi()
                pipe.hset(
                    jkey,
                    mapping={
                        "state": QUEUED,
                        "stage": "",
                        "run_token": "",
                        "queued_since": str(now),
                        "update_time": str(now),
                        "lost_count": str(job.lost_count + 1),
                    },
                )
                pipe.zadd(ACTIVE_KEY, {job_id: now})
                pipe.publish(events_channel(job_id), "1")
                return "requeue"
            # QUEUED
            if now - job.queued_since >= queued_timeout_s:
                pipe.multi()
                return "fail-queued"
            if score is not None and now - float(score) < requeue_after_s:
                pipe.multi()
                return "alive"
            pipe.multi()
            pipe.zadd(ACTIVE_KEY, {job_id: now})
            return "requeue"

        action = self._txn(body, jkey, ACTIVE_KEY)
        if action == "fail-lost":
            ended = self._end_job(
                job_id,
                FAILED,
                ErrorRecord(
                    "UNAVAILABLE",
                    "WORKER_LOST",
                    f"the worker running this job vanished {max_attempts} times",
                    domain="gateway.ragmesh",
                ),
                from_states=(RUNNING,),
            )
            return "failed" if ended else "alive"
        if action == "fail-queued":
            ended = self._end_job(
                job_id,
                FAILED,
                ErrorRecord(
                    "UNAVAILABLE",
                    "QUEUE_TIMEOUT",
                    f"no worker took this job within {queued_timeout_s:.0f} s",
                    domain="gateway.ragmesh",
                ),
                from_states=(QUEUED,),
            )
            return "failed" if ended else "alive"
        return action

    def try_reaper_lease(self, holder: str, ttl_s: float) -> bool:
        """One reaper at a time across gateway replicas."""
        key = "rm:reaper_lease"
        if self.r.set(key, holder, nx=True, px=int(ttl_s * 1000)):
            return True
        current = self.r.get(key)
        if current is not None and current.decode() == holder:
            self.r.pexpire(key, int(ttl_s * 1000))
            return True
        return False
