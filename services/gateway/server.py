"""The public RagService: knowledge bases, uploads and ingestion jobs,
documents, Search and Ask.

Records live in Redis (store.py, called through `asyncio.to_thread`); the
ingestion itself runs on Celery workers (services/worker). Every downstream
call carries what is left of the caller's deadline.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import socket
import time
import uuid
from collections import defaultdict
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any, TypeVar

import grpc
import redis.asyncio as aioredis
from google.protobuf import json_format, struct_pb2, timestamp_pb2

from ragmesh.common.v1 import common_pb2
from ragmesh.embedding.v1 import embedding_pb2, embedding_pb2_grpc
from ragmesh.gateway.v1 import gateway_pb2 as pb
from ragmesh.gateway.v1 import gateway_pb2_grpc
from ragmesh.generation.v1 import generation_pb2, generation_pb2_grpc
from ragmesh.retrieval.v1 import retrieval_pb2, retrieval_pb2_grpc
from services.common.channels import create_channel, remaining_timeout
from services.common.config import DEFAULT_PORTS, ServiceAddresses
from services.common.errors import (
    InvalidArgument,
    NotFound,
    ResourceExhausted,
    ServiceError,
    Unavailable,
)
from services.common.status import from_rpc_error
from services.gateway import validation as v
from services.gateway.auth import ApiKeyAuth
from services.gateway.config import GatewaySettings
from services.gateway.models import (
    JOB_STATES,
    QUEUED,
    TERMINAL_STATES,
    DocumentRecord,
    ErrorRecord,
    JobRecord,
    KnowledgeBaseRecord,
)
from services.gateway.store import Store, events_channel, kb_key

log = logging.getLogger("ragmesh.gateway")
T = TypeVar("T")

SERVICE_NAME = "ragmesh.gateway.v1.RagService"
DOC_STATES = {
    "PENDING": pb.DOCUMENT_STATE_PENDING,
    "INDEXED": pb.DOCUMENT_STATE_INDEXED,
    "FAILED": pb.DOCUMENT_STATE_FAILED,
}


# ----------------------------------------------------------------- conversions


def _ts(seconds: float) -> timestamp_pb2.Timestamp | None:
    if not seconds:
        return None
    ts = timestamp_pb2.Timestamp()
    ts.FromNanoseconds(int(seconds * 1e9))
    return ts


def _struct(data: dict[str, Any]) -> struct_pb2.Struct:
    s = struct_pb2.Struct()
    s.update(data)
    return s


def kb_to_pb(rec: KnowledgeBaseRecord, document_count: int) -> pb.KnowledgeBase:
    return pb.KnowledgeBase(
        knowledge_base_id=rec.knowledge_base_id,
        description=rec.description,
        language=rec.language,  # type: ignore[arg-type]
        metric=rec.metric,  # type: ignore[arg-type]
        index_type=rec.index_type,  # type: ignore[arg-type]
        index_params=_struct(rec.index_params),
        embedding_model=rec.embedding_model,
        dimension=rec.dimension,
        document_count=document_count,
        chunk_count=rec.chunk_count,
        create_time=_ts(rec.create_time),
    )


def job_to_pb(job: JobRecord) -> pb.IngestionJob:
    out = pb.IngestionJob(
        job_id=job.job_id,
        knowledge_base_id=job.knowledge_base_id,
        document_id=job.document_id,
        file_name=job.file_name,
        state=pb.JobState.Value(f"JOB_STATE_{job.state}"),
        stage=pb.JobStage.Value(f"JOB_STAGE_{job.stage}") if job.stage else 0,  # type: ignore[arg-type]
        chunks_done=job.chunks_done,
        chunks_total=job.chunks_total,
        attempt=job.attempt,
        deduplicated=job.deduplicated,
        create_time=_ts(job.create_time),
        update_time=_ts(job.update_time),
        start_time=_ts(job.start_time),
        end_time=_ts(job.end_time),
    )
    if job.state not in ("RUNNING",):
        out.ClearField("stage")
    if job.error is not None and job.state in ("FAILED", "CANCELLED"):
        out.error.CopyFrom(
            common_pb2.ErrorDetail(
                code=job.error.code,
                reason=job.error.reason,
                domain=job.error.domain,
                message=job.error.message,
                metadata=job.error.metadata,
            )
        )
    return out


def doc_to_pb(doc: DocumentRecord) -> pb.Document:
    return pb.Document(
        knowledge_base_id=doc.knowledge_base_id,
        document_id=doc.document_id,
        file_name=doc.file_name,
        media_type=doc.media_type,
        size_bytes=doc.size_bytes,
        content_sha256=doc.content_sha256,
        state=DOC_STATES.get(doc.state, 0),  # type: ignore[arg-type]
        chunk_count=doc.chunk_count,
        metadata=_struct(doc.metadata),
        title=doc.title,
        last_job_id=doc.last_job_id,
        create_time=_ts(doc.create_time),
        update_time=_ts(doc.update_time),
    )


def hit_from_scored(scored: common_pb2.ScoredChunk) -> pb.SearchHit:
    chunk = scored.chunk
    return pb.SearchHit(
        chunk_id=chunk.id,
        document_id=chunk.document_id,
        file_name=chunk.source,
        title=chunk.title,
        heading_path=list(chunk.heading_path),
        text=chunk.text,
        chunk_index=chunk.chunk_index,
        start_offset=chunk.start_offset,
        end_offset=chunk.end_offset,
        score=scored.score,
    )


def map_citations(
    citations: Any, hits_by_chunk: dict[str, pb.SearchHit]
) -> list[pb.AnswerCitation]:
    """The generation service's [n] → passage id, as [n] → the retrieved chunk
    (document, offsets, text). A passage id we did not send is dropped."""
    return [
        pb.AnswerCitation(number=c.number, source=hits_by_chunk[c.passage_id])
        for c in citations
        if c.passage_id in hits_by_chunk
    ]


# -------------------------------------------------------------------- servicer


class _UploadSlots:
    """Concurrent upload streams per tenant on this replica."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.open: dict[str, int] = defaultdict(int)

    @contextlib.contextmanager
    def take(self, tenant: str) -> Iterator[None]:
        if self.open[tenant] >= self.limit:
            raise ResourceExhausted(
                f"tenant already has {self.limit} uploads in progress; retry when one ends",
                reason="TOO_MANY_CONCURRENT_UPLOADS",
                metadata={"limit": self.limit},
            )
        self.open[tenant] += 1
        try:
            yield
        finally:
            self.open[tenant] -= 1


