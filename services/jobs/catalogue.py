"""The catalogue: knowledge bases and documents of every tenant, in Redis.

Reads and the writes that concern one record. What moves a job along with its
document is the job book's (services.jobs.jobbook); deletes are
services.jobs.deletes. Documents being deleted are invisible here.
"""

from __future__ import annotations

from typing import Any

from services.common.errors import AlreadyExists, NotFound
from services.jobs.db import RedisDb
from services.jobs.quotas import Quotas, check_knowledge_bases
from services.jobs.records import DocumentRecord, DocumentState, KnowledgeBaseRecord


def kb_not_found(kb: str) -> NotFound:
    return NotFound(
        f"knowledge base {kb!r} not found",
        reason="KNOWLEDGE_BASE_NOT_FOUND",
        metadata={"knowledge_base_id": kb},
    )


def doc_not_found(kb: str, doc: str) -> NotFound:
    return NotFound(
        f"document {doc!r} not found in knowledge base {kb!r}",
        reason="DOCUMENT_NOT_FOUND",
        metadata={"knowledge_base_id": kb, "document_id": doc},
    )


class Catalogue:
    def __init__(self, db: RedisDb, quotas: Quotas | None = None) -> None:
        self.db = db
        self.keys = db.keys
        self.quotas = quotas or Quotas()

    # ---------------------------------------------------------- knowledge bases

    def create_kb(self, record: KnowledgeBaseRecord) -> KnowledgeBaseRecord:
        key = self.keys.kb(record.tenant, record.knowledge_base_id)

        def body(pipe: Any) -> KnowledgeBaseRecord:
            if pipe.exists(key):
                raise AlreadyExists(
                    f"knowledge base {record.knowledge_base_id!r} already exists",
                    reason="KNOWLEDGE_BASE_EXISTS",
                )
            check_knowledge_bases(self.quotas, int(pipe.zcard(self.keys.kbs(record.tenant))))
            pipe.multi()
            pipe.hset(key, mapping=record.to_hash())
            pipe.zadd(self.keys.kbs(record.tenant), {record.knowledge_base_id: 0})
            return record

        return self.db.txn(body, key, self.keys.kbs(record.tenant))

    def discard_kb(self, tenant: str, kb: str) -> None:
        """Undoes a create whose collection could not be made (nothing else
        exists yet: no documents, no jobs, no collection)."""
        pipe = self.db.r.pipeline(transaction=True)
        pipe.delete(self.keys.kb(tenant, kb))
        pipe.zrem(self.keys.kbs(tenant), kb)
        pipe.execute()

    def get_kb(self, tenant: str, kb: str) -> KnowledgeBaseRecord:
        raw = self.db.r.hgetall(self.keys.kb(tenant, kb))
        if not raw:
            raise kb_not_found(kb)
        rec: KnowledgeBaseRecord = KnowledgeBaseRecord.from_hash(raw)
        return rec

    def update_kb(self, tenant: str, kb: str, **fields: object) -> None:
        self.db.r.hset(self.keys.kb(tenant, kb), mapping={k: str(v) for k, v in fields.items()})

    def document_count(self, tenant: str, kb: str) -> int:
        """Documents the tenant sees (those being deleted are not)."""
        pipe = self.db.r.pipeline(transaction=False)
        pipe.zcard(self.keys.docs(tenant, kb))
        pipe.scard(self.keys.deleting_docs_of(tenant, kb))
        listed, deleting = pipe.execute()
        return max(0, int(listed) - int(deleting))

    def list_kbs(
        self, tenant: str, page_size: int, page_token: str
    ) -> tuple[list[KnowledgeBaseRecord], str]:
        ids, nxt = self.db.page(self.keys.kbs(tenant), page_size, page_token)
        raws = self.db.hashes(self.keys.kb(tenant, kb) for kb in ids)
        return [KnowledgeBaseRecord.from_hash(r) for r in raws if r], nxt

    def tenants(self) -> list[str]:
        """Tenants that have (or had) knowledge bases."""
        pattern = f"{self.keys.prefix}:*:kbs"
        found = {
            key.decode()[len(self.keys.prefix) + 1 : -len(":kbs")]
            for key in self.db.r.scan_iter(match=pattern, count=1000)
        }
        return sorted(found)

    # ---------------------------------------------------------------- documents

    def get_doc(self, tenant: str, kb: str, doc: str) -> DocumentRecord:
        """The document; one being deleted is NOT_FOUND already."""
        raw = self.db.r.hgetall(self.keys.doc(tenant, kb, doc))
        rec: DocumentRecord | None = DocumentRecord.from_hash(raw) if raw else None
        if rec is None or rec.state == DocumentState.DELETING:
            self.get_kb(tenant, kb)
            raise doc_not_found(kb, doc)
        return rec

    def list_docs(
        self, tenant: str, kb: str, page_size: int, page_token: str
    ) -> tuple[list[DocumentRecord], str]:
        self.get_kb(tenant, kb)
        ids, nxt = self.db.page(self.keys.docs(tenant, kb), page_size, page_token)
        raws = self.db.hashes(self.keys.doc(tenant, kb, d) for d in ids)
        docs = [DocumentRecord.from_hash(r) for r in raws if r]
        return [d for d in docs if d.state != DocumentState.DELETING], nxt
