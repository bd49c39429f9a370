"""One document's ingestion: bytes → chunks → embeddings in batches → upserts
(APPEND_BATCH) → job SUCCEEDED, with progress per batch.

Idempotent and resumable: chunk ids are `{document_id}:{chunk_index}` and all
chunks of one upload carry the same `document_version`, so a run that is
repeated (a retry, a redelivery after a worker died) first lists the chunks of
that version already stored and embeds only the missing ones.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from celery.exceptions import SoftTimeLimitExceeded
from google.protobuf import struct_pb2

from ragmesh.chunking.v1 import chunking_pb2
from ragmesh.common.v1 import common_pb2
from services.common import tracing
from services.common.errors import NotFound
from services.common.text import truncate_utf8
from services.jobs.blobs import original_key, text_key
from services.jobs.outcomes import cancelled
from services.jobs.records import (
    DocumentRecord,
    ErrorRecord,
    JobKind,
    JobRecord,
    JobStage,
    KnowledgeBaseRecord,
)
from services.jobs.state import JobsState
from services.worker.clients import Clients
from services.worker.config import WorkerSettings
from services.worker.errors import JobGone, JobLost, PermanentError, TransientError

log = logging.getLogger("ragmesh.worker")

# The retrieval service stores a chunk's source (its file name) in this many bytes.
SOURCE_MAX_BYTES = 1024
LANGUAGE_CODES: dict[int, str] = {
    common_pb2.TEXT_LANGUAGE_ENGLISH: "en",
    common_pb2.TEXT_LANGUAGE_CHINESE: "zh",
}
# Passes over the stored chunks before giving up on a document whose chunks
# keep disappearing (a concurrent writer of another version removed some).
INDEX_PASSES = 3


def target_collection(job: JobRecord, kb: KnowledgeBaseRecord) -> str:
    """The collection a job writes into: its knowledge base's (a REINDEX job: the
    one being filled). A job made for a collection that is not that any more
    (the knowledge base deleted and made again, a re-index switched) is gone."""
    current = kb.reindex_collection if job.kind == JobKind.REINDEX else kb.collection
    if not current or (job.collection and job.collection != current):
        raise JobGone(
            cancelled(
                "KNOWLEDGE_BASE_RECREATED",
                "the collection the job was made for is no longer the knowledge base's",
            )
        )
    return current


# Why a job ends when the record it was made for is gone (NotFound's reason → the job's).
GONE: dict[str, tuple[str, str]] = {
    "DOCUMENT_NOT_FOUND": ("DOCUMENT_DELETED", "the document was deleted"),
    "KNOWLEDGE_BASE_NOT_FOUND": ("KNOWLEDGE_BASE_DELETED", "the knowledge base was deleted"),
}


def embedding_model(job: JobRecord, kb: KnowledgeBaseRecord) -> str:
    """The model whose vectors the target collection holds: a REINDEX job fills the new
    collection with the re-index's model; never a mix in one collection."""
    return (
        (kb.reindex_model or kb.embedding_model)
        if job.kind == JobKind.REINDEX
        else (kb.embedding_model)
    )


class Heartbeat:
    """Records a sign of life every interval from a thread, so a long
    ChunkDocument or EmbedTexts call does not look like a dead worker."""

    def __init__(self, state: JobsState, job_id: str, token: str, interval_s: float) -> None:
        self.runs, self.job_id, self.token, self.interval_s = state.runs, job_id, token, interval_s
        self.lost_state = ""
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"heartbeat-{job_id}", daemon=True)

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                state = self.runs.heartbeat(self.job_id, self.token)
            except Exception as exc:  # Redis blip: try again next interval
                log.warning("heartbeat of job %s failed: %s", self.job_id, exc)
                continue
            if state != "ok":
                self.lost_state = state
                return

    def progress(self, **fields: object) -> None:
        """Records progress; raises JobLost when the job is no longer ours."""
        if self.lost_state:
            raise JobLost(self.lost_state)
        state = self.runs.heartbeat(self.job_id, self.token, **fields)
        if state != "ok":
            self.lost_state = state
            raise JobLost(state)


