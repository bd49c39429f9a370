"""Per-tenant limits on what a tenant keeps in a shared deployment: knowledge
bases, documents and the bytes of uploads held in the blob store.

The counts live in a hash per tenant ({p}:{t}:usage: `documents`,
`stored_bytes`), changed in the same transactions as the records they count,
so they never drift from them. 0 means no limit.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from services.common.errors import ResourceExhausted
from services.jobs.keys import Keys

DOCUMENTS = "documents"
STORED_BYTES = "stored_bytes"


@dataclass(frozen=True)
class Quotas:
    max_knowledge_bases: int = 0
    max_documents: int = 0
    max_stored_bytes: int = 0


@dataclass(frozen=True)
class Usage:
    documents: int = 0
    stored_bytes: int = 0

    @classmethod
    def read(cls, pipe: Any, keys: Keys, tenant: str) -> Usage:
        docs, stored = pipe.hmget(keys.usage(tenant), DOCUMENTS, STORED_BYTES)
        return cls(int(docs or 0), int(stored or 0))


def check_knowledge_bases(quotas: Quotas, existing: int) -> None:
    if quotas.max_knowledge_bases and existing >= quotas.max_knowledge_bases:
        raise ResourceExhausted(
            f"the tenant has {existing} knowledge bases, its limit; delete one first",
            reason="KNOWLEDGE_BASE_QUOTA_EXCEEDED",
            metadata={"limit": quotas.max_knowledge_bases},
        )


def check_upload(quotas: Quotas, usage: Usage, size: int, new_document: bool) -> None:
    """The upload fits the tenant's document count and stored bytes."""
    if new_document and quotas.max_documents and usage.documents >= quotas.max_documents:
        raise ResourceExhausted(
            f"the tenant has {usage.documents} documents, its limit; delete some first",
            reason="DOCUMENT_QUOTA_EXCEEDED",
            metadata={"limit": quotas.max_documents},
        )
    if quotas.max_stored_bytes and usage.stored_bytes + size > quotas.max_stored_bytes:
        raise ResourceExhausted(
            f"the upload ({size} bytes) would take the tenant's stored upload bytes over "
            f"its limit of {quotas.max_stored_bytes}; wait for queued jobs to finish or "
            "delete documents",
            reason="STORAGE_QUOTA_EXCEEDED",
            metadata={"limit": quotas.max_stored_bytes, "used": usage.stored_bytes},
        )


def queue_usage_change(
    pipe: Any, keys: Keys, tenant: str, *, documents: int = 0, stored_bytes: int = 0
) -> None:
    """Queue the change of a tenant's counts (pipe in MULTI)."""
    if documents:
        pipe.hincrby(keys.usage(tenant), DOCUMENTS, documents)
    if stored_bytes:
        pipe.hincrby(keys.usage(tenant), STORED_BYTES, stored_bytes)
