"""Uploads and ingestion jobs: assemble an upload, register and queue its job
(or deduplicate), read, list, watch, cancel and retry jobs."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
from collections import defaultdict
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import redis.asyncio as aioredis

from services.common.errors import (
    DeadlineExceeded,
    InvalidArgument,
    NotFound,
    ResourceExhausted,
    Unavailable,
)
from services.gateway import validation as v
from services.gateway.config import GatewaySettings
from services.gateway.job_events import JobEvents, JobSignal
from services.jobs.db import async_client
from services.jobs.jobbook import job_of
from services.jobs.outcomes import GATEWAY_DOMAIN, UploadResult
from services.jobs.queue import IngestionQueue
from services.jobs.records import DocumentRecord, ErrorRecord, JobRecord, JobState
from services.jobs.state import JobsState

log = logging.getLogger("ragmesh.gateway")


@dataclass
class UploadSpec:
    """The upload header, as the caller sent it."""

    knowledge_base_id: str
    document_id: str = ""
    file_name: str = ""
    media_type: str = ""
    metadata: dict[str, Any] = field(default_factory=dict)


class Slots:
    """Concurrent streams of one kind (uploads, watches) per tenant on this replica."""

    def __init__(self, limit: int, what: str, reason: str) -> None:
        self.limit, self.what, self.reason = limit, what, reason
        self.open: dict[str, int] = defaultdict(int)

    @contextlib.contextmanager
    def take(self, tenant: str) -> Iterator[None]:
        if self.open[tenant] >= self.limit:
            raise ResourceExhausted(
                f"the tenant already has {self.limit} {self.what} open; retry when one ends",
                reason=self.reason,
                metadata={"limit": self.limit},
                retry_after_s=1.0,
            )
        self.open[tenant] += 1
        try:
            yield
        finally:
            self.open[tenant] -= 1
            if not self.open[tenant]:
                del self.open[tenant]


class UploadBuffer:
    """The bytes of uploads this replica holds in memory, over every tenant:
    each piece is counted as it arrives; one that would go over the budget
    fails its upload (RESOURCE_EXHAUSTED, retry later) instead of the replica."""

    def __init__(self, budget: int) -> None:
        self.budget = budget
        self.used = 0
        self.peak = 0

    @contextlib.contextmanager
    def account(self) -> Iterator[Callable[[int], None]]:
        """A function taking `n` more bytes for one upload; all given back at the end."""
        taken = 0

        def take(n: int) -> None:
            nonlocal taken
            if self.used + n > self.budget:
                raise ResourceExhausted(
                    "the gateway is holding as many upload bytes as it may; retry shortly",
                    reason="UPLOAD_BUFFER_FULL",
                    metadata={"budget_bytes": self.budget},
                    retry_after_s=2.0,
                )
            self.used += n
            taken += n
            self.peak = max(self.peak, self.used)

        try:
            yield take
        finally:
            self.used -= taken


def _visible(job: JobRecord) -> tuple[object, ...]:
    """What a watcher sees of a job (heartbeats alone are not news)."""
    return (
        job.state,
        job.stage,
        job.chunks_done,
        job.chunks_total,
        job.attempt,
        job.update_time,
        job.error,
    )


class Ingestion:
    def __init__(
        self,
        state: JobsState,
        queue: IngestionQueue,
        settings: GatewaySettings,
    ) -> None:
        self.state = state
        self.queue = queue
        self.settings = settings
        self.slots = Slots(
            settings.max_concurrent_uploads_per_tenant, "uploads", "TOO_MANY_CONCURRENT_UPLOADS"
        )
        self.watches = Slots(
            settings.max_concurrent_watches_per_tenant, "watches", "TOO_MANY_CONCURRENT_WATCHES"
        )
        self.buffer = UploadBuffer(settings.upload_buffer_bytes)
        self.aredis: aioredis.Redis | None = None
        self.events: JobEvents | None = None

    async def start(self, redis_url: str) -> None:
        """The asyncio Redis client (watches) belongs to the running loop."""
        self.aredis = async_client(redis_url)
        keys = self.state.db.keys
        self.events = JobEvents(self.aredis, pattern=keys.events("*"), prefix=keys.events(""))
        self.events.start()

    async def close(self) -> None:
        if self.events is not None:
            await self.events.close()
        if self.aredis is not None:
            await self.aredis.aclose()

    # ------------------------------------------------------------------ uploads

    def check_header(self, spec: UploadSpec) -> tuple[str, str, str]:
        """(knowledge base, document id, media type) of a valid header."""
        kb = v.check_kb_id(spec.knowledge_base_id)
        doc_id = v.document_id_for(spec.document_id, spec.file_name)
        media_type = v.check_media_type(spec.media_type)
        v.check_metadata(spec.metadata, self.settings.max_metadata_bytes)
        return kb, doc_id, media_type

    async def upload(
        self, tenant: str, spec: UploadSpec, pieces: AsyncIterator[bytes]
    ) -> UploadResult:
        """Reads the bytes, stores them with a QUEUED job and sends its task."""
        kb, doc_id, media_type = self.check_header(spec)
        await asyncio.to_thread(self.state.catalogue.get_kb, tenant, kb)  # before the bytes flow
        if not spec.document_id:
            doc_id = await asyncio.to_thread(self._derived_id, tenant, kb, doc_id, spec.file_name)
        with self.buffer.account() as take:
            content = await self._read(pieces, take)
            # One copy of the bytes only: hashed and stored from the buffer itself.
            data = memoryview(content)
            sha = hashlib.sha256(data).hexdigest()
            file_name = v.truncate_file_name(spec.file_name or doc_id)
            document = DocumentRecord(
                tenant=tenant,
                knowledge_base_id=kb,
                document_id=doc_id,
                file_name=file_name,
                media_type=media_type,
                size_bytes=len(data),
                content_sha256=sha,
                metadata=spec.metadata,
                version=v.document_version(sha, media_type, file_name, spec.metadata),
            )
            result = await asyncio.to_thread(
                self.state.book.register_upload, tenant, kb, document, data
            )
        if result.enqueue:
            await self._send(result.job)
        return result

    def _derived_id(self, tenant: str, kb: str, doc_id: str, file_name: str) -> str:
        """`doc_id` derived from `file_name`, or the id the rule before digests gave it when
        that document exists under the same file name and `doc_id` does not: uploading
        that file again still replaces it (and makes no second copy)."""
        legacy = v.legacy_document_id_for(file_name)
        if not legacy:
            return doc_id
        catalogue, name = self.state.catalogue, v.truncate_file_name(file_name)
        for candidate in (doc_id, legacy):
            try:
                found = catalogue.get_doc(tenant, kb, candidate)
            except NotFound:
                continue
            if candidate == doc_id or found.file_name == name:
                return candidate
        return doc_id

    async def _read(self, pieces: AsyncIterator[bytes], take: Callable[[int], None]) -> bytearray:
        """The upload's bytes, counted against the buffer, each piece within the
        idle timeout."""
        content = bytearray()
        limit, idle = self.settings.max_upload_bytes, self.settings.upload_idle_timeout_s
        iterator = aiter(pieces)
        while True:
            try:
                async with asyncio.timeout(idle):
                    piece = await anext(iterator)
            except StopAsyncIteration:
                break
            except TimeoutError:
                raise DeadlineExceeded(
                    f"the upload sent nothing for {idle:.0f} s", reason="UPLOAD_IDLE_TIMEOUT"
                ) from None
            if len(content) + len(piece) > limit:
                raise ResourceExhausted(
                    f"document exceeds the upload limit of {limit} bytes",
                    reason="DOCUMENT_TOO_LARGE",
                    metadata={"max_upload_bytes": limit},
                )
            take(len(piece))
            content += piece
        if not content:
            raise InvalidArgument("the document is empty", reason="EMPTY_DOCUMENT")
        return content

    async def _send(self, job: JobRecord) -> None:
        try:
            await asyncio.to_thread(self.queue.send, job.job_id)
        except Exception as exc:
            log.exception("cannot queue job %s", job.job_id)
            await asyncio.to_thread(
                self.state.runs.fail_job,
                job.job_id,
                ErrorRecord(
                    "UNAVAILABLE",
                    "QUEUE_UNAVAILABLE",
                    "the task queue was unavailable when the job was sent",
                    domain=GATEWAY_DOMAIN,
                ),
                from_states=(JobState.QUEUED,),
            )
            raise Unavailable(
                "the task queue is unavailable; upload again later", reason="QUEUE_UNAVAILABLE"
            ) from exc

    # --------------------------------------------------------------------- jobs

    async def get_job(self, tenant: str, job_id: str) -> JobRecord:
        return await asyncio.to_thread(self.state.book.get_job, v.check_job_id(job_id), tenant)

    async def list_jobs(
        self,
        tenant: str,
        kb_id: str,
        state: JobState | None,
        page_size: int,
        page_token: str,
        newest_first: bool = False,
    ) -> tuple[list[JobRecord], str]:
        kb = None
        if kb_id:
            kb = v.check_kb_id(kb_id)
            await asyncio.to_thread(self.state.catalogue.get_kb, tenant, kb)
        return await asyncio.to_thread(
            self.state.book.list_jobs, tenant, kb, state, page_size, page_token, newest_first
        )

    async def watch(self, tenant: str, job_id: str) -> AsyncIterator[JobRecord]:
        """The job now and on every change, until it ends."""
        assert self.aredis is not None and self.events is not None, "start() first"
        # Listening before the first read, so that read is also the watch's first: a change
        # after it wakes the loop (before, the record was read twice at the start).
        with self.events.watching(job_id) as changed:
            # Checks the id too (INVALID_ARGUMENT); NOT_FOUND, or another tenant's job.
            job = await self.get_job(tenant, job_id)
            with self.watches.take(tenant):
                async for seen in self._follow(tenant, job, changed):
                    yield seen

    async def _follow(
        self, tenant: str, job: JobRecord, changed: JobSignal
    ) -> AsyncIterator[JobRecord]:
        assert self.aredis is not None
        key = self.state.db.keys.job(job.job_id)
        last = None
        while True:
            seen = _visible(job)
            if seen != last:
                yield job
                last = seen
            if not job.active:
                return
            await changed.wait()
            changed.clear()  # before the read: no change slips between the two
            job = job_of(await self.aredis.hgetall(key), job.job_id, tenant)

    async def cancel(self, tenant: str, job_id: str) -> JobRecord:
        return await asyncio.to_thread(self.state.book.cancel_job, tenant, v.check_job_id(job_id))

    async def retry(self, tenant: str, job_id: str) -> JobRecord:
        job = await asyncio.to_thread(self.state.book.retry_job, tenant, v.check_job_id(job_id))
        await asyncio.to_thread(self.queue.send, job.job_id)
        return job
