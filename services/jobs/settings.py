"""What the gateway and the worker both read: where the state lives, how long
a silent worker keeps its job, which queue carries the ingestion tasks."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


def _data_home() -> Path:
    return Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share")


class JobsSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="RAGMESH_", extra="ignore")

    redis_url: str = Field(
        default="redis://127.0.0.1:6379/0",
        description="Redis holding knowledge bases, documents, jobs and upload bytes in "
        "flight, and serving as the Celery broker (gateway, workers and launcher).",
    )
    redis_key_prefix: str = Field(
        default="rm",
        pattern=r"^[A-Za-z0-9_-]{1,32}$",
        description="Prefix of the Redis keys of ragmesh's records; stacks that share one Redis "
        "on purpose need different prefixes (and queues, RAGMESH_WORKER_QUEUE).",
    )
    job_heartbeat_timeout_s: float = Field(
        default=30.0,
        gt=0,
        description="A RUNNING job whose worker sent no heartbeat for this long is "
        "considered lost and taken over (gateway's reaper and workers).",
    )
    worker_queue: str = Field(
        default="ragmesh-ingest",
        pattern=r"^[A-Za-z0-9._-]{1,128}$",
        description="Celery queue of the ingestion tasks (gateway and workers).",
    )
    keep_originals: bool = Field(
        default=True,
        description="Keep each document's original bytes and normalised text after it is "
        "indexed (counted in the tenant's stored bytes): `ragmesh docs download`, the text "
        "that citations point into, and rebuilding an index (kb check --repair, kb reindex) "
        "need them.",
    )
    blob_store: Literal["file", "s3"] = Field(
        default="file",
        description="Where originals are kept: `file` (a directory, one machine) or `s3` (any "
        "S3-compatible store, e.g. the Milvus chart's MinIO).",
    )
    blob_dir: Path = Field(
        default_factory=lambda: _data_home() / "ragmesh" / "blobs",
        description="Directory of the `file` blob store (`make run`: data/blobs); shared by "
        "the gateway and the workers.",
    )
    blob_s3_endpoint: str = Field(
        default="", description="S3 endpoint URL (empty: AWS's); e.g. http://minio:9000."
    )
    blob_s3_bucket: str = Field(default="ragmesh", description="S3 bucket of the originals.")
    blob_s3_prefix: str = Field(default="", description="Key prefix inside the bucket.")
    blob_s3_region: str = Field(default="", description="S3 region (empty: the SDK's default).")
    blob_s3_access_key: str = Field(default="", description="S3 access key id.")
    blob_s3_secret_key: SecretStr = Field(default=SecretStr(""), description="S3 secret key.")
