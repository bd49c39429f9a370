"""One document's ingestion: bytes → ChunkDocument → EmbedTexts in batches →
UpsertChunks(APPEND_BATCH) → job SUCCEEDED, with progress per batch.

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
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import grpc
from google.protobuf import struct_pb2

from ragmesh.chunking.v1 import chunking_pb2, chunking_pb2_grpc
from ragmesh.common.v1 import common_pb2
from ragmesh.embedding.v1 import embedding_pb2, embedding_pb2_grpc
from ragmesh.retrieval.v1 import retrieval_pb2, retrieval_pb2_grpc
from services.common.channels import retry_service_config
from services.common.config import CommonSettings, ServiceAddresses
from services.common.errors import NotFound
from services.common.status import error_info_of
from services.gateway.models import ErrorRecord, JobRecord
from services.gateway.store import Store
from services.worker.config import WorkerSettings

log = logging.getLogger("ragmesh.worker")

# Codes worth retrying later: the dependency is down, overloaded or slow.
TRANSIENT_CODES = {
    grpc.StatusCode.UNAVAILABLE,
    grpc.StatusCode.DEADLINE_EXCEEDED,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
    grpc.StatusCode.ABORTED,
    grpc.StatusCode.CANCELLED,
}
LANGUAGE_CODES: dict[int, str] = {
    common_pb2.TEXT_LANGUAGE_ENGLISH: "en",
    common_pb2.TEXT_LANGUAGE_CHINESE: "zh",
}


class TransientError(Exception):
    """A dependency failed in a way that may pass: the task retries later."""

    def __init__(self, error: ErrorRecord) -> None:
        super().__init__(error.message)
        self.error = error


class PermanentError(Exception):
    """Retrying cannot help (unsupported or corrupt file, ...): the job fails."""

    def __init__(self, error: ErrorRecord) -> None:
        super().__init__(error.message)
        self.error = error


class JobLost(Exception):
    """The job is no longer this run's (cancelled, deleted, taken over)."""


def classify_rpc_error(err: grpc.RpcError, what: str) -> Exception:
    """A failed downstream call as TransientError or PermanentError."""
    code: grpc.StatusCode = err.code()  # type: ignore[attr-defined]
    info = error_info_of(err)
    error = ErrorRecord(
        code=code.name,
        reason=info.reason if info is not None and info.reason else f"DOWNSTREAM_{code.name}",
        message=f"{what}: {err.details()}",  # type: ignore[attr-defined]
        domain=info.domain if info is not None and info.domain else "worker.ragmesh",
        metadata=dict(info.metadata) if info is not None else {},
    )
    return TransientError(error) if code in TRANSIENT_CODES else PermanentError(error)


def sync_channel(target: str, service: str, idempotent_methods: Sequence[str]) -> grpc.Channel:
    """A blocking channel with the same retry policy as the async ones."""
    common = CommonSettings()  # type: ignore[call-arg]
    return grpc.insecure_channel(
        target,
        options=[
            ("grpc.max_receive_message_length", common.max_message_bytes),
            ("grpc.max_send_message_length", common.max_message_bytes),
            ("grpc.enable_retries", 1),
            ("grpc.service_config", retry_service_config(service, idempotent_methods)),
            ("grpc.initial_reconnect_backoff_ms", 200),
            ("grpc.max_reconnect_backoff_ms", 5_000),
        ],
    )


@dataclass
class Clients:
    chunking: chunking_pb2_grpc.ChunkingServiceStub
    embedding: embedding_pb2_grpc.EmbeddingServiceStub
    retrieval: retrieval_pb2_grpc.RetrievalServiceStub
    channels: list[grpc.Channel]

    @classmethod
    def connect(cls, addresses: ServiceAddresses) -> Clients:
        chunking = sync_channel(
            addresses.chunking_addr, "ragmesh.chunking.v1.ChunkingService", ["ChunkDocument"]
        )
        embedding = sync_channel(
            addresses.embedding_addr,
            "ragmesh.embedding.v1.EmbeddingService",
            ["EmbedTexts", "GetModelInfo"],
        )
        retrieval = sync_channel(
            addresses.retrieval_addr,
            "ragmesh.retrieval.v1.RetrievalService",
            ["UpsertChunks", "ListChunks", "DeleteDocumentChunks"],
        )
        return cls(
            chunking_pb2_grpc.ChunkingServiceStub(chunking),
            embedding_pb2_grpc.EmbeddingServiceStub(embedding),
            retrieval_pb2_grpc.RetrievalServiceStub(retrieval),
            [chunking, embedding, retrieval],
        )

    def close(self) -> None:
        for channel in self.channels:
            channel.close()