class RagServicer(gateway_pb2_grpc.RagServiceServicer):
    def __init__(self, gateway: GatewayService) -> None:
        self.g = gateway
        self.s = gateway.settings
        self.uploads = _UploadSlots(self.s.max_concurrent_uploads_per_tenant)

    # helpers

    def _tenant(self, context: grpc.aio.ServicerContext) -> str:
        return self.g.auth.tenant_of(context.invocation_metadata())  # type: ignore[arg-type]

    async def _db(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        return await asyncio.to_thread(fn, *args, **kwargs)

    def _timeout(self, context: grpc.aio.ServicerContext, default: float | None = None) -> float:
        return remaining_timeout(context, default or self.s.downstream_timeout_s)

    async def _call(self, what: str, call: Any) -> Any:
        try:
            return await call
        except grpc.aio.AioRpcError as err:
            raise from_rpc_error(err, f"{what} failed") from err

    def _page_size(self, requested: int) -> int:
        return v.page_size(requested, self.s.default_page_size, self.s.max_page_size)

    # knowledge bases

    async def CreateKnowledgeBase(
        self, request: pb.CreateKnowledgeBaseRequest, context: grpc.aio.ServicerContext
    ) -> pb.CreateKnowledgeBaseResponse:
        tenant = self._tenant(context)
        kb = v.check_kb_id(request.knowledge_base_id)
        if len(request.description) > 2000:
            raise InvalidArgument(
                "description is longer than 2000 characters", reason="DESCRIPTION_TOO_LONG"
            )
        info: embedding_pb2.GetModelInfoResponse = await self._call(
            "embedding GetModelInfo",
            self.g.embedding.GetModelInfo(
                embedding_pb2.GetModelInfoRequest(), timeout=self._timeout(context)
            ),
        )
        record = KnowledgeBaseRecord(
            tenant=tenant,
            knowledge_base_id=kb,
            collection=v.collection_name(tenant, kb),
            description=request.description,
            language=request.language,
            metric=request.metric,
            index_type=request.index_type,
            index_params=json_format.MessageToDict(request.index_params),
            embedding_model=info.model,
            dimension=info.dimension,
            create_time=time.time(),
        )
        await self._db(self.g.store.create_kb, record)
        try:
            created: retrieval_pb2.CreateCollectionResponse = await self._call(
                "retrieval CreateCollection",
                self.g.retrieval.CreateCollection(
                    retrieval_pb2.CreateCollectionRequest(
                        name=record.collection,
                        dimension=info.dimension,
                        metric=request.metric,
                        index_type=request.index_type,
                        index_params=request.index_params,
                        language=request.language,
                    ),
                    timeout=self._timeout(context),
                ),
            )
        except ServiceError as exc:
            if exc.code != "ALREADY_EXISTS":  # left over from a failed earlier attempt: reuse
                with contextlib.suppress(ServiceError):
                    await self._db(self.g.store.delete_kb_record, tenant, kb)
                raise
        else:
            col = created.collection
            record.metric, record.index_type, record.language = (
                col.metric,
                col.index_type,
                col.language,
            )
            await self._db(
                self.g.store.update_kb,
                tenant,
                kb,
                metric=col.metric,
                index_type=col.index_type,
                language=col.language,
            )
        return pb.CreateKnowledgeBaseResponse(knowledge_base=kb_to_pb(record, 0))

    async def GetKnowledgeBase(
        self, request: pb.GetKnowledgeBaseRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetKnowledgeBaseResponse:
        tenant = self._tenant(context)
        kb = v.check_kb_id(request.knowledge_base_id)
        record = await self._db(self.g.store.get_kb, tenant, kb)
        count = await self._db(self.g.store.document_count, tenant, kb)
        return pb.GetKnowledgeBaseResponse(knowledge_base=kb_to_pb(record, count))

    async def ListKnowledgeBases(
        self, request: pb.ListKnowledgeBasesRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListKnowledgeBasesResponse:
        tenant = self._tenant(context)
        records, nxt = await self._db(
            self.g.store.list_kbs, tenant, self._page_size(request.page_size), request.page_token
        )
        out = pb.ListKnowledgeBasesResponse(next_page_token=nxt)
        for rec in records:
            count = await self._db(self.g.store.document_count, tenant, rec.knowledge_base_id)
            out.knowledge_bases.append(kb_to_pb(rec, count))
        return out

    async def DeleteKnowledgeBase(
        self, request: pb.DeleteKnowledgeBaseRequest, context: grpc.aio.ServicerContext
    ) -> pb.DeleteKnowledgeBaseResponse:
        tenant = self._tenant(context)
        kb = v.check_kb_id(request.knowledge_base_id)
        record = await self._db(self.g.store.delete_kb_record, tenant, kb)
        await self._db(self.g.store.purge_kb, tenant, kb)
        with contextlib.suppress(NotFound):
            await self._call(
                "retrieval DeleteCollection",
                self.g.retrieval.DeleteCollection(
                    retrieval_pb2.DeleteCollectionRequest(name=record.collection),
                    timeout=self._timeout(context),
                ),
            )
        return pb.DeleteKnowledgeBaseResponse()

    # uploads and jobs

    async def UploadDocument(
        self,
        request_iterator: AsyncIterator[pb.UploadDocumentRequest],
        context: grpc.aio.ServicerContext,
    ) -> pb.UploadDocumentResponse:
        tenant = self._tenant(context)
        with self.uploads.take(tenant):
            first = None
            async for message in request_iterator:
                first = message
                break
            if first is None:
                raise InvalidArgument(
                    "empty upload stream: send a header, then the bytes",
                    reason="MISSING_UPLOAD_HEADER",
                )
            if first.WhichOneof("payload") != "header":
                raise InvalidArgument(
                    "the first message of an upload must be the header",
                    reason="MISSING_UPLOAD_HEADER",
                )
            header = first.header
            kb = v.check_kb_id(header.knowledge_base_id)
            doc_id = v.document_id_for(header.document_id, header.file_name)
            media_type = v.check_media_type(header.media_type)
            metadata = v.check_metadata(
                json_format.MessageToDict(header.metadata), self.s.max_metadata_bytes
            )
            if len(header.file_name) > 512:
                raise InvalidArgument(
                    "file_name is longer than 512 characters", reason="FILE_NAME_TOO_LONG"
                )
            await self._db(self.g.store.get_kb, tenant, kb)  # fail before the bytes flow
            content = bytearray()
            async for message in request_iterator:
                if message.WhichOneof("payload") != "data":
                    raise InvalidArgument(
                        "only the first message may be a header", reason="DUPLICATE_UPLOAD_HEADER"
                    )
                content += message.data
                if len(content) > self.s.max_upload_bytes:
                    raise ResourceExhausted(
                        f"document exceeds the upload limit of {self.s.max_upload_bytes} bytes",
                        reason="DOCUMENT_TOO_LARGE",
                        metadata={"max_upload_bytes": self.s.max_upload_bytes},
                    )
            if not content:
                raise InvalidArgument("the document is empty", reason="EMPTY_DOCUMENT")
            data = bytes(content)
            sha = hashlib.sha256(data).hexdigest()
            document = DocumentRecord(
                tenant=tenant,
                knowledge_base_id=kb,
                document_id=doc_id,
                file_name=header.file_name or doc_id,
                media_type=media_type,
                size_bytes=len(data),
                content_sha256=sha,
                metadata=metadata,
                version=v.document_version(sha, media_type, header.file_name or doc_id, metadata),
            )
            result = await self._db(self.g.store.register_upload, tenant, kb, document, data)
            if result.enqueue:
                try:
                    await self._db(self.g.send_task, result.job.job_id)
                except Exception as exc:
                    log.exception("cannot queue job %s", result.job.job_id)
                    await self._db(
                        self.g.store.fail_job,
                        result.job.job_id,
                        ErrorRecord(
                            "UNAVAILABLE",
                            "QUEUE_UNAVAILABLE",
                            f"cannot queue the task: {exc}",
                            domain="gateway.ragmesh",
                        ),
                        from_states=(QUEUED,),
                    )
                    raise Unavailable(
                        "the task queue is unavailable; upload again later",
                        reason="QUEUE_UNAVAILABLE",
                    ) from exc
            return pb.UploadDocumentResponse(
                job=job_to_pb(result.job), document=doc_to_pb(result.document)
            )

    async def GetIngestionJob(
        self, request: pb.GetIngestionJobRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetIngestionJobResponse:
        tenant = self._tenant(context)
        job = await self._db(self.g.store.get_job, request.job_id, tenant)
        return pb.GetIngestionJobResponse(job=job_to_pb(job))

    async def ListIngestionJobs(
        self, request: pb.ListIngestionJobsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListIngestionJobsResponse:
        tenant = self._tenant(context)
        kb = None
        if request.knowledge_base_id:
            kb = v.check_kb_id(request.knowledge_base_id)
            await self._db(self.g.store.get_kb, tenant, kb)
        state = None
        if request.state:
            name = pb.JobState.Name(request.state).removeprefix("JOB_STATE_")
            if name not in JOB_STATES:
                raise InvalidArgument(
                    f"unknown job state {request.state}", reason="INVALID_JOB_STATE"
                )
            state = name
        jobs, nxt = await self._db(
            self.g.store.list_jobs,
            tenant,
            kb,
            state,
            self._page_size(request.page_size),
            request.page_token,
        )
        return pb.ListIngestionJobsResponse(jobs=[job_to_pb(j) for j in jobs], next_page_token=nxt)

    async def WatchIngestionJob(
        self, request: pb.WatchIngestionJobRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.WatchIngestionJobResponse]:
        tenant = self._tenant(context)
        job = await self._db(self.g.store.get_job, request.job_id, tenant)
        pubsub = self.g.aredis.pubsub()
        try:
            # Subscribe before reading again so no change slips between the two.
            await pubsub.subscribe(events_channel(job.job_id))
            last = None
            while True:
                job = await self._db(self.g.store.get_job, request.job_id, tenant)
                current = job_to_pb(job)
                if current != last:
                    yield pb.WatchIngestionJobResponse(job=current)
                    last = current
                if job.state in TERMINAL_STATES:
                    return
                # A message means "changed"; the timeout is a safety net.
                await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
        finally:
            with contextlib.suppress(Exception):
                await pubsub.unsubscribe()
                await pubsub.aclose()

    async def CancelIngestionJob(
        self, request: pb.CancelIngestionJobRequest, context: grpc.aio.ServicerContext
    ) -> pb.CancelIngestionJobResponse:
        tenant = self._tenant(context)
        job = await self._db(self.g.store.cancel_job, tenant, request.job_id)
        return pb.CancelIngestionJobResponse(job=job_to_pb(job))

    async def RetryIngestionJob(
        self, request: pb.RetryIngestionJobRequest, context: grpc.aio.ServicerContext
    ) -> pb.RetryIngestionJobResponse:
        tenant = self._tenant(context)
        job = await self._db(self.g.store.retry_job, tenant, request.job_id)
        await self._db(self.g.send_task, job.job_id)
        return pb.RetryIngestionJobResponse(job=job_to_pb(job))

    # documents

    async def GetDocument(
        self, request: pb.GetDocumentRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetDocumentResponse:
        tenant = self._tenant(context)
        kb = v.check_kb_id(request.knowledge_base_id)
        doc = await self._db(
            self.g.store.get_doc, tenant, kb, v.check_document_id(request.document_id)
        )
        return pb.GetDocumentResponse(document=doc_to_pb(doc))

    async def ListDocuments(
        self, request: pb.ListDocumentsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListDocumentsResponse:
        tenant = self._tenant(context)
        kb = v.check_kb_id(request.knowledge_base_id)
        docs, nxt = await self._db(
            self.g.store.list_docs,
            tenant,
            kb,
            self._page_size(request.page_size),
            request.page_token,
        )
        return pb.ListDocumentsResponse(documents=[doc_to_pb(d) for d in docs], next_page_token=nxt)

    async def DeleteDocument(
        self, request: pb.DeleteDocumentRequest, context: grpc.aio.ServicerContext
    ) -> pb.DeleteDocumentResponse:
        tenant = self._tenant(context)
        kb = v.check_kb_id(request.knowledge_base_id)
        doc_id = v.check_document_id(request.document_id)
        record = await self._db(self.g.store.get_kb, tenant, kb)
        await self._db(self.g.store.delete_doc, tenant, kb, doc_id)
        # Under the document lock: a worker that has not yet seen the
        # cancellation cannot write chunks after this delete.
        lock = await self._doc_lock(tenant, kb, doc_id, context)
        try:
            await self._call(
                "retrieval DeleteDocumentChunks",
                self.g.retrieval.DeleteDocumentChunks(
                    retrieval_pb2.DeleteDocumentChunksRequest(
                        collection=record.collection, document_id=doc_id
                    ),
                    timeout=self._timeout(context),
                ),
            )
        finally:
            await self._db(self.g.store.release_doc_lock, tenant, kb, doc_id, lock)
        return pb.DeleteDocumentResponse()

    async def _kb_async(self, tenant: str, kb_id: str) -> KnowledgeBaseRecord:
        """The knowledge base, read on the event loop (the hot path of Search and
        Ask, where a thread hop per call costs more than the read)."""
        raw = await self.g.aredis.hgetall(kb_key(tenant, kb_id))
        if not raw:
            raise NotFound(
                f"knowledge base {kb_id!r} not found",
                reason="KNOWLEDGE_BASE_NOT_FOUND",
                metadata={"knowledge_base_id": kb_id},
            )
        record: KnowledgeBaseRecord = KnowledgeBaseRecord.from_hash(raw)  # type: ignore[arg-type]
        return record

    async def _doc_lock(
        self, tenant: str, kb: str, doc: str, context: grpc.aio.ServicerContext
    ) -> str:
        deadline = time.monotonic() + min(self._timeout(context), 60.0)
        while True:
            token = await self._db(self.g.store.acquire_doc_lock, tenant, kb, doc)
            if token is not None:
                return token
            if time.monotonic() > deadline:
                raise Unavailable(
                    "the document is being written; try again", reason="DOCUMENT_LOCKED"
                )
            await asyncio.sleep(0.05)

    # search and ask

    async def _retrieve(
        self,
        context: grpc.aio.ServicerContext,
        *,
        tenant: str,
        kb_id: str,
        query: str,
        mode: int,
        fusion: common_pb2.Fusion | None,
        top_k: int,
        min_score: float | None,
        filters: Any,
    ) -> retrieval_pb2.SearchChunksResponse:
        kb = await self._kb_async(tenant, kb_id)
        vector: list[float] = []
        if mode != common_pb2.SEARCH_MODE_SPARSE:
            embedded: embedding_pb2.EmbedTextsResponse = await self._call(
                "embedding EmbedTexts",
                self.g.embedding.EmbedTexts(
                    embedding_pb2.EmbedTextsRequest(
                        texts=[query], input_type=embedding_pb2.INPUT_TYPE_QUERY, truncate=True
                    ),
                    timeout=self._timeout(context),
                ),
            )
            vector = list(embedded.embeddings[0].values)
        search = retrieval_pb2.SearchChunksRequest(
            collection=kb.collection,
            query_vector=vector,
            query_text=query,
            mode=mode,  # type: ignore[arg-type]
            top_k=top_k,
            filters=filters,  # type: ignore[arg-type]
        )
        if fusion is not None:
            search.fusion.CopyFrom(fusion)
        if min_score is not None:
            search.min_score = min_score
        result: retrieval_pb2.SearchChunksResponse = await self._call(
            "retrieval SearchChunks",
            self.g.retrieval.SearchChunks(search, timeout=self._timeout(context)),
        )
        return result

    async def Search(
        self, request: pb.SearchRequest, context: grpc.aio.ServicerContext
    ) -> pb.SearchResponse:
        tenant = self._tenant(context)
        kb = v.check_kb_id(request.knowledge_base_id)
        query = v.check_text(request.query, "query", self.s.max_query_chars)
        top_k = v.check_top_k(request.top_k, self.s.default_top_k, self.s.max_top_k)
        result = await self._retrieve(
            context,
            tenant=tenant,
            kb_id=kb,
            query=query,
            mode=request.mode,
            fusion=request.fusion if request.HasField("fusion") else None,
            top_k=top_k,
            min_score=request.min_score if request.HasField("min_score") else None,
            filters=request.filters,
        )
        return pb.SearchResponse(
            hits=[hit_from_scored(r) for r in result.results], mode=result.mode
        )

    async def Ask(
        self, request: pb.AskRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.AskResponse]:
        start = time.perf_counter()
        tenant = self._tenant(context)
        kb = v.check_kb_id(request.knowledge_base_id)
        question = v.check_text(request.question, "question", self.s.max_query_chars)
        top_k = v.check_top_k(request.top_k, self.s.default_top_k, self.s.max_top_k)
        if request.max_tokens < 0 or request.max_tokens > self.s.max_answer_tokens:
            raise InvalidArgument(
                f"max_tokens must be between 1 and {self.s.max_answer_tokens} (0: default)",
                reason="MAX_TOKENS_OUT_OF_RANGE",
            )
        if request.HasField("temperature") and not 0.0 <= request.temperature <= 2.0:
            raise InvalidArgument(
                "temperature must be between 0 and 2", reason="TEMPERATURE_OUT_OF_RANGE"
            )
        result = await self._retrieve(
            context,
            tenant=tenant,
            kb_id=kb,
            query=question,
            mode=request.mode,
            fusion=None,
            top_k=top_k,
            min_score=None,
            filters=request.filters,
        )
        retrieval_ms = (time.perf_counter() - start) * 1000
        hits = [hit_from_scored(r) for r in result.results]
        by_id = {h.chunk_id: h for h in hits}
        yield pb.AskResponse(sources=pb.AskSources(sources=hits))
        generate = generation_pb2.GenerateAnswerRequest(
            question=question,
            max_tokens=request.max_tokens,
            passages=[
                generation_pb2.Passage(
                    id=r.chunk.id,
                    text=r.chunk.text,
                    score=r.score,
                    title=r.chunk.title,
                    source=r.chunk.source,
                )
                for r in result.results
            ],
        )
        if request.HasField("temperature"):
            generate.temperature = request.temperature
        first_token_ms = 0.0
        stream = self.g.generation.GenerateAnswer(
            generate, timeout=self._timeout(context, self.s.ask_timeout_s)
        )
        try:
            async for event in stream:
                kind = event.WhichOneof("event")
                if kind == "delta":
                    if not first_token_ms:
                        first_token_ms = (time.perf_counter() - start) * 1000
                    yield pb.AskResponse(delta=pb.AskDelta(text=event.delta.text))
                elif kind == "final":
                    final = event.final
                    citations = map_citations(final.citations, by_id)
                    yield pb.AskResponse(
                        final=pb.AskFinal(
                            answer=final.answer,
                            citations=citations,
                            grounded=final.grounded,
                            abstained=final.abstained,
                            finish_reason=generation_pb2.FinishReason.Name(
                                final.finish_reason
                            ).removeprefix("FINISH_REASON_"),
                            usage=final.usage,
                            retrieval_ms=retrieval_ms,
                            first_token_ms=first_token_ms or (time.perf_counter() - start) * 1000,
                            total_ms=(time.perf_counter() - start) * 1000,
                        )
                    )
        except grpc.aio.AioRpcError as err:
            raise from_rpc_error(err, "generation GenerateAnswer failed") from err


# --------------------------------------------------------------------- service


class GatewayService:
    name = "gateway"
    service_names = (SERVICE_NAME,)

    def __init__(
        self, settings: GatewaySettings | None = None, addresses: ServiceAddresses | None = None
    ) -> None:
        self.settings = settings or GatewaySettings()
        self.addresses = addresses or ServiceAddresses()  # type: ignore[call-arg]
        # Fail at startup, not at the first call, when no key is configured.
        self.auth = ApiKeyAuth.from_settings(
            self.settings.api_keys, self.settings.api_keys_file, self.settings.allow_anonymous
        )
        self.store = Store.from_url(self.settings.redis_url)
        self._reaper: asyncio.Task[None] | None = None
        self._reaper_id = f"{socket.gethostname()}-{uuid.uuid4().hex[:8]}"
        self._channels: list[grpc.aio.Channel] = []

    def send_task(self, job_id: str) -> None:
        from services.worker.app import send_ingest

        send_ingest(job_id)

    def register(self, server: grpc.aio.Server) -> None:
        gateway_pb2_grpc.add_RagServiceServicer_to_server(RagServicer(self), server)

    async def start(self) -> None:
        # Channels and the asyncio Redis client belong to the server's event loop.
        a = self.addresses
        self.aredis = aioredis.Redis.from_url(self.settings.redis_url)
        self._channels = [
            create_channel(
                a.embedding_addr,
                service="ragmesh.embedding.v1.EmbeddingService",
                idempotent_methods=["EmbedTexts", "GetModelInfo"],
            ),
            create_channel(
                a.retrieval_addr,
                service="ragmesh.retrieval.v1.RetrievalService",
                idempotent_methods=[
                    "GetCollection",
                    "SearchChunks",
                    "DeleteDocumentChunks",
                    "DeleteCollection",
                    "GetCapabilities",
                    "ListChunks",
                ],
            ),
            create_channel(a.generation_addr),
        ]
        self.embedding = embedding_pb2_grpc.EmbeddingServiceStub(self._channels[0])
        self.retrieval = retrieval_pb2_grpc.RetrievalServiceStub(self._channels[1])
        self.generation = generation_pb2_grpc.GenerationServiceStub(self._channels[2])
        await asyncio.to_thread(self.store.ping)
        self._reaper = asyncio.create_task(self._reap_forever())

    async def ready(self) -> bool:
        try:
            return await asyncio.to_thread(self.store.ping)
        except Exception:
            return False

    async def close(self) -> None:
        if self._reaper is not None:
            self._reaper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reaper
        for channel in self._channels:
            await channel.close()
        if self._channels:
            await self.aredis.aclose()
        self.store.close()

    async def reap_once(self) -> None:
        s = self.settings
        if not await asyncio.to_thread(
            self.store.try_reaper_lease, self._reaper_id, s.reaper_interval_s * 3
        ):
            return
        result = await asyncio.to_thread(
            self.store.reap,
            stale_after_s=s.job_heartbeat_timeout_s,
            max_attempts=s.job_max_attempts,
            requeue_after_s=s.queued_requeue_after_s,
            queued_timeout_s=s.queued_timeout_s,
        )
        for job_id in result.requeue:
            log.warning("re-queueing job %s (worker lost or message missing)", job_id)
            await asyncio.to_thread(self.send_task, job_id)
        for job_id in result.failed:
            log.warning("job %s failed: no worker finished it", job_id)

    async def _reap_forever(self) -> None:
        while True:
            try:
                await self.reap_once()
            except Exception:
                log.exception("reaper pass failed")
            await asyncio.sleep(self.settings.reaper_interval_s)


def create_service() -> tuple[GatewayService, int]:
    return GatewayService(), DEFAULT_PORTS["gateway"]
