"""The gateway's job watch (services.gateway.ingestion `Ingestion.watch`) against a real
Redis: the job as it is, then each change, until it ends — with one read of the record
at the start, and none beyond it for a job already over."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest

from services.common.errors import InvalidArgument, NotFound
from services.gateway.config import GatewaySettings
from services.gateway.ingestion import Ingestion
from services.jobs.queue import IngestionQueue, QueueSnapshot
from services.jobs.records import JobState
from services.jobs.settings import JobsSettings
from services.jobs.state import JobsState
from tests.support.jobs import uploaded_job


class NoQueue(IngestionQueue):
    """The watch never sends a task."""

    def send(self, job_id: str) -> None:
        raise AssertionError("a watch sends no task")

    def snapshot(self) -> QueueSnapshot:
        return QueueSnapshot()

    def close(self) -> None:
        pass


class CountedReads:
    """The gateway's asyncio Redis client, counting HGETALLs (the watch's re-reads)."""

    def __init__(self, client: Any) -> None:
        self._client = client
        self.hgetalls = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)

    async def hgetall(self, key: str) -> Any:
        self.hgetalls += 1
        return await self._client.hgetall(key)


Setup = tuple[Ingestion, JobsState, CountedReads]


@contextlib.asynccontextmanager
async def gateway_watches(redis_url: str) -> AsyncIterator[Setup]:
    """An Ingestion on a real Redis. Closing it after a watch hung 3 runs in ~15 before
    JobEvents.close() was bounded."""
    state = JobsState.from_settings(JobsSettings(redis_url=redis_url))
    ingestion = Ingestion(state, NoQueue(), GatewaySettings())
    await ingestion.start(redis_url)
    assert ingestion.aredis is not None
    counted = CountedReads(ingestion.aredis)
    ingestion.aredis = counted  # type: ignore[assignment]
    try:
        yield ingestion, state, counted
    finally:
        await ingestion.close()
        state.close()


async def test_a_job_already_over_is_read_once(redis_url: str) -> None:
    async with gateway_watches(redis_url) as (ingestion, state, counted):
        job = uploaded_job(state)
        tenant = job.tenant
        state.book.cancel_job(tenant, job.job_id)
        seen = [j.state async for j in ingestion.watch(tenant, job.job_id)]
        assert seen == [JobState.CANCELLED]
        assert counted.hgetalls == 0  # the one read was the check that the job is the tenant's


async def test_the_job_then_each_change_until_it_ends(redis_url: str) -> None:
    async with gateway_watches(redis_url) as (ingestion, state, counted):
        job = uploaded_job(state)
        tenant = job.tenant
        seen: list[str] = []
        reached = {s: asyncio.Event() for s in (JobState.QUEUED, JobState.RUNNING)}

        async def follow() -> None:
            async for j in ingestion.watch(tenant, job.job_id):
                seen.append(j.state)
                if j.state in reached:
                    reached[j.state].set()

        watcher = asyncio.create_task(follow())
        await asyncio.wait_for(reached[JobState.QUEUED].wait(), 5)
        assert seen == [JobState.QUEUED] and counted.hgetalls == 0
        token = uuid.uuid4().hex
        assert await asyncio.to_thread(state.runs.claim_job, job.job_id, token, 30.0) == "ok"
        await asyncio.wait_for(reached[JobState.RUNNING].wait(), 5)
        await asyncio.to_thread(state.runs.finish_job, job.job_id, token, 1, "A")
        await asyncio.wait_for(watcher, 5)
        assert seen == [JobState.QUEUED, JobState.RUNNING, JobState.SUCCEEDED]
        assert counted.hgetalls >= 2  # read again on each change


async def test_another_tenant_s_job_is_not_found_and_leaves_no_watch(redis_url: str) -> None:
    async with gateway_watches(redis_url) as (ingestion, state, _):
        job = uploaded_job(state)
        with pytest.raises(NotFound):
            async for _ in ingestion.watch("someone-else", job.job_id):
                pass
        assert ingestion.events is not None and ingestion.events.watched() == 0


async def test_a_malformed_job_id_is_invalid_and_leaves_no_watch(redis_url: str) -> None:
    async with gateway_watches(redis_url) as (ingestion, _, _):
        for bad in ("", "x" * 10_000, "../jobs/abc", "j\x00"):
            with pytest.raises(InvalidArgument):
                async for _ in ingestion.watch("any-tenant", bad):
                    pass
        assert ingestion.events is not None and ingestion.events.watched() == 0