class Heartbeat:
    """Records a sign of life every interval from a thread, so a long
    ChunkDocument or EmbedTexts call does not look like a dead worker."""

    def __init__(self, store: Store, job_id: str, token: str, interval_s: float) -> None:
        self.store, self.job_id, self.token, self.interval_s = store, job_id, token, interval_s
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
                state = self.store.heartbeat(self.job_id, self.token)
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
        state = self.store.heartbeat(self.job_id, self.token, **fields)
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
    def __init__(self, store: Store, clients: Clients, settings: WorkerSettings) -> None:
        self.store = store
        self.clients = clients
        self.settings = settings

    def run(self, job_id: str, retries: int = 0, max_retries: int = 0) -> Outcome:
        """Runs one job. Raises TransientError when the task should retry."""
        token = uuid.uuid4().hex
        claim = self.store.claim_job(job_id, token, self.settings.job_heartbeat_timeout_s)
        if claim != "ok":
            log.info("job %s not run: %s", job_id, claim)
            return Outcome(job_id, f"skipped:{claim}")
        job = self.store.get_job(job_id)
        log.info(
            "job %s: ingesting %s/%s (attempt %d)",
            job_id,
            job.knowledge_base_id,
            job.document_id,
            job.attempt,
        )
        with Heartbeat(self.store, job_id, token, self.settings.heartbeat_interval_s) as beat:
            try:
                embedded = self._ingest(job, token, beat)
            except JobLost as lost:
                log.info("job %s abandoned: %s", job_id, lost)
                return Outcome(job_id, f"lost:{lost}")
            except PermanentError as exc:
                log.warning("job %s failed: %s", job_id, exc.error.message)
                self.store.fail_job(job_id, exc.error, token=token)
                return Outcome(job_id, "failed")
            except TransientError as exc:
                if retries >= max_retries:
                    error = exc.error
                    error.message = f"gave up after {retries + 1} attempts: {error.message}"
                    self.store.fail_job(job_id, error, token=token)
                    return Outcome(job_id, "failed")
                log.warning("job %s will retry: %s", job_id, exc.error.message)
                self.store.release_for_retry(job_id, token, exc.error)
                raise
            except Exception as exc:
                log.exception("job %s: unexpected error", job_id)
                self.store.fail_job(
                    job_id,
                    ErrorRecord("INTERNAL", "INTERNAL_ERROR", f"{type(exc).__name__}: {exc}"),
                    token=token,
                )
                return Outcome(job_id, "failed")
        return Outcome(job_id, "succeeded", embedded)

    # ------------------------------------------------------------------ steps

    def _call(self, what: str, fn: Callable[..., Any], request: Any, timeout: float) -> Any:
        try:
            return fn(request, timeout=timeout)
        except grpc.RpcError as err:
            raise classify_rpc_error(err, what) from err

    def _ingest(self, job: JobRecord, token: str, beat: Heartbeat) -> int:
        try:
            kb = self.store.get_kb(job.tenant, job.knowledge_base_id)
            doc = self.store.get_doc(job.tenant, job.knowledge_base_id, job.document_id)
        except NotFound as exc:
            raise JobLost(exc.reason) from exc
        content = self.store.load_blob(job.job_id)
        if content is None:
            raise PermanentError(
                ErrorRecord(
                    "FAILED_PRECONDITION", "UPLOAD_GONE", "the uploaded bytes are no longer stored"
                )
            )
        beat.progress(stage="PARSING")
        chunked: chunking_pb2.ChunkDocumentResponse = self._call(
            "chunking",
            self.clients.chunking.ChunkDocument,
            chunking_pb2.ChunkDocumentRequest(
                content=content,
                media_type=doc.media_type,
                document_id=doc.document_id,
                file_name=doc.file_name,
            ),
            self.settings.chunk_timeout_s,
        )
        total = len(chunked.chunks)
        beat.progress(stage="CHUNKING", chunks_total=total, chunks_done=0)
        metadata = struct_pb2.Struct()
        metadata.update(doc.metadata)
        language = LANGUAGE_CODES.get(kb.language, "")
        embedded = 0
        if total == 0:
            with self._doc_lock(job, beat):
                self._call(
                    "retrieval",
                    self.clients.retrieval.DeleteDocumentChunks,
                    retrieval_pb2.DeleteDocumentChunksRequest(
                        collection=kb.collection, document_id=doc.document_id
                    ),
                    self.settings.index_timeout_s,
                )
        # A second pass only if the count check finds chunks missing (e.g. a
        # concurrent writer of another version removed some).
        for _ in range(3):
            stored = self._stored_indexes(kb.collection, doc.document_id, job.version)
            missing = [c for c in chunked.chunks if c.chunk_index not in stored]
            if not missing:
                break
            done = total - len(missing)
            beat.progress(chunks_done=done)
            for start in range(0, len(missing), self.settings.embed_batch_size):
                batch = missing[start : start + self.settings.embed_batch_size]
                beat.progress(stage="EMBEDDING")
                vectors: embedding_pb2.EmbedTextsResponse = self._call(
                    "embedding",
                    self.clients.embedding.EmbedTexts,
                    embedding_pb2.EmbedTextsRequest(
                        texts=[c.text for c in batch],
                        input_type=embedding_pb2.INPUT_TYPE_DOCUMENT,
                        truncate=True,
                    ),
                    self.settings.embed_timeout_s,
                )
                embedded += len(batch)
                to_upsert = []
                for chunk, vector in zip(batch, vectors.embeddings, strict=True):
                    stored_chunk = common_pb2.Chunk()
                    stored_chunk.CopyFrom(chunk)
                    stored_chunk.id = f"{doc.document_id}:{chunk.chunk_index}"
                    stored_chunk.document_id = doc.document_id
                    stored_chunk.document_version = job.version
                    stored_chunk.source = doc.file_name
                    stored_chunk.media_type = chunked.media_type
                    stored_chunk.language = language
                    if not stored_chunk.title:
                        stored_chunk.title = chunked.title
                    stored_chunk.metadata.CopyFrom(metadata)
                    to_upsert.append(
                        retrieval_pb2.ChunkToUpsert(chunk=stored_chunk, vector=vector.values)
                    )
                beat.progress(stage="INDEXING")
                with self._doc_lock(job, beat):
                    self._call(
                        "retrieval",
                        self.clients.retrieval.UpsertChunks,
                        retrieval_pb2.UpsertChunksRequest(
                            collection=kb.collection,
                            document_id=doc.document_id,
                            document_version=job.version,
                            chunks=to_upsert,
                            mode=retrieval_pb2.UPSERT_MODE_APPEND_BATCH,
                        ),
                        self.settings.index_timeout_s,
                    )
                done += len(batch)
                beat.progress(chunks_done=done)
        else:
            raise TransientError(
                ErrorRecord(
                    "ABORTED", "INDEX_INCOMPLETE", "chunks kept disappearing while indexing"
                )
            )
        ended = self.store.finish_job(job.job_id, token, total, chunked.title)
        if ended is None:
            raise JobLost("finish refused")
        log.info("job %s: %d chunks (%d embedded now)", job.job_id, total, embedded)
        return embedded

    def _stored_indexes(self, collection: str, document_id: str, version: str) -> set[int]:
        indexes: set[int] = set()
        page_token = ""
        while True:
            resp: retrieval_pb2.ListChunksResponse = self._call(
                "retrieval",
                self.clients.retrieval.ListChunks,
                retrieval_pb2.ListChunksRequest(
                    collection=collection,
                    document_id=document_id,
                    document_version=version,
                    page_size=1000,
                    page_token=page_token,
                    omit_text=True,
                ),
                self.settings.index_timeout_s,
            )
            indexes.update(c.chunk_index for c in resp.chunks)
            page_token = resp.next_page_token
            if not page_token:
                return indexes

    @contextmanager
    def _doc_lock(self, job: JobRecord, beat: Heartbeat) -> Iterator[None]:
        """Held around chunk writes; a document delete takes it too, so once a
        delete (or a newer upload) cancelled this job no write of ours follows."""
        deadline = time.monotonic() + self.settings.lock_wait_s
        while True:
            lock = self.store.acquire_doc_lock(job.tenant, job.knowledge_base_id, job.document_id)
            if lock is not None:
                break
            if time.monotonic() > deadline:
                raise TransientError(
                    ErrorRecord(
                        "ABORTED", "DOCUMENT_LOCKED", "the document is locked by another writer"
                    )
                )
            time.sleep(0.05)
        try:
            beat.progress()  # still ours, checked under the lock
            yield
        finally:
            self.store.release_doc_lock(job.tenant, job.knowledge_base_id, job.document_id, lock)
