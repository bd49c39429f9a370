"""The asyncio ragmesh client (grpc.aio); the same methods as RagmeshClient, awaited."""

# `timeout` here is the gRPC call deadline sent to the server (as in grpc.aio itself),
# not a local wait: asyncio.timeout could not propagate it to the gateway.
# ruff: noqa: ASYNC109

from __future__ import annotations

import asyncio
import copy
import os
import time
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from typing import Any

import grpc

from ragmesh.client import builders, bulk
from ragmesh.client._channel import (
    DEFAULT_ASK_TIMEOUT_S,
    DEFAULT_TIMEOUT_S,
    DEFAULT_UPLOAD_TIMEOUT_S,
    DEFAULT_WATCH_TIMEOUT_S,
    auth_metadata,
    channel_credentials,
    channel_options,
)
from ragmesh.client._documents_aio import AsyncDocumentCalls
from ragmesh.client.builders import FilterSpec, TurnSpec, UploadSource
from ragmesh.client.bulk import IngestOutcome, OnUpdate, Upload
from ragmesh.client.config import ClientSettings
from ragmesh.client.errors import DeadlineExceededError, from_rpc_error
from ragmesh.client.results import AskResult
from ragmesh.client.retry import RetryPolicy
from ragmesh.client.sync import raise_for_job
from ragmesh.common.v1 import common_pb2
from ragmesh.gateway.v1 import gateway_pb2, gateway_pb2_grpc
from ragmesh.rpc import health_check_async


