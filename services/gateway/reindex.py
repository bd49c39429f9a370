"""`kb reindex`: every document embedded again from its kept original into a new
collection (a new generation), while searches keep using the old one; the
knowledge base switches to the new collection in one transaction when every
document is in, and the old collection is dropped.

The gateway's housekeeping moves it along (`reconcile`): documents uploaded
meanwhile, or whose job failed for a passing reason, get a new job; a document
that fails `MAX_ATTEMPTS` times aborts the re-index (the new collection is
dropped, the knowledge base keeps its old one).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass

from services.common.deadlines import Deadline
from services.common.errors import FailedPrecondition, NotFound, ServiceError
from services.common.models import canonical_model_name
from services.gateway import validation as v
from services.gateway.clients import Downstream
from services.gateway.knowledge_bases import collection_request
from services.jobs.queue import IngestionQueue
from services.jobs.records import DocumentRecord, DocumentState, JobKind
from services.jobs.state import JobsState

log = logging.getLogger("ragmesh.reindex")

MAX_ATTEMPTS = 3
STEP_TIMEOUT_S = 30.0


@dataclass
class Started:
    collection: str
    job_ids: list[str]
    documents: int


class Reindexer:
    def __init__(self, state: JobsState, downstream: Downstream, queue: IngestionQueue) -> None:
        self.state = state
        self.downstream = downstream
        self.queue = queue
        self.attempts: dict[tuple[str, str, str], int] = {}

    async def start(self, tenant: str, kb_id: str, deadline: Deadline, model: str = "") -> Started:
        """Re-embed every document into a new collection, with `model` (name or alias)
        if given: the new collection has that model's dimension, and the knowledge base
        switches to it, and to the model, only once every document is in."""
        kb = v.check_kb_id(kb_id)
        record = await asyncio.to_thread(self.state.catalogue.get_kb, tenant, kb)
        if record.reindex_collection:
            raise FailedPrecondition(
                f"knowledge base {kb!r} is being re-indexed already",
                reason="REINDEX_IN_PROGRESS",
                metadata={"knowledge_base_id": kb},
            )
        docs = await self._documents(tenant, kb)
        without = [d.document_id for d in docs if _needs_original(d)]
        if without:
            raise FailedPrecondition(
                f"{len(without)} documents have no kept original (e.g. {without[0]!r}: indexed "
                "before originals were kept); upload them again, then re-index",
                reason="ORIGINALS_MISSING",
                metadata={"documents": len(without), "example": without[0]},
            )
        model_name, dimension = record.embedding_model, record.dimension
        if model.strip():
            info = await self.downstream.model_info(
                deadline.remaining(), canonical_model_name(model)
            )
            model_name, dimension = info.model, info.dimension
        name = v.collection_name(tenant, kb, v.new_generation())
        await self.downstream.create_collection(
            collection_request(record, name, dimension), deadline.remaining()
        )
        try:
            todo = await asyncio.to_thread(
                self.state.rebuilds.start_reindex,
                tenant,
                kb,
                name,
                model_name,
                dimension,
            )
        except ServiceError:
            with contextlib.suppress(ServiceError):
                await self.downstream.delete_collection(name, deadline.remaining())
            raise
        job_ids = [j for d in todo if (j := await self._queue(tenant, kb, d))]
        await self.reconcile_one(tenant, kb)  # nothing to do at all: switch now
        return Started(name, job_ids, len(todo))

    async def _documents(self, tenant: str, kb: str) -> list[DocumentRecord]:
        found: list[DocumentRecord] = []
        token = ""
        while True:
            page, token = await asyncio.to_thread(
                self.state.catalogue.list_docs, tenant, kb, 1000, token
            )
            found.extend(page)
            if not token:
                return found

    async def _queue(self, tenant: str, kb: str, doc_id: str) -> str:
        job = await asyncio.to_thread(
            self.state.rebuilds.register_from_original, tenant, kb, doc_id, JobKind.REINDEX
        )
        if job is None:
            return ""
        await asyncio.to_thread(self.queue.send, job.job_id)
        return job.job_id

    async def reconcile(self) -> None:
        for tenant, kb in await asyncio.to_thread(self.state.rebuilds.in_progress):
            try:
                await self.reconcile_one(tenant, kb)
            except ServiceError as exc:
                log.warning("re-index of %s/%s: %s", tenant, kb, exc.reason)

    async def reconcile_one(self, tenant: str, kb: str) -> None:
        rebuilds = self.state.rebuilds
        for doc_id in await asyncio.to_thread(rebuilds.needing_jobs, tenant, kb):
            key = (tenant, kb, doc_id)
            self.attempts[key] = self.attempts.get(key, 0) + 1
            if self.attempts[key] > MAX_ATTEMPTS:
                await self._abort(tenant, kb, doc_id)
                return
            await self._queue(tenant, kb, doc_id)
        old = await asyncio.to_thread(rebuilds.switch_if_done, tenant, kb)
        if old:
            log.info("knowledge base %s/%s re-indexed; %s will be dropped", tenant, kb, old)
            self.attempts = {k: n for k, n in self.attempts.items() if k[:2] != (tenant, kb)}

    async def _abort(self, tenant: str, kb: str, doc_id: str) -> None:
        collection = await asyncio.to_thread(self.state.rebuilds.abort_reindex, tenant, kb)
        log.error(
            "re-index of %s/%s abandoned: document %s failed %d times; %s will be dropped",
            tenant,
            kb,
            doc_id,
            MAX_ATTEMPTS,
            collection,
        )
        self.attempts = {k: n for k, n in self.attempts.items() if k[:2] != (tenant, kb)}

    async def drop_unused(self, idle_s: float) -> int:
        """Drops the collections a switch (or an abort) left behind."""
        dropped = 0
        for name in await asyncio.to_thread(self.state.rebuilds.collections_to_drop, idle_s):
            try:
                with contextlib.suppress(NotFound):
                    await self.downstream.delete_collection(name, STEP_TIMEOUT_S)
            except ServiceError as exc:
                log.warning("cannot drop %s yet: %s", name, exc.reason)
                continue
            await asyncio.to_thread(self.state.rebuilds.dropped, name)
            dropped += 1
        return dropped


def _needs_original(doc: DocumentRecord) -> bool:
    """An indexed document whose original was not kept cannot be re-indexed."""
    return doc.state == DocumentState.INDEXED and doc.chunk_count > 0 and not doc.original_bytes
