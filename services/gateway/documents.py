"""Documents: read, list, delete (record, then chunks under the document lock)."""

from __future__ import annotations

import asyncio
import time

from services.common.deadlines import Deadline
from services.common.errors import Unavailable
from services.gateway import validation as v
from services.gateway.clients import Downstream
from services.jobs.records import DocumentRecord
from services.jobs.state import JobsState

# Longest wait for a document's lock (a worker's upsert holds it briefly).
LOCK_WAIT_CAP_S = 60.0


class Documents:
    def __init__(self, state: JobsState, downstream: Downstream) -> None:
        self.state = state
        self.downstream = downstream

    async def get(self, tenant: str, kb_id: str, doc_id: str) -> DocumentRecord:
        kb, doc = v.check_kb_id(kb_id), v.check_document_id(doc_id)
        return await asyncio.to_thread(self.state.catalogue.get_doc, tenant, kb, doc)

    async def list(
        self, tenant: str, kb_id: str, page_size: int, page_token: str
    ) -> tuple[list[DocumentRecord], str]:
        kb = v.check_kb_id(kb_id)
        return await asyncio.to_thread(
            self.state.catalogue.list_docs, tenant, kb, page_size, page_token
        )

    async def delete(self, tenant: str, kb_id: str, doc_id: str, deadline: Deadline) -> None:
        kb, doc = v.check_kb_id(kb_id), v.check_document_id(doc_id)
        record = await asyncio.to_thread(self.state.catalogue.get_kb, tenant, kb)
        await asyncio.to_thread(self.state.book.delete_doc, tenant, kb, doc)
        # Under the document lock: a worker that has not yet seen the
        # cancellation cannot write chunks after this delete.
        lock = await self._lock(tenant, kb, doc, deadline)
        try:
            await self.downstream.delete_document_chunks(
                record.collection, doc, deadline.remaining()
            )
        finally:
            await asyncio.to_thread(self.state.locks.release, tenant, kb, doc, lock)

    async def _lock(self, tenant: str, kb: str, doc: str, deadline: Deadline) -> str:
        give_up = time.monotonic() + deadline.remaining(LOCK_WAIT_CAP_S)
        while True:
            token = await asyncio.to_thread(self.state.locks.acquire, tenant, kb, doc)
            if token is not None:
                return token
            if time.monotonic() > give_up:
                raise Unavailable(
                    "the document is being written; try again", reason="DOCUMENT_LOCKED"
                )
            await asyncio.sleep(0.05)