class AsyncRagmeshClient(AsyncDocumentCalls):
    """Asyncio client of the ragmesh gateway.

    >>> async with AsyncRagmeshClient("127.0.0.1:50051", api_key="...") as rag:
    ...     resp = await rag.upload_document("docs", "notes.md")
    ...     await rag.wait_for_job(resp.job.job_id, check=True)
    ...     async for event in rag.ask("docs", "What changed in v2?"):
    ...         ...

    TLS as for RagmeshClient: `ca_file`, `root_certificates`, `tls`.
    """

    def __init__(
        self,
        target: str | None = None,
        api_key: str | None = None,
        *,
        timeout: float = DEFAULT_TIMEOUT_S,
        tls: bool | None = None,
        ca_file: str | os.PathLike[str] | None = None,
        root_certificates: bytes | None = None,
        retry: RetryPolicy | None = None,
        interceptors: Sequence[grpc.aio.ClientInterceptor] = (),
    ) -> None:
        # TLS: explicit arguments, else RAGMESH_TLS / RAGMESH_TLS_CA_FILE, else the config
        # file when the address comes from it (ragmesh.client.config). root_certificates
        # or a CA file imply TLS.
        settings = ClientSettings.resolve(
            target,
            api_key,
            tls=True if root_certificates is not None and tls is None else tls,
            ca_file=ca_file,
            read_file=target is None or api_key is None,
        )
        target = target if target is not None else settings.gateway_addr
        api_key = api_key if api_key is not None else settings.api_key
        self.target = target
        self.timeout = timeout
        self.retry = retry or RetryPolicy()
        self.tls = settings.tls
        self._metadata = auth_metadata(api_key)
        creds = channel_credentials(settings.tls, settings.ca_file, root_certificates)
        # `interceptors`: the caller's own, on every call (e.g. tracing: services/web)
        chosen = list(interceptors) or None
        if creds is not None:
            self._channel = grpc.aio.secure_channel(
                target, creds, options=channel_options(), interceptors=chosen
            )
        else:
            self._channel = grpc.aio.insecure_channel(
                target, options=channel_options(), interceptors=chosen
            )
        self._stub = gateway_pb2_grpc.RagServiceStub(self._channel)

    @classmethod
    def from_env(cls, **kwargs: Any) -> AsyncRagmeshClient:
        """Address, key and TLS from RAGMESH_GATEWAY_ADDR / RAGMESH_API_KEY /
        RAGMESH_TLS / RAGMESH_TLS_CA_FILE or the config file."""
        settings = ClientSettings.resolve()
        kwargs.setdefault("tls", settings.tls)
        kwargs.setdefault("ca_file", settings.ca_file or None)
        return cls(settings.gateway_addr, settings.api_key, **kwargs)

    async def close(self) -> None:
        await self._channel.close()

    async def __aenter__(self) -> AsyncRagmeshClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def with_metadata(self, metadata: Sequence[tuple[str, str]]) -> AsyncRagmeshClient:
        """This client for another caller: the same channel, `metadata` (e.g. the
        caller's `authorization`) sent instead of this client's key. For a front end
        serving many callers over one connection (services/web); close only the
        original, never the copy."""
        view = copy.copy(self)
        view._metadata = tuple((str(k), str(v)) for k, v in metadata)
        return view

    # -- plumbing ---------------------------------------------------------------------------

    async def _call(
        self,
        method: Callable[..., Any],
        request: Any,
        timeout: float | None,
        again: Callable[[], Any] | None = None,
    ) -> Any:
        """One unary (or client-streaming) call, called again while the server's
        RetryInfo says so. `again` makes the request anew for a streamed request
        (None from it: the source cannot be read again, so no retry)."""
        attempt = 1
        while True:
            try:
                return await method(
                    request,
                    timeout=self.timeout if timeout is None else timeout,
                    metadata=self._metadata,
                )
            except grpc.RpcError as err:
                wait = self.retry.delay(err, attempt)
                if wait is not None and again is not None:
                    request = again()
                    wait = wait if request is not None else None
                if wait is None:
                    raise from_rpc_error(err) from err
            await asyncio.sleep(wait)
            attempt += 1

    async def _stream(
        self, method: Callable[..., Any], request: Any, timeout: float
    ) -> AsyncIterator[Any]:
        """A server stream; called again (RetryInfo) only while nothing was received."""
        attempt = 1
        while True:
            call = method(request, timeout=timeout, metadata=self._metadata)
            received = False
            try:
                async for item in call:
                    received = True
                    yield item
                return
            except grpc.RpcError as err:
                wait = None if received else self.retry.delay(err, attempt)
                if wait is None:
                    raise from_rpc_error(err) from err
            finally:
                call.cancel()
            await asyncio.sleep(wait)
            attempt += 1

    # -- knowledge bases --------------------------------------------------------------------

    async def create_knowledge_base(
        self,
        knowledge_base_id: str,
        *,
        description: str = "",
        language: int | str | None = None,
        metric: int | str | None = None,
        index_type: int | str | None = None,
        index_params: Mapping[str, Any] | None = None,
        rerank: bool = False,
        answer_mode: int | str | None = None,
        model: str = "",
        timeout: float | None = None,
    ) -> gateway_pb2.KnowledgeBase:
        req = builders.create_knowledge_base_request(
            knowledge_base_id,
            description=description,
            language=language,
            metric_=metric,
            index_type_=index_type,
            index_params=index_params,
            rerank=rerank,
            answer_mode_=answer_mode,
            model=model,
        )
        resp = await self._call(self._stub.CreateKnowledgeBase, req, timeout)
        return resp.knowledge_base

    async def get_knowledge_base(
        self, knowledge_base_id: str, *, timeout: float | None = None
    ) -> gateway_pb2.KnowledgeBase:
        req = gateway_pb2.GetKnowledgeBaseRequest(knowledge_base_id=knowledge_base_id)
        resp = await self._call(self._stub.GetKnowledgeBase, req, timeout)
        return resp.knowledge_base

    async def list_knowledge_bases(
        self, *, page_size: int = 0, page_token: str = "", timeout: float | None = None
    ) -> gateway_pb2.ListKnowledgeBasesResponse:
        req = gateway_pb2.ListKnowledgeBasesRequest(page_size=page_size, page_token=page_token)
        return await self._call(self._stub.ListKnowledgeBases, req, timeout)

    async def iter_knowledge_bases(
        self, *, page_size: int = 0
    ) -> AsyncIterator[gateway_pb2.KnowledgeBase]:
        async for page in builders.apages(
            lambda t: self.list_knowledge_bases(page_size=page_size, page_token=t)
        ):
            for kb in page.knowledge_bases:
                yield kb

    async def delete_knowledge_base(
        self, knowledge_base_id: str, *, timeout: float | None = None
    ) -> None:
        req = gateway_pb2.DeleteKnowledgeBaseRequest(knowledge_base_id=knowledge_base_id)
        await self._call(self._stub.DeleteKnowledgeBase, req, timeout)

    # -- upload and jobs --------------------------------------------------------------------

    async def upload_document(
        self,
        knowledge_base_id: str,
        source: UploadSource,
        *,
        file_name: str = "",
        document_id: str = "",
        media_type: str = "",
        metadata: Mapping[str, Any] | None = None,
        chunk_bytes: int = builders.UPLOAD_CHUNK_BYTES,
        timeout: float | None = None,
    ) -> gateway_pb2.UploadDocumentResponse:
        """Upload a file (path), bytes (with `file_name`) or a binary file object."""
        opened = builders.open_source(source, file_name, media_type)
        try:
            header = builders.upload_header(
                knowledge_base_id, opened, document_id=document_id, metadata=metadata
            )
            return await self._call(
                self._stub.UploadDocument,
                builders.upload_requests(header, opened, chunk_bytes),
                DEFAULT_UPLOAD_TIMEOUT_S if timeout is None else timeout,
                again=lambda: (
                    builders.upload_requests(header, opened, chunk_bytes)
                    if opened.rewind()
                    else None
                ),
            )
        finally:
            opened.close()

    async def get_ingestion_job(
        self, job_id: str, *, timeout: float | None = None
    ) -> gateway_pb2.IngestionJob:
        req = gateway_pb2.GetIngestionJobRequest(job_id=job_id)
        return (await self._call(self._stub.GetIngestionJob, req, timeout)).job

    async def list_ingestion_jobs(
        self,
        *,
        knowledge_base_id: str = "",
        state: int | str | None = None,
        page_size: int = 0,
        page_token: str = "",
        newest_first: bool = False,
        timeout: float | None = None,
    ) -> gateway_pb2.ListIngestionJobsResponse:
        req = gateway_pb2.ListIngestionJobsRequest(
            knowledge_base_id=knowledge_base_id,
            state=builders.job_state(state),  # type: ignore[arg-type]
            page_size=page_size,
            page_token=page_token,
            newest_first=newest_first,
        )
        return await self._call(self._stub.ListIngestionJobs, req, timeout)

    async def iter_ingestion_jobs(
        self,
        *,
        knowledge_base_id: str = "",
        state: int | str | None = None,
        page_size: int = 0,
        newest_first: bool = False,
    ) -> AsyncIterator[gateway_pb2.IngestionJob]:
        async def fetch(token: str) -> gateway_pb2.ListIngestionJobsResponse:
            return await self.list_ingestion_jobs(
                knowledge_base_id=knowledge_base_id,
                state=state,
                page_size=page_size,
                page_token=token,
                newest_first=newest_first,
            )

        async for page in builders.apages(fetch):
            for job in page.jobs:
                yield job

    async def watch_ingestion_job(
        self, job_id: str, *, timeout: float = DEFAULT_WATCH_TIMEOUT_S
    ) -> AsyncIterator[gateway_pb2.IngestionJob]:
        """The job on every change, until it ends (the last one is terminal)."""
        req = gateway_pb2.WatchIngestionJobRequest(job_id=job_id)
        async for resp in self._stream(self._stub.WatchIngestionJob, req, timeout):
            yield resp.job

    async def wait_for_job(
        self,
        job_id: str,
        *,
        timeout: float = DEFAULT_WATCH_TIMEOUT_S,
        check: bool = False,
        on_update: Callable[[gateway_pb2.IngestionJob], None] | None = None,
    ) -> gateway_pb2.IngestionJob:
        """Wait until the job ends and return it; with `check`, raise JobFailedError
        unless it SUCCEEDED."""
        deadline = time.monotonic() + timeout
        # No GetIngestionJob first: a watch starts with the job as it is now (and ends at
        # once for a job already over), so reading it before would cost a call a job.
        job: gateway_pb2.IngestionJob | None = None
        while job is None or not builders.job_is_done(job):
            left = deadline - time.monotonic()
            if left <= 0:
                raise builders.job_wait_timeout(job_id, job, timeout)
            stream = self.watch_ingestion_job(job_id, timeout=left)
            try:
                # To the stream's end, right after the job's (as RagmeshClient.wait_for_job).
                async for job in stream:
                    if on_update is not None:
                        on_update(job)
            except DeadlineExceededError:
                continue
            finally:
                await stream.aclose()  # type: ignore[attr-defined]
            if job is None or not builders.job_is_done(job):
                # The stream ended early (a gateway restart): read the job, then watch again.
                job = await self.get_ingestion_job(job_id)
        if check:
            raise_for_job(job)
        return job

    async def ingest_many(
        self,
        knowledge_base_id: str,
        items: Iterable[Upload | str | os.PathLike[str]],
        *,
        concurrency: int = 4,
        wait: bool = True,
        timeout: float = DEFAULT_WATCH_TIMEOUT_S,
        on_update: OnUpdate | None = None,
    ) -> list[IngestOutcome]:
        """Upload documents (`concurrency` at a time) and, with `wait`, follow each
        job until it ends. Never raises for one document: each outcome carries its
        job or its error, in the order of `items`."""
        return await bulk.ingest_many_async(
            self, knowledge_base_id, items, concurrency, wait, timeout, on_update
        )

    async def cancel_ingestion_job(
        self, job_id: str, *, timeout: float | None = None
    ) -> gateway_pb2.IngestionJob:
        req = gateway_pb2.CancelIngestionJobRequest(job_id=job_id)
        return (await self._call(self._stub.CancelIngestionJob, req, timeout)).job

    async def retry_ingestion_job(
        self, job_id: str, *, timeout: float | None = None
    ) -> gateway_pb2.IngestionJob:
        req = gateway_pb2.RetryIngestionJobRequest(job_id=job_id)
        return (await self._call(self._stub.RetryIngestionJob, req, timeout)).job

    # -- search and ask ---------------------------------------------------------------------

    async def search(
        self,
        knowledge_base_id: str,
        query: str,
        *,
        top_k: int = 0,
        mode: int | str | None = None,
        fusion: common_pb2.Fusion | str | None = None,
        min_score: float | None = None,
        filters: Sequence[FilterSpec] | None = None,
        rerank: bool | None = None,
        timeout: float | None = None,
    ) -> gateway_pb2.SearchResponse:
        req = builders.search_request(
            knowledge_base_id,
            query,
            top_k=top_k,
            mode=mode,
            fusion=fusion,
            min_score=min_score,
            filters=filters,
            rerank=rerank,
        )
        return await self._call(self._stub.Search, req, timeout)

    def ask(
        self,
        knowledge_base_id: str,
        question: str,
        *,
        top_k: int = 0,
        mode: int | str | None = None,
        filters: Sequence[FilterSpec] | None = None,
        max_tokens: int = 0,
        temperature: float | None = None,
        rerank: bool | None = None,
        answer_mode: int | str | None = None,
        require_citations: bool = False,
        history: Sequence[TurnSpec] | None = None,
        timeout: float = DEFAULT_ASK_TIMEOUT_S,
    ) -> AsyncIterator[gateway_pb2.AskResponse]:
        """The Ask stream (`async for`): one `sources` event, `delta` events, then `final`.

        `history` is the conversation so far, oldest first: ("user" | "assistant",
        text) pairs, dicts with role and content, or ChatTurn messages. With it the
        question is searched as a standalone query (AskFinal.search_query).
        """
        req = builders.ask_request(
            knowledge_base_id,
            question,
            top_k=top_k,
            mode=mode,
            filters=filters,
            max_tokens=max_tokens,
            temperature=temperature,
            rerank=rerank,
            answer_mode_=answer_mode,
            require_citations=require_citations,
            history=history,
        )
        return self._stream(self._stub.Ask, req, timeout)

    async def ask_collect(self, knowledge_base_id: str, question: str, **kwargs: Any) -> AskResult:
        """Ask and wait for the whole answer (same arguments as `ask`)."""
        result = AskResult()
        async for event in self.ask(knowledge_base_id, question, **kwargs):
            result.add(event)
        return result

    # -- health -----------------------------------------------------------------------------

    async def health(self, service: str = "", *, timeout: float = 5.0) -> str:
        try:
            return await health_check_async(self._channel, service, timeout)
        except grpc.RpcError as err:
            raise from_rpc_error(err) from err


__all__ = ["AsyncRagmeshClient"]
