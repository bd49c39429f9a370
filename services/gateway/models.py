"""Plain records of the gateway's state: knowledge bases, documents, ingestion jobs.

They are stored as Redis hashes of strings (see store.py); `to_hash` and
`from_hash` are the only place that knows the encoding.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from typing import Any

QUEUED, RUNNING, SUCCEEDED, FAILED, CANCELLED = (
    "QUEUED",
    "RUNNING",
    "SUCCEEDED",
    "FAILED",
    "CANCELLED",
)
ACTIVE_STATES = (QUEUED, RUNNING)
TERMINAL_STATES = (SUCCEEDED, FAILED, CANCELLED)
JOB_STATES = (QUEUED, RUNNING, SUCCEEDED, FAILED, CANCELLED)
STAGES = ("PARSING", "CHUNKING", "EMBEDDING", "INDEXING")

DOC_PENDING, DOC_INDEXED, DOC_FAILED = "PENDING", "INDEXED", "FAILED"


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


class _Record:
    """Hash (de)serialisation driven by the dataclass field types."""

    def to_hash(self) -> dict[str, str]:
        return {f.name: _encode(getattr(self, f.name)) for f in fields(self)}  # type: ignore[arg-type]

    @classmethod
    def from_hash(cls, raw: dict[bytes, bytes] | dict[str, str]) -> Any:
        data = {
            (k.decode() if isinstance(k, bytes) else k): (v.decode() if isinstance(v, bytes) else v)
            for k, v in raw.items()
        }
        kwargs: dict[str, Any] = {}
        for f in fields(cls):  # type: ignore[arg-type]
            if f.name not in data:
                continue
            value = data[f.name]
            kind = str(f.type)
            if kind == "int":
                kwargs[f.name] = int(float(value or 0))
            elif kind == "float":
                kwargs[f.name] = float(value or 0)
            elif kind == "bool":
                kwargs[f.name] = value == "1"
            elif kind.startswith("dict"):
                kwargs[f.name] = json.loads(value) if value else {}
            elif kind.startswith("ErrorRecord"):
                kwargs[f.name] = ErrorRecord.from_json(value)
            else:
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
    state: str = DOC_PENDING
    chunk_count: int = 0
    metadata: dict[str, Any] = field(default_factory=dict)
    title: str = ""
    last_job_id: str = ""
    create_time: float = 0.0
    update_time: float = 0.0


@dataclass
class JobRecord(_Record):
    job_id: str
    tenant: str
    knowledge_base_id: str
    document_id: str
    file_name: str = ""
    media_type: str = ""
    version: str = ""
    state: str = QUEUED
    stage: str = ""
    chunks_done: int = 0
    chunks_total: int = 0
    error: ErrorRecord | None = None
    attempt: int = 0
    # Times the worker running it vanished (reaper re-queues); bounded by
    # RAGMESH_GATEWAY_JOB_MAX_ATTEMPTS.
    lost_count: int = 0
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
        return self.state in ACTIVE_STATES
