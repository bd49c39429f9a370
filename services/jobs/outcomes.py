"""Small values and errors of the job state machine, shared by its modules."""

from __future__ import annotations

from dataclasses import dataclass

from services.common.errors import NotFound, Unavailable
from services.jobs.records import DocumentRecord, DocumentState, ErrorRecord, JobRecord, JobState

GATEWAY_DOMAIN = "gateway.ragmesh"


def job_not_found(job_id: str) -> NotFound:
    return NotFound(
        f"ingestion job {job_id!r} not found", reason="JOB_NOT_FOUND", metadata={"job_id": job_id}
    )


def check_not_deleting(doc: DocumentRecord | None) -> None:
    if doc is not None and doc.state == DocumentState.DELETING:
        raise Unavailable(
            f"document {doc.document_id!r} is being deleted; upload it again once it is gone",
            reason="DOCUMENT_BEING_DELETED",
            retry_after_s=2.0,
        )


def cancelled(reason: str, message: str) -> ErrorRecord:
    return ErrorRecord("CANCELLED", reason, message, domain=GATEWAY_DOMAIN)


@dataclass(frozen=True)
class DocOutcome:
    """How a document's last job ended, for its record."""

    state: JobState
    now: float
    chunk_count: int | None
    title: str | None
    original_bytes: int | None
    media_type: str | None = None


@dataclass
class UploadResult:
    job: JobRecord
    document: DocumentRecord
    #: whether a task must be sent (False: deduplicated or already in progress)
    enqueue: bool
    superseded_job_id: str = ""