@dataclass
class Outcome:
    """What one run did, for logs and tests."""

    job_id: str
    result: str  # succeeded, failed, retry, skipped:<why>, lost:<state>
    embedded: int = 0


class Ingestor:
    def __init__(
        self,
        state: JobsState,
        clients: Clients,
        settings: WorkerSettings,
        heartbeat_timeout_s: float,
    ) -> None:
        self.state = state
        self.clients = clients
        self.settings = settings
        self.heartbeat_timeout_s = heartbeat_timeout_s

    def run(self, job_id: str, retries: int = 0, max_retries: int = 0) -> Outcome:
        """Runs one job. Raises TransientError when the task should retry."""
        runs = self.state.runs
        token = uuid.uuid4().hex
        claim = runs.claim_job(job_id, token, self.heartbeat_timeout_s)
        if claim != "ok":
            log.info("job %s not run: %s", job_id, claim)
            return Outcome(job_id, f"skipped:{claim}")
        job = self.state.book.get_job(job_id)
        tracing.annotate(
            {
                "ragmesh.knowledge_base_id": job.knowledge_base_id,
                "ragmesh.document_id": job.document_id,
                "ragmesh.attempt": job.attempt,
            }
        )
        log.info(
            "job %s: ingesting %s/%s (attempt %d)",
            job_id,
            job.knowledge_base_id,
            job.document_id,
            job.attempt,
        )
        with Heartbeat(self.state, job_id, token, self.settings.heartbeat_interval_s) as beat:
            try:
                embedded = self._ingest(job, token, beat)
            except JobGone as gone:
                log.info("job %s ended: %s", job_id, gone.error.message)
                runs.cancel_run(job_id, token, gone.error)
                return Outcome(job_id, f"lost:{gone}")
            except JobLost as lost:
                log.info("job %s abandoned: %s", job_id, lost)
                return Outcome(job_id, f"lost:{lost}")
            except PermanentError as exc:
                log.warning("job %s failed: %s", job_id, exc.error.message)
                runs.fail_job(job_id, exc.error, token=token)
                return Outcome(job_id, "failed")
            except TransientError as exc:
                if retries >= max_retries:
                    error = exc.error
                    error.message = f"gave up after {retries + 1} attempts: {error.message}"
                    runs.fail_job(job_id, error, token=token)
                    return Outcome(job_id, "failed")
                log.warning("job %s will retry: %s", job_id, exc.error.message)
                runs.release_for_retry(job_id, token, exc.error)
                raise
            except SoftTimeLimitExceeded:
                log.warning("job %s: over the task time limit", job_id)
                runs.fail_job(
                    job_id,
                    ErrorRecord(
                        "DEADLINE_EXCEEDED",
                        "INGEST_TIME_LIMIT",
                        f"ingesting the document took longer than "
                        f"{self.settings.task_time_limit_s} s "
                        "(RAGMESH_WORKER_TASK_TIME_LIMIT_S)",
                    ),
                    token=token,
                )
                return Outcome(job_id, "failed")
            except Exception:
                log.exception("job %s: unexpected error", job_id)
                runs.fail_job(
                    job_id,
                    ErrorRecord(
                        "INTERNAL",
                        "INTERNAL_ERROR",
                        f"unexpected error in the worker (job {job_id}; see the worker's log)",
                    ),
                    token=token,
                )
                return Outcome(job_id, "failed")
        return Outcome(job_id, "succeeded", embedded)

    # ------------------------------------------------------------------ steps

    def _ingest(self, job: JobRecord, token: str, beat: Heartbeat) -> int:
        try:
            kb = self.state.catalogue.get_kb(job.tenant, job.knowledge_base_id)
            doc = self.state.catalogue.get_doc(job.tenant, job.knowledge_base_id, job.document_id)
        except NotFound as exc:
            reason, message = GONE.get(exc.reason, (exc.reason, exc.message))
            raise JobGone(cancelled(reason, message)) from exc
        target = target_collection(job, kb)
        content = self._content(job)
        originals = self.state.originals
        keep = originals is not None and job.kind != JobKind.REINDEX
        # The claim recorded the PARSING stage: no progress call before the parse.
        with tracing.span(
            "ingest.parse", {"ragmesh.document_id": doc.document_id, "ragmesh.bytes": len(content)}
        ) as parse:
            chunked = self.clients.chunk(
                chunking_pb2.ChunkDocumentRequest(
                    content=content,
                    media_type=doc.media_type,
                    document_id=doc.document_id,
                    file_name=doc.file_name,
                    options=chunking_pb2.ChunkingOptions(include_normalized_text=keep),
                )
            )
            parse.set_attribute("ragmesh.chunks", len(chunked.chunks))
            parse.set_attribute("ragmesh.media_type", chunked.media_type)
        total = len(chunked.chunks)
        if total > self.settings.max_chunks_per_document:
            # Embedding runs at tens of chunks a second: a 30 MB page would hold this
            # worker (and the queue behind it) for the task time limit.
            raise PermanentError(
                ErrorRecord(
                    "INVALID_ARGUMENT",
                    "DOCUMENT_TOO_MANY_CHUNKS",
                    f"the document has {total} chunks; at most "
                    f"{self.settings.max_chunks_per_document} are indexed per document "
                    "(RAGMESH_WORKER_MAX_CHUNKS_PER_DOCUMENT): split it",
                )
            )
        if total == 0:
            with self._doc_lock(job, beat, stage=JobStage.INDEXING, chunks_total=0, chunks_done=0):
                self.clients.delete_chunks(target, doc.document_id)
        embedded = self._index(job, target, kb, doc, chunked, beat)
        if keep and originals is not None:
            t, kbid, d = job.tenant, job.knowledge_base_id, job.document_id
            with tracing.span("ingest.keep", {"ragmesh.bytes": len(content)}):
                if job.kind == JobKind.UPLOAD:
                    originals.put(original_key(t, kbid, d, job.version), content)
                originals.put(text_key(t, kbid, d, job.version), chunked.normalized_text.encode())
        ended = self.state.runs.finish_job(
            job.job_id,
            token,
            total,
            chunked.title,
            len(content) if keep else None,
            media_type=chunked.media_type,
        )
        if ended is None:
            raise JobLost("finish refused")
        log.info("job %s: %d chunks (%d embedded now)", job.job_id, total, embedded)
        return embedded

    def _content(self, job: JobRecord) -> bytes:
        """The bytes to ingest: the upload's, or the kept original's."""
        if job.kind == JobKind.UPLOAD:
            content = self.state.blobs.get(job.job_id)
            gone = ErrorRecord(
                "FAILED_PRECONDITION", "UPLOAD_GONE", "the uploaded bytes are no longer stored"
            )
        else:
            originals = self.state.originals
            key = original_key(job.tenant, job.knowledge_base_id, job.document_id, job.version)
            content = originals.get(key) if originals is not None else None
            gone = ErrorRecord(
                "FAILED_PRECONDITION",
                "ORIGINAL_GONE",
                "the document's kept original is gone; upload it again",
            )
        if content is None:
            raise PermanentError(gone)
        return content

    def _index(
        self,
        job: JobRecord,
        target: str,
        kb: KnowledgeBaseRecord,
        doc: DocumentRecord,
        chunked: chunking_pb2.ChunkDocumentResponse,
        beat: Heartbeat,
    ) -> int:
        """Embeds and upserts the chunks not yet stored; how many it embedded."""
        total, embedded = len(chunked.chunks), 0
        batch_size = self.settings.embed_batch_size
        metadata = struct_pb2.Struct()
        metadata.update(doc.metadata)
        for index_pass in range(INDEX_PASSES):
            if index_pass == 0 and job.kind == JobKind.UPLOAD and job.attempt == 1:
                # The first run of an upload: nothing of it is stored yet (a same
                # version already indexed never makes a job). Chunk ids are fixed, so
                # were some stored, writing them again would be harmless.
                stored: set[int] = set()
            else:
                with tracing.span("ingest.stored_chunks"):
                    stored = self.clients.stored_indexes(target, doc.document_id, job.version)
            missing = [c for c in chunked.chunks if c.chunk_index not in stored]
            if not missing:
                return embedded
            done = total - len(missing)
            for start in range(0, len(missing), batch_size):
                batch = missing[start : start + batch_size]
                # One progress call a step (each one is a Redis round trip and an event
                # the gateway relays to whoever waits on the job); the chunk count travels
                # with the first (parsing and chunking are one call: no step of their own),
                # finish_job records the last batch's chunks_done.
                beat.progress(stage=JobStage.EMBEDDING, chunks_total=total, chunks_done=done)
                with tracing.span("ingest.embed", {"ragmesh.batch_size": len(batch)}):
                    vectors = self.clients.embed_documents(
                        [c.text for c in batch], embedding_model(job, kb)
                    )
                embedded += len(batch)
                to_upsert = [
                    (self._stored_chunk(chunk, job, kb, doc, chunked, metadata), vector)
                    for chunk, vector in zip(batch, vectors, strict=True)
                ]
                with (
                    tracing.span("ingest.upsert", {"ragmesh.batch_size": len(batch)}),
                    self._doc_lock(job, beat, stage=JobStage.INDEXING),
                ):
                    self.clients.upsert(target, doc.document_id, job.version, to_upsert)
                done += len(batch)
            if len(missing) == total <= batch_size:
                # The whole document went in one write under the document lock: no other
                # writer came between its batches, and one that comes after (a newer
                # version, a delete) cancels this job, which finish_job then refuses.
                # The check pass below is for documents written in several batches.
                return embedded
        raise TransientError(
            ErrorRecord("ABORTED", "INDEX_INCOMPLETE", "chunks kept disappearing while indexing")
        )

    @staticmethod
    def _stored_chunk(
        chunk: common_pb2.Chunk,
        job: JobRecord,
        kb: KnowledgeBaseRecord,
        doc: DocumentRecord,
        chunked: chunking_pb2.ChunkDocumentResponse,
        metadata: struct_pb2.Struct,
    ) -> common_pb2.Chunk:
        """The chunk as the collection stores it: id, version and filterable fields."""
        stored = common_pb2.Chunk()
        stored.CopyFrom(chunk)
        stored.id = f"{doc.document_id}:{chunk.chunk_index}"
        stored.document_id = doc.document_id
        stored.document_version = job.version
        stored.source = truncate_utf8(doc.file_name, SOURCE_MAX_BYTES)
        stored.media_type = chunked.media_type
        stored.language = LANGUAGE_CODES.get(kb.language, "")
        if not stored.title:
            stored.title = chunked.title
        stored.metadata.CopyFrom(metadata)
        return stored

    @contextmanager
    def _doc_lock(self, job: JobRecord, beat: Heartbeat, **progress: object) -> Iterator[None]:
        """Held (and renewed) around chunk writes; a document delete takes it too,
        so once a delete (or a newer upload) cancelled this job no write of ours
        follows."""
        locks = self.state.locks
        tenant, kb, doc = job.tenant, job.knowledge_base_id, job.document_id
        deadline = time.monotonic() + self.settings.lock_wait_s
        while (token := locks.acquire(tenant, kb, doc)) is None:
            if time.monotonic() > deadline:
                raise TransientError(
                    ErrorRecord(
                        "UNAVAILABLE", "DOCUMENT_LOCKED", "the document is locked by another writer"
                    )
                )
            time.sleep(0.05)
        with locks.hold(tenant, kb, doc, token):
            beat.progress(**progress)  # still ours, checked under the lock
            yield
