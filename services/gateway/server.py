"""The public RagService, as a thin servicer: it resolves the caller's tenant,
turns requests into the logic modules' parameters and their results into
responses. The logic lives beside it: knowledge_bases, ingestion, documents,
search, ask (none of which imports grpc); clients talks to the internal
services; the ingestion state is services.jobs.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator

import grpc
import redis.asyncio as aioredis
from grpc.aio import ServicerContext as Context

from ragmesh.gateway.v1 import gateway_pb2 as pb
from ragmesh.gateway.v1 import gateway_pb2_grpc
from services.common import api, metrics
from services.common.channels import remaining_timeout
from services.common.config import DEFAULT_PORTS, ServiceAddresses
from services.common.deadlines import Deadline
from services.common.errors import InvalidArgument
from services.common.tls import ServerTLS
from services.gateway.answers.compose import AnswerComposer
from services.gateway.ask import Asker, AskParams
from services.gateway.auth import ApiKeyAuth, Authenticator
from services.gateway.auth_limits import FailedAuthLimiter
from services.gateway.clients import Downstream
from services.gateway.config import AnswerSettings, GatewaySettings, RerankSettings
from services.gateway.consistency import Checker
from services.gateway.convert import check_to_pb, doc_to_pb, job_to_pb, kb_to_pb
from services.gateway.documents import Documents
from services.gateway.ingestion import Ingestion, UploadSpec
from services.gateway.knowledge_bases import KnowledgeBases, KnowledgeBaseSpec, KnowledgeBaseView
from services.gateway.reindex import Reindexer
from services.gateway.rerank import Reranker
from services.gateway.search import Searcher, SearchParams
from services.gateway.sweeper import Sweeper
from services.generation.history_proto import history_from_proto
from services.jobs.db import async_client, translate_redis_error
from services.jobs.queue import CeleryQueue
from services.jobs.quotas import Quotas
from services.jobs.reaper import Reaper, ReaperPolicy
from services.jobs.records import JobState
from services.jobs.settings import JobsSettings
from services.jobs.state import JobsState

SERVICE_NAME = "ragmesh.gateway.v1.RagService"
DOWNLOAD_PIECE_BYTES = 64 * 1024
log = logging.getLogger("ragmesh.gateway")


async def _upload_pieces(
    messages: AsyncIterator[pb.UploadDocumentRequest],
) -> AsyncIterator[bytes]:
    """The data messages after the header, as bytes."""
    async for message in messages:
        if message.WhichOneof("payload") != "data":
            raise InvalidArgument(
                "only the first message may be a header", reason="DUPLICATE_UPLOAD_HEADER"
            )
        yield message.data


def _job_state(value: int) -> JobState | None:
    """A ListIngestionJobs state filter (UNSPECIFIED: any)."""
    if not value:
        return None
    # An open enum: numbers this gateway does not know arrive too (Name would raise).
    known = value in pb.JobState.values()
    name = pb.JobState.Name(value).removeprefix("JOB_STATE_") if known else ""  # type: ignore[arg-type]
    if name not in JobState.__members__:
        raise InvalidArgument(f"unknown job state {value}", reason="INVALID_JOB_STATE")
    return JobState(name)


class RagServicer(gateway_pb2_grpc.RagServiceServicer):
    def __init__(self, gateway: GatewayService) -> None:
        self.g = gateway
        self.s = gateway.settings

    def _tenant(self, context: Context) -> str:
        """The caller's tenant; its source address (the peer, or x-forwarded-for when
        trusted) counts its failed authentications."""
        return self.g.auth.tenant_of(context.invocation_metadata(), context.peer())

    def _deadline(self, context: Context, default: float | None = None) -> Deadline:
        return Deadline.after(remaining_timeout(context, default or self.s.downstream_timeout_s))

    def _page_size(self, requested: int) -> int:
        return api.page_size(requested, self.s.default_page_size, self.s.max_page_size)

    # knowledge bases

    async def CreateKnowledgeBase(
        self, request: pb.CreateKnowledgeBaseRequest, context: Context
    ) -> pb.CreateKnowledgeBaseResponse:
        tenant = self._tenant(context)
        spec = KnowledgeBaseSpec(
            knowledge_base_id=request.knowledge_base_id,
            description=request.description,
            language=request.language,
            metric=request.metric,
            index_type=request.index_type,
            index_params=api.dict_from_struct(request.index_params, "index_params"),
            rerank=request.rerank,
            answer_mode=request.answer_mode,
            model=request.model,
        )
        record = await self.g.knowledge_bases.create(tenant, spec, self._deadline(context))
        return pb.CreateKnowledgeBaseResponse(knowledge_base=kb_to_pb(KnowledgeBaseView(record, 0)))

    async def GetKnowledgeBase(
        self, request: pb.GetKnowledgeBaseRequest, context: Context
    ) -> pb.GetKnowledgeBaseResponse:
        tenant = self._tenant(context)
        view = await self.g.knowledge_bases.get(tenant, request.knowledge_base_id)
        return pb.GetKnowledgeBaseResponse(knowledge_base=kb_to_pb(view))

    async def ListKnowledgeBases(
        self, request: pb.ListKnowledgeBasesRequest, context: Context
    ) -> pb.ListKnowledgeBasesResponse:
        tenant = self._tenant(context)
        views, nxt = await self.g.knowledge_bases.list(
            tenant, self._page_size(request.page_size), request.page_token
        )
        return pb.ListKnowledgeBasesResponse(
            knowledge_bases=[kb_to_pb(view) for view in views],
            next_page_token=nxt,
        )

    async def DeleteKnowledgeBase(
        self, request: pb.DeleteKnowledgeBaseRequest, context: Context
    ) -> pb.DeleteKnowledgeBaseResponse:
        tenant = self._tenant(context)
        await self.g.knowledge_bases.delete(
            tenant, request.knowledge_base_id, self._deadline(context)
        )
        return pb.DeleteKnowledgeBaseResponse()

    # uploads and jobs

    async def UploadDocument(
        self, request_iterator: AsyncIterator[pb.UploadDocumentRequest], context: Context
    ) -> pb.UploadDocumentResponse:
        tenant = self._tenant(context)
        ingestion = self.g.ingestion
        with ingestion.slots.take(tenant):
            first = None
            async for message in request_iterator:
                first = message
                break
            if first is None or first.WhichOneof("payload") != "header":
                raise InvalidArgument(
                    "the first message of an upload must be the header, then the bytes",
                    reason="MISSING_UPLOAD_HEADER",
                )
            header = first.header
            spec = UploadSpec(
                knowledge_base_id=header.knowledge_base_id,
                document_id=header.document_id,
                file_name=header.file_name,
                media_type=header.media_type,
                metadata=api.dict_from_struct(header.metadata, "metadata"),
            )
            result = await ingestion.upload(tenant, spec, _upload_pieces(request_iterator))
        return pb.UploadDocumentResponse(
            job=job_to_pb(result.job), document=doc_to_pb(result.document)
        )

    async def GetIngestionJob(
        self, request: pb.GetIngestionJobRequest, context: Context
    ) -> pb.GetIngestionJobResponse:
        job = await self.g.ingestion.get_job(self._tenant(context), request.job_id)
        return pb.GetIngestionJobResponse(job=job_to_pb(job))

    async def ListIngestionJobs(
        self, request: pb.ListIngestionJobsRequest, context: Context
    ) -> pb.ListIngestionJobsResponse:
        tenant = self._tenant(context)
        jobs, nxt = await self.g.ingestion.list_jobs(
            tenant,
            request.knowledge_base_id,
            _job_state(request.state),
            self._page_size(request.page_size),
            request.page_token,
            request.newest_first,
        )
        return pb.ListIngestionJobsResponse(jobs=[job_to_pb(j) for j in jobs], next_page_token=nxt)

    async def WatchIngestionJob(
        self, request: pb.WatchIngestionJobRequest, context: Context
    ) -> AsyncIterator[pb.WatchIngestionJobResponse]:
        async for job in self.g.ingestion.watch(self._tenant(context), request.job_id):
            yield pb.WatchIngestionJobResponse(job=job_to_pb(job))

    async def CancelIngestionJob(
        self, request: pb.CancelIngestionJobRequest, context: Context
    ) -> pb.CancelIngestionJobResponse:
        job = await self.g.ingestion.cancel(self._tenant(context), request.job_id)
        return pb.CancelIngestionJobResponse(job=job_to_pb(job))

    async def RetryIngestionJob(
        self, request: pb.RetryIngestionJobRequest, context: Context
    ) -> pb.RetryIngestionJobResponse:
        job = await self.g.ingestion.retry(self._tenant(context), request.job_id)
        return pb.RetryIngestionJobResponse(job=job_to_pb(job))

    # documents

    async def GetDocument(
        self, request: pb.GetDocumentRequest, context: Context
    ) -> pb.GetDocumentResponse:
        doc = await self.g.documents.get(
            self._tenant(context), request.knowledge_base_id, request.document_id
        )
        return pb.GetDocumentResponse(document=doc_to_pb(doc))

    async def ListDocuments(
        self, request: pb.ListDocumentsRequest, context: Context
    ) -> pb.ListDocumentsResponse:
        docs, nxt = await self.g.documents.list(
            self._tenant(context),
            request.knowledge_base_id,
            self._page_size(request.page_size),
            request.page_token,
        )
        return pb.ListDocumentsResponse(documents=[doc_to_pb(d) for d in docs], next_page_token=nxt)

    async def DeleteDocument(
        self, request: pb.DeleteDocumentRequest, context: Context
    ) -> pb.DeleteDocumentResponse:
        await self.g.documents.delete(
            self._tenant(context),
            request.knowledge_base_id,
            request.document_id,
            self._deadline(context),
        )
        return pb.DeleteDocumentResponse()

    async def GetDocumentText(
        self, request: pb.GetDocumentTextRequest, context: Context
    ) -> pb.GetDocumentTextResponse:
        page = await self.g.documents.text(
            self._tenant(context),
            request.knowledge_base_id,
            request.document_id,
            request.offset,
            request.max_chars,
        )
        return pb.GetDocumentTextResponse(
            text=page.text,
            offset=page.offset,
            total_chars=page.total_chars,
            next_offset=page.next_offset,
            document_version=page.version,
        )

    async def DownloadDocument(
        self, request: pb.DownloadDocumentRequest, context: Context
    ) -> AsyncIterator[pb.DownloadDocumentResponse]:
        doc, data = await self.g.documents.original(
            self._tenant(context), request.knowledge_base_id, request.document_id
        )
        yield pb.DownloadDocumentResponse(
            header=pb.DownloadHeader(
                file_name=doc.file_name,
                media_type=doc.media_type,
                size_bytes=len(data),
                content_sha256=doc.content_sha256,
            )
        )
        view = memoryview(data)
        for start in range(0, len(data), DOWNLOAD_PIECE_BYTES):
            yield pb.DownloadDocumentResponse(
                data=bytes(view[start : start + DOWNLOAD_PIECE_BYTES])
            )

    # consistency

    async def CheckKnowledgeBase(
        self, request: pb.CheckKnowledgeBaseRequest, context: Context
    ) -> pb.CheckKnowledgeBaseResponse:
        report = await self.g.checker.check(
            self._tenant(context),
            request.knowledge_base_id or None,
            request.repair,
            self._deadline(context),
        )
        return check_to_pb(report)

    async def ReindexKnowledgeBase(
        self, request: pb.ReindexKnowledgeBaseRequest, context: Context
    ) -> pb.ReindexKnowledgeBaseResponse:
        started = await self.g.reindexer.start(
            self._tenant(context),
            request.knowledge_base_id,
            self._deadline(context),
            model=request.model,
        )
        return pb.ReindexKnowledgeBaseResponse(
            collection=started.collection, documents=started.documents, job_ids=started.job_ids
        )

    # search and ask

    async def Search(self, request: pb.SearchRequest, context: Context) -> pb.SearchResponse:
        params = SearchParams(
            knowledge_base_id=request.knowledge_base_id,
            query=request.query,
            mode=request.mode,
            fusion=request.fusion if request.HasField("fusion") else None,
            top_k=request.top_k,
            min_score=request.min_score if request.HasField("min_score") else None,
            filters=request.filters,
            rerank=request.rerank if request.HasField("rerank") else None,
        )
        hits, mode, rerank = await self.g.searcher.search(
            self._tenant(context), params, self._deadline(context)
        )
        return pb.SearchResponse(hits=hits, mode=mode, rerank=rerank)  # type: ignore[arg-type]

    async def Ask(self, request: pb.AskRequest, context: Context) -> AsyncIterator[pb.AskResponse]:
        params = AskParams(
            knowledge_base_id=request.knowledge_base_id,
            question=request.question,
            mode=request.mode,
            top_k=request.top_k,
            filters=request.filters,
            max_tokens=request.max_tokens,
            temperature=request.temperature if request.HasField("temperature") else None,
            rerank=request.rerank if request.HasField("rerank") else None,
            answer_mode=request.answer_mode,
            require_citations=request.require_citations,
            history=history_from_proto(request.history),
        )
        deadline = self._deadline(context, self.s.ask_timeout_s)
        async for event in self.g.asker.ask(self._tenant(context), params, deadline):
            yield event


class GatewayService:
    """The gateway process: settings, authentication, the ingestion state and
    queue, the logic modules and the reaper's loop."""

    name = "gateway"
    service_names = (SERVICE_NAME,)
    # The public API: INTERNAL/UNAVAILABLE details stay in the logs.
    public = True
    translate_error = staticmethod(translate_redis_error)

    def __init__(
        self,
        settings: GatewaySettings | None = None,
        addresses: ServiceAddresses | None = None,
        jobs: JobsSettings | None = None,
        rerank: RerankSettings | None = None,
        answers: AnswerSettings | None = None,
    ) -> None:
        self.settings = settings or GatewaySettings()
        self.rerank_settings = rerank or RerankSettings()
        self.answer_settings = answers or AnswerSettings()
        self.jobs_settings = jobs or JobsSettings()
        self.addresses = addresses or ServiceAddresses()
        s = self.settings
        # Fail at startup, not at the first call, when no key is configured or the
        # TLS files are unusable.
        keys = ApiKeyAuth.from_settings(
            s.api_keys, s.api_keys_file, s.allow_anonymous, s.api_keys_reload_interval_s
        )
        limiter = FailedAuthLimiter(
            s.auth_failure_limit, s.auth_failure_window_s, s.auth_failure_max_sources
        )
        self.auth = Authenticator(keys, limiter, s.trusted_proxy_hops)
        # Read by the server bootstrap: TLS on the API port, a plaintext health port,
        # the gRPC receive limit.
        self.tls = ServerTLS.from_files(
            s.tls_cert_file, s.tls_key_file, s.tls_client_ca_file, s.tls_reload_interval_s
        )
        self.health_port = s.health_port
        self.max_receive_bytes = s.max_receive_bytes
        self.state = JobsState.from_settings(
            self.jobs_settings,
            Quotas(
                max_knowledge_bases=s.max_knowledge_bases_per_tenant,
                max_documents=s.max_documents_per_tenant,
                max_stored_bytes=s.max_stored_bytes_per_tenant,
            ),
        )
        self.queue = CeleryQueue(self.jobs_settings)
        self.downstream = Downstream(self.addresses)
        self.reaper = Reaper(
            self.state.book,
            self.queue,
            ReaperPolicy(
                stale_after_s=self.jobs_settings.job_heartbeat_timeout_s,
                max_attempts=s.job_max_attempts,
                requeue_after_s=s.queued_requeue_after_s,
                interval_s=s.reaper_interval_s,
            ),
        )
        self.knowledge_bases = KnowledgeBases(
            self.state,
            self.downstream,
            chinese_model=s.chinese_model,
            english_model=s.english_model,
        )
        self.ingestion = Ingestion(self.state, self.queue, s)
        self.documents = Documents(self.state, self.downstream, s.text_page_chars)
        self.checker = Checker(self.state, self.downstream, self.queue)
        self.reindexer = Reindexer(self.state, self.downstream, self.queue)
        self.sweeper = Sweeper(
            self.state,
            self.downstream,
            s.failed_upload_retention_s,
            s.sweep_after_s,
            job_retention_s=s.job_retention_s,
        )
        self._housekeeping: asyncio.Task[None] | None = None
        self._last_check = float("-inf")
        self._aredis: aioredis.Redis | None = None
        self.reranker: Reranker | None = None

    def register(self, server: grpc.aio.Server) -> None:
        gateway_pb2_grpc.add_RagServiceServicer_to_server(RagServicer(self), server)

    async def start(self) -> None:
        # Channels and asyncio Redis clients belong to the server's event loop.
        await self.downstream.start()
        await self.ingestion.start(self.jobs_settings.redis_url)
        self._aredis = async_client(self.jobs_settings.redis_url)
        # Built here: its HTTP client belongs to the server's event loop.
        self.reranker = Reranker(self.rerank_settings) if self.rerank_settings.url else None
        self.searcher = Searcher(
            self.state.db.keys,
            self._aredis,
            self.downstream,
            self.settings,
            self.reranker,
            self.rerank_settings.candidates,
        )
        self.asker = Asker(
            self.searcher,
            self.downstream,
            self.settings,
            AnswerComposer(self.downstream, self.answer_settings),
        )
        await asyncio.to_thread(self.state.ping)
        self._housekeeping = asyncio.create_task(self._housekeep_forever())

    async def housekeep_once(self) -> None:
        """On the replica holding the reaper's lease: a reaper pass, the sweeper,
        re-indexes moved along, and (when configured) a consistency check."""
        if await asyncio.to_thread(self.reaper.try_lease):
            reaped = await asyncio.to_thread(self.reaper.run_pass)
            metrics.record_reaper_pass(
                worker_lost=len(reaped.requeue) - len(reaped.resent_missing),
                message_lost=len(reaped.resent_missing),
                waiting=reaped.waiting,
                scan_seconds=reaped.snapshot.seconds if reaped.snapshot else None,
            )
            await self.sweeper.run_once()
            await self.reindexer.reconcile()
            await self.reindexer.drop_unused(self.settings.sweep_after_s)
            await self.periodic_check()

    async def periodic_check(self) -> None:
        """Every RAGMESH_GATEWAY_CHECK_INTERVAL_S (0: never), `kb check` of every
        tenant, without repair; the findings by kind become metrics."""
        interval = self.settings.check_interval_s
        now = time.monotonic()
        if not interval or now - self._last_check < interval:
            return
        self._last_check = now
        counts: dict[str, int] = {}
        for tenant in await asyncio.to_thread(self.state.catalogue.tenants):
            report = await self.checker.check(tenant, None, False, Deadline.after(300))
            for finding in report.findings:
                counts[finding.kind] = counts.get(finding.kind, 0) + 1
        metrics.set_consistency_findings(counts)

    async def _housekeep_forever(self) -> None:
        while True:
            try:
                await self.housekeep_once()
            except Exception:
                log.exception("housekeeping pass failed")
            await asyncio.sleep(self.settings.reaper_interval_s)

    async def ready(self) -> bool:
        try:
            return await asyncio.to_thread(self.state.ping)
        except Exception:
            return False

    async def close(self) -> None:
        if self._housekeeping is not None:
            self._housekeeping.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._housekeeping
        await self.downstream.close()
        if self.reranker is not None:
            await self.reranker.close()
        await self.ingestion.close()
        if self._aredis is not None:
            await self._aredis.aclose()
        self.queue.close()
        self.state.close()


def create_service() -> tuple[GatewayService, int]:
    return GatewayService(), DEFAULT_PORTS["gateway"]
