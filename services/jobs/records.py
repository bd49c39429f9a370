"""Plain records of the ingestion state: knowledge bases, documents, jobs.

They are stored as Redis hashes of strings; `to_hash` and `from_hash` are the
only place that knows the encoding. States are `StrEnum`s: they compare equal
to the strings stored in Redis (and used by the Lua scripts).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from enum import StrEnum
from typing import Any


class JobState(StrEnum):
    QUEUED = "QUEUED"
    RUNNING = "RUNNING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"

    @property
    def active(self) -> bool:
        return self in ACTIVE_STATES

    @property
    def terminal(self) -> bool:
        return not self.active


class JobStage(StrEnum):
    PARSING = "PARSING"
    CHUNKING = "CHUNKING"
    EMBEDDING = "EMBEDDING"
    INDEXING = "INDEXING"


class JobKind(StrEnum):
    # An upload: its bytes wait in the blob store for the job.
    UPLOAD = "UPLOAD"
    # A document ingested again from its kept original (kb check --repair).
    REPAIR = "REPAIR"
    # A document embedded from its original into a new collection (kb reindex);
    # the document's record is not touched until the knowledge base switches.
    REINDEX = "REINDEX"


class DocumentState(StrEnum):
    # Waiting for or being ingested.
    PENDING = "PENDING"
    INDEXED = "INDEXED"
    FAILED = "FAILED"
    # Hidden from Search, Ask and lists while its chunks are deleted; the record
    # goes once they are (services.jobs.deletes).
    DELETING = "DELETING"


ACTIVE_STATES = (JobState.QUEUED, JobState.RUNNING)
TERMINAL_STATES = (JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED)


@dataclass
class ErrorRecord:
    """Why a job failed: a gRPC code name, an UPPER_SNAKE reason, a message."""

    code: str
    reason: str
    message: str
    domain: str = "worker.ragmesh"
    metadata: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, raw: str) -> ErrorRecord | None:
        if not raw:
            return None
        data = json.loads(raw)
        return cls(**data)


def _encode(value: Any) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, dict | list):
        return json.dumps(value, sort_keys=True)
    if isinstance(value, ErrorRecord):
        return value.to_json()
    if value is None:
        return ""
    return str(value)


# Field types (as written in the annotations) that decode to an enum member;
# an empty string decodes to the field's default.
_ENUMS: dict[str, type[StrEnum]] = {
    "JobKind": JobKind,
    "JobState": JobState,
    "DocumentState": DocumentState,
    "JobStage | None": JobStage,
}


def _decode(kind: str, value: str) -> Any:
    if kind == "int":
        return int(float(value or 0))
    if kind == "float":
        return float(value or 0)
    if kind == "bool":
        return value == "1"
    if kind.startswith("dict"):
        return json.loads(value) if value else {}
    if kind.startswith("ErrorRecord"):
        return ErrorRecord.from_json(value)
    if kind in _ENUMS:
        return _ENUMS[kind](value) if value else None
    return value


class _Record:
    """Hash (de)serialisation driven by the dataclass field types."""

    def to_hash(self) -> dict[str, str]:
        return {f.name: _encode(getattr(self, f.name)) for f in fields(self)}  # type: ignore[arg-type]

    @classmethod
    def from_hash(cls, raw: Mapping[bytes, bytes] | Mapping[str, str] | Mapping[Any, Any]) -> Any:
        data = {
            (k.decode() if isinstance(k, bytes) else k): (v.decode() if isinstance(v, bytes) else v)
            for k, v in raw.items()
        }
        kwargs: dict[str, Any] = {}
        for f in fields(cls):  # type: ignore[arg-type]
            if f.name not in data:
                continue
            value = _decode(str(f.type), data[f.name])
            if value is not None or f.default is None:
                kwargs[f.name] = value
        return cls(**kwargs)


@dataclass
class KnowledgeBaseRecord(_Record):
    tenant: str
    knowledge_base_id: str
    collection: str
    description: str = ""
    language: int = 0
    metric: int = 0
    index_type: int = 0
    index_params: dict[str, Any] = field(default_factory=dict)
    embedding_model: str = ""
    dimension: int = 0
    chunk_count: int = 0
    create_time: float = 0.0
    # While `kb reindex` runs: the collection being filled, with its model.
    reindex_collection: str = ""
    reindex_model: str = ""
    reindex_dimension: int = 0
    # Search and Ask rerank by default (requests may say otherwise).
    rerank: bool = False
    # Ask's default answer mode (gateway AnswerMode number; 0: AUTO).
    answer_mode: int = 0


@dataclass
class DocumentRecord(_Record):
    tenant: str
    knowledge_base_id: str
    document_id: str
    file_name: str = ""
    media_type: str = ""
    size_bytes: int = 0
    content_sha256: str = ""
    # Hash of the bytes and of everything else stored with the chunks: equal
    # versions are the same index content (deduplication, chunk versions).
    version: str = ""
    state: DocumentState = DocumentState.PENDING
    chunk_count: int = 0
    metadata: dict[str, Any] = field(default_factory=dict)
    title: str = ""
    last_job_id: str = ""
    create_time: float = 0.0
    update_time: float = 0.0
    # The version whose original (and normalised text) is kept, and its size.
    original_version: str = ""
    original_bytes: int = 0


@dataclass
class JobRecord(_Record):
    job_id: str
    tenant: str
    knowledge_base_id: str
    document_id: str
    file_name: str = ""
    media_type: str = ""
    version: str = ""
    state: JobState = JobState.QUEUED
    kind: JobKind = JobKind.UPLOAD
    # Set while RUNNING.
    stage: JobStage | None = None
    chunks_done: int = 0
    chunks_total: int = 0
    error: ErrorRecord | None = None
    attempt: int = 0
    # Times the worker running it vanished (reaper re-queues); bounded by
    # RAGMESH_GATEWAY_JOB_MAX_ATTEMPTS.
    lost_count: int = 0
    # The knowledge base's collection when the job was made: a job never writes
    # into a collection made after it (the knowledge base deleted and re-created).
    collection: str = ""
    # Bytes of the upload this job holds in the blob store (0 once dropped);
    # counted in the tenant's stored bytes.
    blob_bytes: int = 0
    deduplicated: bool = False
    create_time: float = 0.0
    update_time: float = 0.0
    start_time: float = 0.0
    end_time: float = 0.0
    queued_since: float = 0.0
    heartbeat: float = 0.0
    run_token: str = ""
    index_member: str = ""

    @property
    def active(self) -> bool:
        return self.state.active
