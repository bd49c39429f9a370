"""Records and internal messages → the public API's messages."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from ragmesh.common.v1 import common_pb2
from ragmesh.gateway.v1 import gateway_pb2 as pb
from ragmesh.generation.v1 import generation_pb2
from services.common.api import struct_from_dict, timestamp
from services.jobs.records import (
    DocumentRecord,
    DocumentState,
    JobRecord,
    JobState,
    KnowledgeBaseRecord,
)

DOC_STATES = {
    DocumentState.PENDING: pb.DOCUMENT_STATE_PENDING,
    DocumentState.INDEXED: pb.DOCUMENT_STATE_INDEXED,
    DocumentState.FAILED: pb.DOCUMENT_STATE_FAILED,
}


def kb_to_pb(rec: KnowledgeBaseRecord, document_count: int) -> pb.KnowledgeBase:
    return pb.KnowledgeBase(
        knowledge_base_id=rec.knowledge_base_id,
        description=rec.description,
        language=rec.language,  # type: ignore[arg-type]
        metric=rec.metric,  # type: ignore[arg-type]
        index_type=rec.index_type,  # type: ignore[arg-type]
        index_params=struct_from_dict(rec.index_params),
        embedding_model=rec.embedding_model,
        dimension=rec.dimension,
        document_count=document_count,
        chunk_count=rec.chunk_count,
        create_time=timestamp(rec.create_time),
    )


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
        out.error.CopyFrom(
            common_pb2.ErrorDetail(
                code=job.error.code,
                reason=job.error.reason,
                domain=job.error.domain,
                message=job.error.message,
                metadata=job.error.metadata,
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
