"""Where upload bytes wait for their ingestion job.

`BlobStore` is the interface; `RedisBlobStore` keeps the bytes in Redis beside
the job records (one stack on one machine, or a cluster whose Redis has room).
An S3-compatible store implements the same four methods.
"""

from __future__ import annotations

from typing import Any, Protocol

from services.jobs.keys import Keys


class BlobStore(Protocol):
    """Bytes by job id. Writes are whole (no partial blob is ever visible)."""

    def put(self, job_id: str, data: bytes | memoryview) -> None: ...
    def get(self, job_id: str) -> bytes | None: ...
    def exists(self, job_id: str) -> bool: ...
    def delete(self, *job_ids: str) -> None: ...


class RedisBlobStore:
    def __init__(self, client: Any, keys: Keys) -> None:
        self.r = client
        self.keys = keys

    def put(self, job_id: str, data: bytes | memoryview) -> None:
        self.r.set(self.keys.blob(job_id), data)

    def get(self, job_id: str) -> bytes | None:
        data = self.r.get(self.keys.blob(job_id))
        return bytes(data) if data is not None else None

    def exists(self, job_id: str) -> bool:
        return bool(self.r.exists(self.keys.blob(job_id)))

    def delete(self, *job_ids: str) -> None:
        if job_ids:
            self.r.delete(*(self.keys.blob(j) for j in job_ids))
