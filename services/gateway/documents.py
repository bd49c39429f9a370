"""Documents: read, list, delete (hidden at once, chunks under the document
lock, then the record)."""

from __future__ import annotations

import asyncio
import contextlib
import time

from services.common.deadlines import Deadline
from services.common.errors import NotFound, Unavailable
from services.gateway import validation as v
from services.gateway.clients import Downstream
from services.jobs.deletes import PendingDoc
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
        """Hidden at once (DELETING), its job cancelled, its chunks deleted, then
        the record. Milvus down: UNAVAILABLE, the document stays hidden, and the
        sweeper (or this call again) finishes the delete."""
        kb, doc = v.check_kb_id(kb_id), v.check_document_id(doc_id)
        _, collection = await asyncio.to_thread(
            self.state.deletes.mark_doc_deleting, tenant, kb, doc
        )
        await delete_document_chunks(
            self.state, self.downstream, PendingDoc(tenant, kb, doc), collection, deadline
        )


async def delete_document_chunks(
    state: JobsState,
    downstream: Downstream,
    pending: PendingDoc,
    collection: str,
    deadline: Deadline,
) -> None:
    """The chunks of a DELETING document, under its lock (a worker that has not
    yet seen its job's cancellation cannot write after this), then its record."""
    tenant, kb, doc = pending.tenant, pending.knowledge_base_id, pending.document_id
    locks = state.locks
    give_up = time.monotonic() + deadline.remaining(LOCK_WAIT_CAP_S)
    while (token := await asyncio.to_thread(locks.acquire, tenant, kb, doc)) is None:
        if time.monotonic() > give_up:
            raise Unavailable(
                "the document is being written; it is hidden and will be deleted shortly",
                reason="DOCUMENT_LOCKED",
            )
        await asyncio.sleep(0.05)
    async with locks.hold_async(tenant, kb, doc, token):
        with contextlib.suppress(NotFound):  # the collection went with its knowledge base
            await downstream.delete_document_chunks(collection, doc, deadline.remaining())
    await asyncio.to_thread(state.deletes.finish_doc_delete, tenant, kb, doc)
