"""Worker settings (RAGMESH_WORKER_*). What the worker shares with the gateway
(Redis, heartbeat timeout, queue) is services.jobs.settings."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class WorkerSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="RAGMESH_WORKER_", extra="ignore")

    embed_batch_size: int = Field(
        default=32,
        ge=1,
        description="Chunks embedded and upserted per batch (progress granularity).",
    )
    heartbeat_interval_s: float = Field(
        default=2.0, gt=0, description="How often a running task records a sign of life."
    )
    max_retries: int = Field(
        default=5, ge=0, description="Retries of a task whose dependency was UNAVAILABLE."
    )
    retry_backoff_max_s: int = Field(default=60, ge=1, description="Longest wait between retries.")
    task_time_limit_s: int = Field(
        default=3600, ge=10, description="Hard time limit of one ingestion task."
    )
    visibility_timeout_s: int = Field(
        default=7200,
        ge=20,
        description="Seconds before Redis redelivers an unacknowledged task; longer than "
        "the task time limit so a running task is never delivered twice.",
    )
    unacked_restore_interval_s: int = Field(
        default=10,
        ge=1,
        description="How often a worker restores tasks past their visibility timeout.",
    )
    max_chunks_per_document: int = Field(
        default=10_000,
        ge=1,
        description="Chunks one document may have (~10 MB of text); a document with more "
        "fails DOCUMENT_TOO_MANY_CHUNKS before any is embedded, instead of holding a worker "
        "for the task time limit.",
    )
    chunk_timeout_s: float = Field(default=120.0, description="Deadline of a ChunkDocument call.")
    embed_timeout_s: float = Field(default=120.0, description="Deadline of an EmbedTexts call.")
    index_timeout_s: float = Field(default=60.0, description="Deadline of a retrieval call.")
    lock_wait_s: float = Field(
        default=30.0, description="Longest wait for a document's write lock before retrying later."
    )
