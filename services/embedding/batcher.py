"""Micro-batching: concurrent requests share backend calls.

A request's texts join a queue. The collector takes the oldest waiting request;
if other requests are waiting too (calls are concurrent), it waits up to
`max_wait_s` for more to arrive (or until `max_batch_texts` texts are waiting);
a lone request on an idle batcher goes at once. It makes ONE backend call for
all of them and hands each request its own rows back. While a batch runs, new
requests pile up for the next one, so under load batches fill by themselves.
Requests that asked for truncation are batched apart from those that did not,
because a backend call carries one flag.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
from prometheus_client import Histogram

from services.embedding.embedder import Vectors

log = logging.getLogger("ragmesh.embedding")

BATCH_TEXTS = Histogram(
    "ragmesh_embedding_batch_texts",
    "Texts per embedding backend call (micro-batch size)",
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256),
)

BatchFn = Callable[[list[str], bool], Awaitable[Vectors]]


@dataclass
class _Job:
    texts: list[str]
    truncate: bool
    future: asyncio.Future[Vectors]


@dataclass
class BatcherStats:
    """Counters for tests, benchmarks and logs."""

    requests: int = 0
    texts: int = 0
    batches: int = 0
    batch_sizes: list[int] = field(default_factory=list)


class MicroBatcher:
    def __init__(
        self,
        run_batch: BatchFn,
        *,
        max_batch_texts: int = 64,
        max_wait_s: float = 0.005,
        max_concurrent_batches: int = 1,
    ) -> None:
        self.run_batch = run_batch
        self.max_batch_texts = max_batch_texts
        self.max_wait_s = max_wait_s
        self.max_concurrent_batches = max_concurrent_batches
        self.stats = BatcherStats()
        self._pending: deque[_Job] = deque()
        self._arrived = asyncio.Event()
        self._slots = asyncio.Semaphore(max_concurrent_batches)
        self._collector: asyncio.Task[None] | None = None
        self._running: set[asyncio.Task[None]] = set()

    async def embed(self, texts: Sequence[str], *, truncate: bool = False) -> Vectors:
        """Rows for `texts`, in order, computed together with whatever else is waiting."""
        if self._collector is None or self._collector.done():
            self._collector = asyncio.create_task(self._collect(), name="micro-batcher")
        loop = asyncio.get_running_loop()
        self.stats.requests += 1
        # A request larger than one batch is cut into batch-sized jobs.
        jobs = [
            _Job(list(texts[i : i + self.max_batch_texts]), truncate, loop.create_future())
            for i in range(0, len(texts), self.max_batch_texts)
        ]
        self._pending.extend(jobs)
        self._arrived.set()
        try:
            parts = await asyncio.gather(*(job.future for job in jobs))
        except BaseException:
            for job in jobs:  # a cancelled caller's texts are dropped from the queue
                job.future.cancel()
            raise
        return parts[0] if len(parts) == 1 else np.concatenate(parts)

    def _waiting_texts(self, truncate: bool) -> int:
        return sum(len(j.texts) for j in self._pending if j.truncate == truncate)

    def _take_batch(self) -> list[_Job]:
        """The oldest job, plus later jobs with the same flag while they fit."""
        first = self._pending.popleft()
        batch, size, kept = [first], len(first.texts), deque[_Job]()
        while self._pending:
            job = self._pending.popleft()
            if job.truncate == first.truncate and size + len(job.texts) <= self.max_batch_texts:
                batch.append(job)
                size += len(job.texts)
            else:
                kept.append(job)
        self._pending.extendleft(reversed(kept))
        return batch

    async def _collect(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            while not self._pending:
                self._arrived.clear()
                await self._arrived.wait()
            await self._slots.acquire()
            # Drop jobs whose callers gave up while queued.
            while self._pending and self._pending[0].future.done():
                self._pending.popleft()
            if not self._pending:
                self._slots.release()
                continue
            truncate = self._pending[0].truncate
            # Let calls that have already arrived enqueue their texts (no timer involved).
            await asyncio.sleep(0)
            # Gather only when calls are concurrent: a lone call on an idle service goes at
            # once (a timer costs far more than its nominal few ms on a loaded machine).
            concurrent = sum(1 for j in self._pending if not j.future.done()) > 1
            deadline = loop.time() + (self.max_wait_s if concurrent else 0.0)
            while self._waiting_texts(truncate) < self.max_batch_texts:
                remaining = deadline - loop.time()
                if remaining <= 0:
                    break
                self._arrived.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._arrived.wait(), remaining)
            batch = [j for j in self._take_batch() if not j.future.done()]
            if not batch:
                self._slots.release()
                continue
            task = asyncio.create_task(self._run(batch, truncate))
            self._running.add(task)
            task.add_done_callback(self._running.discard)

    async def _run(self, batch: list[_Job], truncate: bool) -> None:
        try:
            texts = [t for job in batch for t in job.texts]
            self.stats.batches += 1
            self.stats.texts += len(texts)
            self.stats.batch_sizes.append(len(texts))
            BATCH_TEXTS.observe(len(texts))
            log.debug("backend call with %d texts from %d requests", len(texts), len(batch))
            try:
                vectors = await self.run_batch(texts, truncate)
            except Exception as exc:
                for job in batch:
                    if not job.future.done():
                        job.future.set_exception(exc)
                return
            start = 0
            for job in batch:
                end = start + len(job.texts)
                if not job.future.done():
                    job.future.set_result(vectors[start:end])
                start = end
        finally:
            self._slots.release()

    async def close(self) -> None:
        tasks = [t for t in (self._collector, *self._running) if t is not None]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for job in self._pending:
            job.future.cancel()
        self._pending.clear()
