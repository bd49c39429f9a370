"""Job records for tests of the ingestion state (a real Redis behind `JobsState`)."""

from __future__ import annotations

import uuid

from services.jobs.records import DocumentRecord, JobRecord, KnowledgeBaseRecord
from services.jobs.state import JobsState


def uploaded_job(state: JobsState, content: bytes = b"# A\n\ntext") -> JobRecord:
    """A QUEUED upload job of `d.md` in knowledge base `kb` of a new tenant (no task sent)."""
    tenant = f"t{uuid.uuid4().hex[:8]}"
    state.catalogue.create_kb(
        KnowledgeBaseRecord(tenant=tenant, knowledge_base_id="kb", collection=f"c_{tenant}")
    )
    record = DocumentRecord(
        tenant=tenant,
        knowledge_base_id="kb",
        document_id="d.md",
        file_name="d.md",
        media_type="text/markdown",
        version="v",
    )
    return state.book.register_upload(tenant, "kb", record, content).job
