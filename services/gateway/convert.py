"""Records and internal messages → the public API's messages."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from ragmesh.common.v1 import common_pb2
from ragmesh.gateway.v1 import gateway_pb2 as pb
from ragmesh.generation.v1 import generation_pb2
from services.common.api import struct_from_dict, timestamp
from services.common.reasons import SANITIZED_CODES, public_message
from services.gateway.consistency import Report
from services.gateway.knowledge_bases import KnowledgeBaseView
from services.jobs.records import (
    DocumentRecord,
    DocumentState,
    JobRecord,
    JobState,
)

DOC_STATES = {
    DocumentState.PENDING: pb.DOCUMENT_STATE_PENDING,
    DocumentState.INDEXED: pb.DOCUMENT_STATE_INDEXED,
    DocumentState.FAILED: pb.DOCUMENT_STATE_FAILED,
}


def kb_to_pb(view: KnowledgeBaseView) -> pb.KnowledgeBase:
    rec, progress = view.record, view.reindex
    out = pb.KnowledgeBase(
        knowledge_base_id=rec.knowledge_base_id,
        description=rec.description,
        language=rec.language,  # type: ignore[arg-type]
        metric=rec.metric,  # type: ignore[arg-type]
        index_type=rec.index_type,  # type: ignore[arg-type]
        index_params=struct_from_dict(rec.index_params),
        embedding_model=rec.embedding_model,
        dimension=rec.dimension,
        document_count=view.document_count,
        chunk_count=rec.chunk_count,
        create_time=timestamp(rec.create_time),
        rerank=rec.rerank,
        answer_mode=rec.answer_mode,  # type: ignore[arg-type]
    )
    if progress is not None:
        out.reindex.CopyFrom(
            pb.ReindexStatus(
                collection=progress.collection,
                embedding_model=progress.model,
                documents_done=progress.done,
                documents_pending=progress.pending,
            )
        )
    return out


def job_to_pb(job: JobRecord) -> pb.IngestionJob:
    out = pb.IngestionJob(
        job_id=job.job_id,
        knowledge_base_id=job.knowledge_base_id,
        document_id=job.document_id,
        file_name=job.file_name,
        state=pb.JobState.Value(f"JOB_STATE_{job.state}"),
        chunks_done=job.chunks_done,
        chunks_total=job.chunks_total,
        attempt=job.attempt,
        deduplicated=job.deduplicated,
        create_time=timestamp(job.create_time),
        update_time=timestamp(job.update_time),
        start_time=timestamp(job.start_time),
        end_time=timestamp(job.end_time),
    )
    if job.state == JobState.RUNNING and job.stage is not None:
        out.stage = pb.JobStage.Value(f"JOB_STAGE_{job.stage}")
    if job.error is not None and job.state in (JobState.FAILED, JobState.CANCELLED):
        error = job.error
        message, metadata = error.message, error.metadata
        if error.code in SANITIZED_CODES:
            # A dependency's failure: its details (hosts, bodies) stay in the logs.
            what = public_message(error.code, error.reason)
            message, metadata = f"{what} (job {job.job_id}; see the worker's log)", {}
        out.error.CopyFrom(
            common_pb2.ErrorDetail(
                code=error.code,
                reason=error.reason,
                domain=error.domain,
                message=message,
                metadata=metadata,
            )
        )
    return out


def doc_to_pb(doc: DocumentRecord) -> pb.Document:
    return pb.Document(
        knowledge_base_id=doc.knowledge_base_id,
        document_id=doc.document_id,
        file_name=doc.file_name,
        media_type=doc.media_type,
        size_bytes=doc.size_bytes,
        content_sha256=doc.content_sha256,
        state=DOC_STATES.get(doc.state, pb.DOCUMENT_STATE_UNSPECIFIED),
        chunk_count=doc.chunk_count,
        metadata=struct_from_dict(doc.metadata),
        title=doc.title,
        last_job_id=doc.last_job_id,
        create_time=timestamp(doc.create_time),
        update_time=timestamp(doc.update_time),
    )


def citation_from_scored(scored: common_pb2.ScoredChunk, number: int = 0) -> common_pb2.Citation:
    """A retrieved chunk as the public citation message."""
    chunk = scored.chunk
    return common_pb2.Citation(
        chunk_id=chunk.id,
        document_id=chunk.document_id,
        file_name=chunk.source,
        title=chunk.title,
        heading_path=list(chunk.heading_path),
        text=chunk.text,
        chunk_index=chunk.chunk_index,
        start_offset=chunk.start_offset,
        end_offset=chunk.end_offset,
        score=scored.score,
        number=number,
        page_start=chunk.page_start,
        page_end=chunk.page_end,
        page_label=chunk.page_label,
    )


def cited_sources(
    citations: Iterable[generation_pb2.Citation], sources: Mapping[str, common_pb2.Citation]
) -> list[common_pb2.Citation]:
    """The generation service's [n] → passage id, as the cited sources (number
    and `cited` set). A passage id that was not sent is dropped."""
    out = []
    for c in citations:
        source = sources.get(c.passage_id)
        if source is None:
            continue
        cited = common_pb2.Citation()
        cited.CopyFrom(source)
        cited.number = c.number
        cited.cited = True
        out.append(cited)
    return out


def check_to_pb(report: Report) -> pb.CheckKnowledgeBaseResponse:
    return pb.CheckKnowledgeBaseResponse(
        findings=[
            pb.Finding(
                kind=pb.Inconsistency.Value(f"INCONSISTENCY_{f.kind}"),
                knowledge_base_id=f.knowledge_base_id,
                document_id=f.document_id,
                collection=f.collection,
                recorded_chunks=f.recorded_chunks,
                indexed_chunks=f.indexed_chunks,
                action=f.action,
                job_id=f.job_id,
            )
            for f in report.findings
        ],
        documents_checked=report.documents_checked,
        knowledge_bases_checked=report.knowledge_bases_checked,
        repaired=report.repaired,
    )
