"""Uploading many documents and following their jobs: `ingest_many` of both
clients (their methods delegate here) and the types it returns."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ragmesh.client.builders import UploadSource, job_is_done
from ragmesh.client.errors import RagmeshError
from ragmesh.gateway.v1 import gateway_pb2

if TYPE_CHECKING:
    from ragmesh.client.aio import AsyncRagmeshClient
    from ragmesh.client.sync import RagmeshClient

# Jobs followed at once while waiting (each is one watch stream on the gateway).
MAX_WATCHERS = 8


@dataclass
class Upload:
    """One document to upload: a path, bytes (with a file name) or a binary file."""

    source: UploadSource
    file_name: str = ""
    document_id: str = ""
    media_type: str = ""
    metadata: Mapping[str, Any] | None = None

    @classmethod
    def of(cls, item: Upload | str | os.PathLike[str]) -> Upload:
        return item if isinstance(item, Upload) else cls(Path(item))


@dataclass
class IngestOutcome:
    """Where one upload got to: its job (the latest state seen) or why it failed."""

    upload: Upload
    job: gateway_pb2.IngestionJob | None = None
    document_id: str = ""
    error: RagmeshError | None = None

    @property
    def done(self) -> bool:
        return self.error is not None or (self.job is not None and job_is_done(self.job))

    @property
    def succeeded(self) -> bool:
        return self.job is not None and self.job.state == gateway_pb2.JOB_STATE_SUCCEEDED


#: called after each upload and on every change of its job
OnUpdate = Callable[[IngestOutcome], None]


def unreadable(err: OSError) -> RagmeshError:
    return RagmeshError(str(err), reason="UNREADABLE_FILE")


def ingest_many(
    client: RagmeshClient,
    knowledge_base_id: str,
    items: Iterable[Upload | str | os.PathLike[str]],
    concurrency: int,
    wait: bool,
    timeout: float,
    on_update: OnUpdate | None,
) -> list[IngestOutcome]:
    """RagmeshClient.ingest_many: uploads on `concurrency` threads; each uploaded
    job is then followed by one of at most MAX_WATCHERS watching threads."""
    outcomes = [IngestOutcome(Upload.of(item)) for item in items]

    def notify(outcome: IngestOutcome) -> None:
        if on_update is not None:
            on_update(outcome)

    def upload(outcome: IngestOutcome) -> IngestOutcome:
        u = outcome.upload
        try:
            resp = client.upload_document(
                knowledge_base_id,
                u.source,
                file_name=u.file_name,
                document_id=u.document_id,
                media_type=u.media_type,
                metadata=u.metadata,
            )
            outcome.job, outcome.document_id = resp.job, resp.document.document_id
        except RagmeshError as err:
            outcome.error = err
        except OSError as err:
            outcome.error = unreadable(err)
        notify(outcome)
        return outcome

    def follow(outcome: IngestOutcome) -> None:
        assert outcome.job is not None

        def seen(job: gateway_pb2.IngestionJob) -> None:
            outcome.job = job
            notify(outcome)

        try:
            seen(client.wait_for_job(outcome.job.job_id, timeout=timeout, on_update=seen))
        except RagmeshError as err:
            outcome.error = err

    watchers = max(1, min(MAX_WATCHERS, len(outcomes)))
    with (
        ThreadPoolExecutor(max(1, concurrency)) as uploads,
        ThreadPoolExecutor(watchers) as waits,
    ):
        uploaded = as_completed([uploads.submit(upload, o) for o in outcomes])
        following = [
            waits.submit(follow, done)
            for done in (f.result() for f in uploaded)
            if wait and not done.done
        ]
        for future in following:
            future.result()
    return outcomes


async def ingest_many_async(
    client: AsyncRagmeshClient,
    knowledge_base_id: str,
    items: Iterable[Upload | str | os.PathLike[str]],
    concurrency: int,
    wait: bool,
    timeout: float,  # noqa: ASYNC109 - how long to follow each job, passed to wait_for_job
    on_update: OnUpdate | None,
) -> list[IngestOutcome]:
    """AsyncRagmeshClient.ingest_many: the same, with semaphores instead of threads."""
    outcomes = [IngestOutcome(Upload.of(item)) for item in items]
    uploading = asyncio.Semaphore(max(1, concurrency))
    watching = asyncio.Semaphore(MAX_WATCHERS)

    def seen(outcome: IngestOutcome, job: gateway_pb2.IngestionJob) -> None:
        outcome.job = job
        if on_update is not None:
            on_update(outcome)

    async def one(outcome: IngestOutcome) -> None:
        u = outcome.upload
        async with uploading:
            try:
                resp = await client.upload_document(
                    knowledge_base_id,
                    u.source,
                    file_name=u.file_name,
                    document_id=u.document_id,
                    media_type=u.media_type,
                    metadata=u.metadata,
                )
                outcome.document_id = resp.document.document_id
                seen(outcome, resp.job)
            except RagmeshError as err:
                outcome.error = err
            except OSError as err:
                outcome.error = unreadable(err)
        if outcome.error is not None and on_update is not None:
            on_update(outcome)
        if not wait or outcome.done or outcome.job is None:
            return
        job_id = outcome.job.job_id
        async with watching:
            try:
                job = await client.wait_for_job(
                    job_id, timeout=timeout, on_update=lambda j: seen(outcome, j)
                )
                seen(outcome, job)
            except RagmeshError as err:
                outcome.error = err

    await asyncio.gather(*(one(o) for o in outcomes))
    return outcomes
