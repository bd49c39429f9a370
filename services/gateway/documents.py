"""Documents: read, list, delete (hidden at once, chunks under the document
lock, then the record)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass

from services.common.deadlines import Deadline
from services.common.errors import FailedPrecondition, InvalidArgument, NotFound, Unavailable
from services.gateway import validation as v
from services.gateway.clients import Downstream
from services.jobs.blobs import original_key, text_key
from services.jobs.deletes import PendingDoc
from services.jobs.records import DocumentRecord
from services.jobs.state import JobsState

KeyOf = Callable[[str, str, str, str], str]
# Longest wait for a document's lock (a worker's upsert holds it briefly).
LOCK_WAIT_CAP_S = 60.0


@dataclass
class TextPage:
    text: str
    offset: int
    total_chars: int
    next_offset: int
    version: str


class Documents:
    def __init__(
        self, state: JobsState, downstream: Downstream, text_page_chars: int = 65_536
    ) -> None:
        self.state = state
        self.downstream = downstream
        self.text_page_chars = text_page_chars

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

    async def _kept(
        self, tenant: str, kb_id: str, doc_id: str, key_of: KeyOf
    ) -> tuple[DocumentRecord, bytes]:
        doc = await self.get(tenant, kb_id, doc_id)
        originals = self.state.originals
        data = None
        if originals is not None and doc.original_version:
            key = key_of(tenant, doc.knowledge_base_id, doc.document_id, doc.original_version)
            data = await asyncio.to_thread(originals.get, key)
        if data is None:
            raise FailedPrecondition(
                f"no original of document {doc_id!r} is kept (not indexed yet, indexed before "
                "originals were kept, or RAGMESH_KEEP_ORIGINALS is off)",
                reason="ORIGINAL_NOT_KEPT",
                metadata={"document_id": doc_id},
            )
        return doc, data

    async def text(
        self, tenant: str, kb_id: str, doc_id: str, offset: int, max_chars: int
    ) -> TextPage:
        """A page of the document's normalised text (what offsets refer to)."""
        if offset < 0 or max_chars < 0:
            raise InvalidArgument(
                "offset and max_chars must not be negative", reason="INVALID_TEXT_RANGE"
            )
        doc, data = await self._kept(tenant, kb_id, doc_id, text_key)
        text = data.decode()
        size = min(max_chars or self.text_page_chars, self.text_page_chars)
        page = text[offset : offset + size]
        end = offset + len(page)
        return TextPage(
            page, offset, len(text), end if end < len(text) else 0, doc.original_version
        )

    async def original(self, tenant: str, kb_id: str, doc_id: str) -> tuple[DocumentRecord, bytes]:
        """The document's original bytes as uploaded."""
        return await self._kept(tenant, kb_id, doc_id, original_key)

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
    collections: list[str],
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
        for collection in collections:
            with contextlib.suppress(NotFound):  # the collection went with its knowledge base
                await downstream.delete_document_chunks(collection, doc, deadline.remaining())
    await asyncio.to_thread(state.deletes.finish_doc_delete, tenant, kb, doc)
