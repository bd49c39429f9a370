"""What the gateway and the worker both read: where the state lives, how long
a silent worker keeps its job, which queue carries the ingestion tasks."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


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
