"""`kb check`: the records (Redis) compared with the index (Milvus), and, with
`repair`, each difference fixed — a missing collection made again and its
documents re-ingested from their kept originals, documents whose chunks differ
re-ingested, chunks and collections nobody owns deleted. Repairs run as
ordinary ingestion jobs (REPAIR), visible and retryable like uploads.

Documents with a job in flight, or being deleted, are not judged: their index
is moving on purpose.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass, field

from ragmesh.retrieval.v1 import retrieval_pb2
from services.common.deadlines import Deadline
from services.common.errors import NotFound
from services.gateway.clients import Downstream
from services.gateway.knowledge_bases import KB_LABEL, TENANT_LABEL, collection_request
from services.jobs.queue import IngestionQueue
from services.jobs.records import (
    DocumentRecord,
    DocumentState,
    JobKind,
    JobRecord,
    KnowledgeBaseRecord,
)
from services.jobs.state import JobsState

log = logging.getLogger("ragmesh.consistency")

COLLECTION_MISSING = "COLLECTION_MISSING"
CHUNK_COUNT = "CHUNK_COUNT"
VERSION = "VERSION"
ORPHAN_CHUNKS = "ORPHAN_CHUNKS"
ORPHAN_COLLECTION = "ORPHAN_COLLECTION"


@dataclass
class Finding:
    kind: str
    knowledge_base_id: str
    collection: str
    document_id: str = ""
    recorded_chunks: int = 0
    indexed_chunks: int = 0
    action: str = ""
    job_id: str = ""


@dataclass
class Report:
    findings: list[Finding] = field(default_factory=list)
    documents_checked: int = 0
    knowledge_bases_checked: int = 0
    repaired: bool = False


class Checker:
    def __init__(self, state: JobsState, downstream: Downstream, queue: IngestionQueue) -> None:
        self.state = state
        self.downstream = downstream
        self.queue = queue

    async def check(
        self, tenant: str, kb_id: str | None, repair: bool, deadline: Deadline
    ) -> Report:
        report = Report(repaired=repair)
        catalogue = self.state.catalogue
        if kb_id:
            kbs = [await asyncio.to_thread(catalogue.get_kb, tenant, kb_id)]
        else:
            kbs = await self._all_kbs(tenant)
        for record in kbs:
            report.knowledge_bases_checked += 1
            await self._check_kb(record, repair, deadline, report)
        await self._check_orphan_collections(tenant, kb_id, kbs, repair, deadline, report)
        return report

    async def _all_kbs(self, tenant: str) -> list[KnowledgeBaseRecord]:
        found: list[KnowledgeBaseRecord] = []
        token = ""
        while True:
            page, token = await asyncio.to_thread(
                self.state.catalogue.list_kbs, tenant, 1000, token
            )
            found.extend(page)
            if not token:
                return found

    async def _documents(self, record: KnowledgeBaseRecord) -> list[DocumentRecord]:
        k = self.state.db.keys
        ids = [
            m.decode()
            for m in await asyncio.to_thread(
                self.state.db.r.zrange, k.docs(record.tenant, record.knowledge_base_id), 0, -1
            )
        ]
        raws = await asyncio.to_thread(
            self.state.db.hashes,
            [k.doc(record.tenant, record.knowledge_base_id, d) for d in ids],
        )
        return [DocumentRecord.from_hash(r) for r in raws if r]

    async def _busy(self, docs: list[DocumentRecord]) -> set[str]:
        """Documents whose index is moving on purpose (a job in flight, a delete)."""
        k = self.state.db.keys
        raws = await asyncio.to_thread(
            self.state.db.hashes, [k.job(d.last_job_id) for d in docs if d.last_job_id]
        )
        active = {
            JobRecord.from_hash(r).document_id for r in raws if r and JobRecord.from_hash(r).active
        }
        return active | {d.document_id for d in docs if d.state == DocumentState.DELETING}

    async def _check_kb(
        self, record: KnowledgeBaseRecord, repair: bool, deadline: Deadline, report: Report
    ) -> None:
        kb, collection = record.knowledge_base_id, record.collection
        docs = await self._documents(record)
        report.documents_checked += len(docs)
        try:
            indexed = await self.downstream.list_documents(collection, deadline.remaining())
        except NotFound:
            finding = Finding(COLLECTION_MISSING, kb, collection, action="re-create collection")
            report.findings.append(finding)
            if repair:
                await self.downstream.create_collection(
                    collection_request(record, collection, record.dimension),
                    deadline.remaining(),
                )
            for doc in docs:
                if doc.state == DocumentState.INDEXED and doc.chunk_count:
                    missing = Finding(CHUNK_COUNT, kb, collection, doc.document_id, doc.chunk_count)
                    report.findings.append(await self._reingest(record, doc, missing, repair))
            return
        busy = await self._busy(docs)
        recorded = {d.document_id: d for d in docs}
        for doc in docs:
            if doc.document_id in busy or doc.state == DocumentState.PENDING:
                continue
            summary = indexed.get(doc.document_id)
            kind = _difference(doc, summary)
            if kind:
                count = summary.chunk_count if summary is not None else 0
                finding = Finding(kind, kb, collection, doc.document_id, doc.chunk_count, count)
                report.findings.append(await self._reingest(record, doc, finding, repair))
        for doc_id, summary in sorted(indexed.items()):
            if doc_id in recorded:
                continue
            finding = Finding(
                ORPHAN_CHUNKS,
                kb,
                collection,
                doc_id,
                indexed_chunks=summary.chunk_count,
                action="delete chunks",
            )
            report.findings.append(finding)
            if repair:
                await self.downstream.delete_document_chunks(
                    collection, doc_id, deadline.remaining()
                )

    async def _reingest(
        self, record: KnowledgeBaseRecord, doc: DocumentRecord, finding: Finding, repair: bool
    ) -> Finding:
        if not doc.original_bytes:
            finding.action = "no original kept: upload the document again"
            return finding
        finding.action = "re-ingest from the original"
        if repair:
            job = await asyncio.to_thread(
                self.state.rebuilds.register_from_original,
                record.tenant,
                record.knowledge_base_id,
                doc.document_id,
                JobKind.REPAIR,
            )
            if job is None:
                finding.action = "skipped: the document is busy"
            else:
                await asyncio.to_thread(self.queue.send, job.job_id)
                finding.job_id = job.job_id
        return finding

    async def _check_orphan_collections(
        self,
        tenant: str,
        kb_id: str | None,
        kbs: list[KnowledgeBaseRecord],
        repair: bool,
        deadline: Deadline,
        report: Report,
    ) -> None:
        """Collections labelled with this tenant (and knowledge base) that no live
        knowledge base uses and no pending delete will drop."""
        in_use = {c for r in kbs for c in (r.collection, r.reindex_collection) if c}
        if kb_id is None:
            pending = await asyncio.to_thread(self.state.deletes.pending_kbs_of_tenant, tenant)
            in_use |= {p.collection for p in pending}
        else:
            pending = await asyncio.to_thread(self.state.deletes.pending_kbs_of, tenant, kb_id)
            in_use |= {p.collection for p in pending}
        for col in await self.downstream.list_collections(deadline.remaining()):
            labels = dict(col.labels)
            if labels.get(TENANT_LABEL) != tenant or col.name in in_use:
                continue
            if kb_id is not None and labels.get(KB_LABEL) != kb_id:
                continue
            finding = Finding(
                ORPHAN_COLLECTION,
                labels.get(KB_LABEL, ""),
                col.name,
                indexed_chunks=int(col.chunk_count),
                action="drop collection",
            )
            report.findings.append(finding)
            if repair:
                with contextlib.suppress(NotFound):
                    await self.downstream.delete_collection(col.name, deadline.remaining())


def _difference(doc: DocumentRecord, summary: retrieval_pb2.DocumentSummary | None) -> str:
    """How the index differs from a document's record ("" when it does not).

    INDEXED: exactly `chunk_count` chunks of its version. FAILED (its last upload
    did not get through): no chunks, or those of the last version indexed.
    """
    count = summary.chunk_count if summary is not None else 0
    version = summary.document_version if summary is not None else ""
    if doc.state == DocumentState.INDEXED:
        if count == doc.chunk_count and (count == 0 or version == doc.version):
            return ""
        return VERSION if count and version != doc.version else CHUNK_COUNT
    if count == 0 or version == doc.original_version:
        return ""
    return VERSION
