"""One handle on the ingestion state: the catalogue, the job book, the
worker's job runs, deletes, the document locks and the blob store, over one Redis."""

from __future__ import annotations

from dataclasses import dataclass

from services.jobs.blobs import BlobStore, RedisBlobStore
from services.jobs.catalogue import Catalogue
from services.jobs.db import RedisDb
from services.jobs.deletes import Deletes
from services.jobs.jobbook import JobBook
from services.jobs.locks import DocumentLocks
from services.jobs.quotas import Quotas
from services.jobs.runs import JobRuns
from services.jobs.settings import JobsSettings


@dataclass
class JobsState:
    db: RedisDb
    catalogue: Catalogue
    book: JobBook
    runs: JobRuns
    deletes: Deletes
    locks: DocumentLocks
    blobs: BlobStore

    @classmethod
    def open(
        cls, db: RedisDb, blobs: BlobStore | None = None, quotas: Quotas | None = None
    ) -> JobsState:
        blobs = blobs or RedisBlobStore(db.r, db.keys)
        book = JobBook(db, blobs, quotas)
        return cls(
            db,
            Catalogue(db, quotas),
            book,
            JobRuns(book),
            Deletes(book),
            DocumentLocks(db),
            blobs,
        )

    @classmethod
    def from_settings(cls, settings: JobsSettings, quotas: Quotas | None = None) -> JobsState:
        db = RedisDb.from_url(settings.redis_url, settings.redis_key_prefix)
        return cls.open(db, quotas=quotas)

    def ping(self) -> bool:
        return self.db.ping()

    def close(self) -> None:
        self.db.close()
