"""The micro-batcher: concurrent requests share backend calls, each gets its own rows."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from services.embedding.batcher import MicroBatcher
from services.embedding.embedder import Vectors


class RecordingBackend:
    """Embeds text i as a row holding a number derived from the text, and records
    every call, so tests can see both batching and where each row went."""

    def __init__(self, delay_s: float = 0.0, fail_on: str | None = None) -> None:
        self.calls: list[tuple[list[str], bool]] = []
        self.delay_s = delay_s
        self.fail_on = fail_on

    async def __call__(self, texts: list[str], truncate: bool) -> Vectors:
        self.calls.append((list(texts), truncate))
        await asyncio.sleep(self.delay_s)
        if self.fail_on is not None and self.fail_on in texts:
            raise RuntimeError(f"backend failed on {self.fail_on}")
        return np.array([[float(len(t)), float(hash(t) % 1000)] for t in texts], np.float32)


def expected(texts: list[str]) -> Vectors:
    return np.array([[float(len(t)), float(hash(t) % 1000)] for t in texts], np.float32)


async def test_concurrent_single_text_calls_share_forward_passes() -> None:
    backend = RecordingBackend(delay_s=0.01)
    batcher = MicroBatcher(backend, max_batch_texts=64, max_wait_s=0.005)
    texts = [f"query number {i}" + "x" * i for i in range(50)]
    results = await asyncio.gather(*(batcher.embed([t]) for t in texts))
    await batcher.close()
    for text, rows in zip(texts, results, strict=True):
        np.testing.assert_array_equal(rows, expected([text]))
    assert batcher.stats.requests == 50
    assert batcher.stats.texts == 50
    assert batcher.stats.batches == len(backend.calls) < 50
    assert batcher.stats.batches <= 3, batcher.stats.batch_sizes


async def test_a_lone_call_on_an_idle_batcher_does_not_wait() -> None:
    backend = RecordingBackend()
    batcher = MicroBatcher(backend, max_batch_texts=64, max_wait_s=600)
    # Waiting the configured 600 s would trip this timeout.
    rows = await asyncio.wait_for(batcher.embed(["alone"]), timeout=30)
    np.testing.assert_array_equal(rows, expected(["alone"]))
    await batcher.close()


async def test_concurrent_calls_wait_for_each_other() -> None:
    backend = RecordingBackend()
    # The first two wait (up to 30 s) for more; the third fills the batch and sends it.
    batcher = MicroBatcher(backend, max_batch_texts=3, max_wait_s=30)
    first = asyncio.gather(batcher.embed(["a"]), batcher.embed(["b"]))
    await asyncio.sleep(0.05)
    assert backend.calls == []
    late = batcher.embed(["c"])
    await asyncio.gather(first, late)
    await batcher.close()
    assert [texts for texts, _ in backend.calls] == [["a", "b", "c"]]


async def test_max_batch_texts_is_respected_and_order_kept() -> None:
    backend = RecordingBackend()
    batcher = MicroBatcher(backend, max_batch_texts=8, max_wait_s=0.005)
    requests = [[f"r{r}-t{t}" for t in range(3)] for r in range(10)]
    results = await asyncio.gather(*(batcher.embed(r) for r in requests))
    await batcher.close()
    for request, rows in zip(requests, results, strict=True):
        np.testing.assert_array_equal(rows, expected(request))
    assert all(len(texts) <= 8 for texts, _ in backend.calls)
    assert sum(len(texts) for texts, _ in backend.calls) == 30


async def test_a_request_larger_than_a_batch_is_split_and_reassembled() -> None:
    backend = RecordingBackend()
    batcher = MicroBatcher(backend, max_batch_texts=4, max_wait_s=0)
    texts = [f"text {i}" for i in range(10)]
    rows = await batcher.embed(texts)
    await batcher.close()
    np.testing.assert_array_equal(rows, expected(texts))
    assert [len(t) for t, _ in backend.calls] == [4, 4, 2]


async def test_truncating_and_strict_requests_are_batched_apart() -> None:
    backend = RecordingBackend(delay_s=0.01)
    batcher = MicroBatcher(backend, max_batch_texts=64, max_wait_s=0.01)
    strict = [batcher.embed([f"s{i}"], truncate=False) for i in range(5)]
    cut = [batcher.embed([f"c{i}"], truncate=True) for i in range(5)]
    await asyncio.gather(*strict, *cut)
    await batcher.close()
    for texts, truncate in backend.calls:
        assert all(t.startswith("c" if truncate else "s") for t in texts), backend.calls
    assert len(backend.calls) == 2


async def test_a_backend_failure_reaches_every_caller_of_that_batch_only() -> None:
    backend = RecordingBackend(delay_s=0.01, fail_on="bad")
    batcher = MicroBatcher(backend, max_batch_texts=64, max_wait_s=0.01)
    results = await asyncio.gather(
        batcher.embed(["good"]), batcher.embed(["bad"]), return_exceptions=True
    )
    assert all(isinstance(r, RuntimeError) for r in results)
    # The batcher keeps working after a failed batch.
    np.testing.assert_array_equal(await batcher.embed(["after"]), expected(["after"]))
    await batcher.close()


async def test_a_cancelled_caller_is_dropped_before_its_batch_runs() -> None:
    backend = RecordingBackend(delay_s=0.05)
    batcher = MicroBatcher(backend, max_batch_texts=1, max_wait_s=0)
    first = asyncio.create_task(batcher.embed(["first"]))
    await asyncio.sleep(0.01)  # "first" is now running; the next one queues
    queued = asyncio.create_task(batcher.embed(["abandoned"]))
    await asyncio.sleep(0)
    queued.cancel()
    with pytest.raises(asyncio.CancelledError):
        await queued
    await first
    np.testing.assert_array_equal(await batcher.embed(["third"]), expected(["third"]))
    await batcher.close()
    assert [texts for texts, _ in backend.calls] == [["first"], ["third"]]


async def test_concurrent_batches_are_bounded() -> None:
    running = 0
    peak = 0

    async def backend(texts: list[str], truncate: bool) -> Vectors:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        await asyncio.sleep(0.01)
        running -= 1
        return expected(texts)

    batcher = MicroBatcher(backend, max_batch_texts=2, max_wait_s=0, max_concurrent_batches=2)
    await asyncio.gather(*(batcher.embed([f"t{i}"]) for i in range(20)))
    await batcher.close()
    assert peak == 2
