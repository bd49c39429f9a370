"""One handle on the ingestion state: the catalogue, the job book, the
worker's job runs, deletes, the document locks and the blob store, over one Redis."""

from __future__ import annotations

from dataclasses import dataclass

from services.jobs.blobs import BlobStore, FileBlobStore, RedisBlobStore, S3BlobStore
from services.jobs.catalogue import Catalogue
from services.jobs.db import RedisDb
from services.jobs.deletes import Deletes
from services.jobs.jobbook import JobBook
from services.jobs.locks import DocumentLocks
from services.jobs.quotas import Quotas
from services.jobs.rebuilds import Rebuilds
from services.jobs.runs import JobRuns
from services.jobs.settings import JobsSettings


@dataclass
class JobsState:
    db: RedisDb
    catalogue: Catalogue
    book: JobBook
    runs: JobRuns
    deletes: Deletes
    rebuilds: Rebuilds
    locks: DocumentLocks
    #: upload bytes in flight, by job id
    blobs: BlobStore
    #: originals and normalised texts of indexed documents (None: not kept)
    originals: BlobStore | None

    @classmethod
    def open(
        cls,
        db: RedisDb,
        blobs: BlobStore | None = None,
        quotas: Quotas | None = None,
        originals: BlobStore | None = None,
    ) -> JobsState:
        blobs = blobs or RedisBlobStore(db.r, db.keys)
        book = JobBook(db, blobs, quotas, originals)
        return cls(
            db,
            Catalogue(db, quotas),
            book,
            JobRuns(book),
            Deletes(book),
            Rebuilds(book),
            DocumentLocks(db),
            blobs,
            originals,
        )

    @classmethod
    def from_settings(cls, settings: JobsSettings, quotas: Quotas | None = None) -> JobsState:
        db = RedisDb.from_url(settings.redis_url, settings.redis_key_prefix)
        return cls.open(db, quotas=quotas, originals=originals_store(settings))

    def ping(self) -> bool:
        return self.db.ping()

    def close(self) -> None:
        self.db.close()


def originals_store(settings: JobsSettings) -> BlobStore | None:
    """The store of originals the settings name (None when originals are not kept)."""
    if not settings.keep_originals:
        return None
    if settings.blob_store == "s3":
        return S3BlobStore.connect(
            settings.blob_s3_endpoint,
            settings.blob_s3_bucket,
            settings.blob_s3_access_key,
            settings.blob_s3_secret_key.get_secret_value(),
            settings.blob_s3_region,
            settings.blob_s3_prefix,
        )
    return FileBlobStore(settings.blob_dir)
