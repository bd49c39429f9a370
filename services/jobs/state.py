"""One handle on the ingestion state: the catalogue, the job book, the
worker's job runs, the document locks and the blob store, over one Redis."""

from __future__ import annotations

from dataclasses import dataclass

from services.jobs.blobs import BlobStore, RedisBlobStore
from services.jobs.catalogue import Catalogue
from services.jobs.db import RedisDb
from services.jobs.jobbook import JobBook
from services.jobs.locks import DocumentLocks
from services.jobs.runs import JobRuns
from services.jobs.settings import JobsSettings


@dataclass
class JobsState:
    db: RedisDb
    catalogue: Catalogue
    book: JobBook
    runs: JobRuns
    locks: DocumentLocks
    blobs: BlobStore

    @classmethod
    def open(cls, db: RedisDb, blobs: BlobStore | None = None) -> JobsState:
        blobs = blobs or RedisBlobStore(db.r, db.keys)
        book = JobBook(db, blobs)
        return cls(db, Catalogue(db), book, JobRuns(book), DocumentLocks(db), blobs)

    @classmethod
    def from_settings(cls, settings: JobsSettings) -> JobsState:
        return cls.open(RedisDb.from_url(settings.redis_url, settings.redis_key_prefix))

    def ping(self) -> bool:
        return self.db.ping()

    def close(self) -> None:
        self.db.close()
