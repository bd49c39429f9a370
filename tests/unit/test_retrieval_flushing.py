"""Deferred flushes (services/retrieval/flushing.py): one per burst of writes, at the
latest after the maximum delay while writes go on, none for a dropped collection."""

from __future__ import annotations

import asyncio
import time

from services.retrieval.flushing import DeferredFlusher


class Recorder:
    def __init__(self, fail: bool = False) -> None:
        self.flushed: list[tuple[str, float]] = []
        self.fail = fail

    async def __call__(self, collection: str) -> None:
        self.flushed.append((collection, time.monotonic()))
        if self.fail:
            raise RuntimeError("milvus down")


async def test_a_burst_of_writes_is_flushed_once_after_it() -> None:
    flushes = Recorder()
    flusher = DeferredFlusher(flushes, idle_s=0.05, max_delay_s=5)
    for _ in range(10):
        flusher.wrote("c1")
        await asyncio.sleep(0.005)
    last_write = time.monotonic()
    assert flushes.flushed == []
    await asyncio.sleep(0.2)
    assert [c for c, _ in flushes.flushed] == ["c1"]
    assert flushes.flushed[0][1] >= last_write + 0.04
    assert flusher.pending() == set()


async def test_steady_writes_are_flushed_every_max_delay() -> None:
    flushes = Recorder()
    flusher = DeferredFlusher(flushes, idle_s=0.05, max_delay_s=0.1)
    end = time.monotonic() + 0.45
    while time.monotonic() < end:  # never idle for idle_s
        flusher.wrote("c1")
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.15)
    assert 4 <= len(flushes.flushed) <= 6, flushes.flushed
    assert flusher.pending() == set()


async def test_collections_are_flushed_apart_and_dropped_ones_not() -> None:
    flushes = Recorder()
    flusher = DeferredFlusher(flushes, idle_s=0.03, max_delay_s=1)
    flusher.wrote("kept")
    flusher.wrote("dropped")
    flusher.forget("dropped")
    await asyncio.sleep(0.1)
    assert [c for c, _ in flushes.flushed] == ["kept"]


async def test_a_failed_flush_is_logged_and_later_writes_flush_again() -> None:
    flushes = Recorder(fail=True)
    flusher = DeferredFlusher(flushes, idle_s=0.02, max_delay_s=1)
    flusher.wrote("c1")
    await asyncio.sleep(0.08)
    flusher.wrote("c1")
    await asyncio.sleep(0.08)
    assert [c for c, _ in flushes.flushed] == ["c1", "c1"]


async def test_flush_all_flushes_what_is_pending_now() -> None:
    flushes = Recorder()
    flusher = DeferredFlusher(flushes, idle_s=10, max_delay_s=10)
    flusher.wrote("a")
    flusher.wrote("b")
    await flusher.flush_all()
    assert sorted(c for c, _ in flushes.flushed) == ["a", "b"]
    assert flusher.pending() == set()
