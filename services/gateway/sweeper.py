"""The sweeper: finishes deletes that were interrupted (Milvus or the retrieval
service down, a gateway restarted mid-delete), drops the upload bytes of
FAILED/CANCELLED jobs after their retention and the records of ended jobs after
theirs. It runs on the replica that holds the reaper's lease, after each reaper
pass."""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass

from services.common.deadlines import Deadline
from services.common.errors import NotFound, ServiceError
from services.gateway.clients import Downstream
from services.gateway.documents import delete_document_chunks
from services.gateway.knowledge_bases import finish_kb_delete
from services.jobs.state import JobsState

log = logging.getLogger("ragmesh.sweeper")

# Time each repair gets (one document's chunks, one collection).
STEP_TIMEOUT_S = 30.0


@dataclass
class SweepResult:
    documents: int = 0
    knowledge_bases: int = 0
    expired_uploads: int = 0
    expired_jobs: int = 0
    failures: int = 0


class Sweeper:
    def __init__(
        self,
        state: JobsState,
        downstream: Downstream,
        retention_s: float,
        idle_s: float,
        *,
        job_retention_s: float = 0.0,
    ) -> None:
        self.state = state
        self.downstream = downstream
        self.retention_s = retention_s
        # Ended jobs' records (0: kept forever).
        self.job_retention_s = job_retention_s
        # A delete attempted less than this ago is left to whoever attempts it.
        self.idle_s = idle_s

    async def run_once(self) -> SweepResult:
        result = SweepResult()
        deletes = self.state.deletes
        for pending in await asyncio.to_thread(deletes.pending_docs, self.idle_s):
            try:
                kb = await asyncio.to_thread(
                    self.state.catalogue.get_kb, pending.tenant, pending.knowledge_base_id
                )
            except NotFound:  # its knowledge base went too: purged with it
                await asyncio.to_thread(
                    deletes.finish_doc_delete,
                    pending.tenant,
                    pending.knowledge_base_id,
                    pending.document_id,
                )
                continue
            try:
                collections = [c for c in (kb.collection, kb.reindex_collection) if c]
                await delete_document_chunks(
                    self.state,
                    self.downstream,
                    pending,
                    collections,
                    Deadline.after(STEP_TIMEOUT_S),
                )
                result.documents += 1
            except ServiceError as exc:
                result.failures += 1
                log.warning("cannot finish deleting %s yet: %s", pending.member, exc.reason)
        for pending_kb in await asyncio.to_thread(deletes.pending_kbs, self.idle_s):
            try:
                await finish_kb_delete(self.state, self.downstream, pending_kb, STEP_TIMEOUT_S)
                result.knowledge_bases += 1
            except ServiceError as exc:
                result.failures += 1
                log.warning("cannot finish deleting %s yet: %s", pending_kb.member, exc.reason)
        expired = await asyncio.to_thread(
            deletes.expire_retained_blobs, time.time() - self.retention_s
        )
        result.expired_uploads = len(expired)
        if self.job_retention_s > 0:
            now = time.time()
            gone = await asyncio.to_thread(
                deletes.expire_ended_jobs, now - self.job_retention_s, now
            )
            result.expired_jobs = len(gone)
        if result.documents or result.knowledge_bases or expired or result.expired_jobs:
            log.info("sweeper: %s", result)
        return result
