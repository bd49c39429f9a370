"""Deferred flushes on Milvus Lite: off the write path, one per burst of writes.

Milvus Lite reads its own writes at once, flushed or not, and keeps unflushed rows
across a crash (its write-ahead log: measured, a SIGKILL after an insert lost
nothing). A flush only builds the new rows' index, so searches over them are fast.
Flushing after every UpsertChunks cost ~35 ms per document under load, most of an
upsert; here a collection is flushed once it has had no write for `idle_s`, and at
the latest `max_delay_s` after its first unflushed write, so a stream of documents
pays one flush per interval instead of one per document (docs/retrieval.md).
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import time
from collections.abc import Awaitable, Callable

log = logging.getLogger("ragmesh.retrieval")


class DeferredFlusher:
    """Schedules one background flush per dirty collection (one asyncio task each)."""

    def __init__(
        self, flush: Callable[[str], Awaitable[None]], idle_s: float, max_delay_s: float
    ) -> None:
        self._flush = flush
        self.idle_s = idle_s
        self.max_delay_s = max_delay_s
        self._first: dict[str, float] = {}  # collection → first unflushed write
        self._last: dict[str, float] = {}  # collection → latest write
        self._tasks: dict[str, asyncio.Task[None]] = {}

    def wrote(self, collection: str) -> None:
        """Called after a write: the collection is flushed later."""
        now = time.monotonic()
        self._first.setdefault(collection, now)
        self._last[collection] = now
        task = self._tasks.get(collection)
        if task is None or task.done():
            # A context of its own: the flush is no part of the write's trace.
            self._tasks[collection] = asyncio.create_task(
                self._run(collection), context=contextvars.Context()
            )

    def pending(self) -> set[str]:
        return set(self._first)

    def forget(self, collection: str) -> None:
        """The collection is gone (dropped): nothing to flush."""
        self._first.pop(collection, None)
        self._last.pop(collection, None)

    async def _run(self, collection: str) -> None:
        # Writes while a flush runs mark the collection again: the loop flushes again.
        while collection in self._first:
            due = min(
                self._last[collection] + self.idle_s, self._first[collection] + self.max_delay_s
            )
            wait = due - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
                continue
            self.forget(collection)
            try:
                await self._flush(collection)
            except Exception as exc:  # not lost: the rows are stored and searchable
                log.warning("deferred flush of %s failed: %s", collection, exc)

    async def flush_all(self) -> None:
        """Flush what is pending now (shutdown, tests)."""
        for collection in list(self._first):
            self.forget(collection)
            try:
                await self._flush(collection)
            except Exception as exc:
                log.warning("flush of %s failed: %s", collection, exc)
