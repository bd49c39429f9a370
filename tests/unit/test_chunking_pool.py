"""The worker-process pool: budgets, kills, replacements (services/chunking/pool.py).

The tasks (tests/unit/pool_tasks.py) stand in for pathological documents:
minutes of C code holding the GIL, allocations past the cap, crashes.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import AsyncIterator

import pytest

from services.chunking.pool import WorkerPool, WorkerStartError
from services.common.errors import DeadlineExceeded, Internal, InvalidArgument, Unavailable
from tests.unit import pool_tasks


@pytest.fixture
async def pool() -> AsyncIterator[WorkerPool]:
    p = WorkerPool(2, pool_tasks.init_state, ("t",), memory_mb=300, name="test")
    await p.start()
    yield p
    await p.close()


async def _pid(pool: WorkerPool) -> int:
    summary, _ = await pool.run(pool_tasks.echo, b"", 30)
    return int(summary["pid"])


async def _wait_for_workers(pool: WorkerPool, count: int, within_s: float = 30) -> None:
    deadline = time.monotonic() + within_s
    while len(pool.pids()) < count:
        assert time.monotonic() < deadline, f"only {pool.pids()} after {within_s}s"
        await asyncio.sleep(0.05)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as stat:  # a zombie is dead too
        return stat.read().split()[2] != "Z"


async def test_round_trip_and_concurrency(pool: WorkerPool) -> None:
    summary, data = await pool.run(pool_tasks.echo, b"payload" * 1000, 30)
    assert data == b"payload" * 1000 and summary["tag"] == "t"
    assert summary["pid"] in pool.pids() and os.getpid() not in pool.pids()
    results = await asyncio.gather(*(pool.run(pool_tasks.sleep, b"0.6", 30) for _ in range(2)))
    # In parallel, one per worker: each ran while the other did (by the times the
    # workers report, not by how long the test waited, which a busy machine stretches).
    (first, _), (second, _) = results
    assert first["pid"] != second["pid"]
    assert first["started"] < second["ended"] and second["started"] < first["ended"]


async def test_a_third_call_waits_for_a_free_worker(pool: WorkerPool) -> None:
    start = time.monotonic()
    await asyncio.gather(*(pool.run(pool_tasks.sleep, b"0.4", 30) for _ in range(3)))
    assert time.monotonic() - start >= 0.75


async def test_over_budget_the_worker_is_killed_and_replaced(pool: WorkerPool) -> None:
    before = set(pool.pids())
    start = time.monotonic()
    with pytest.raises(InvalidArgument) as exc:
        await pool.run(pool_tasks.spin, b"40", 0.5)
    assert time.monotonic() - start < 2
    assert exc.value.reason == "PARSE_TIMEOUT"
    assert exc.value.metadata == {"timeout_s": "0.5"}
    await _wait_for_workers(pool, 2)
    killed = before - set(pool.pids())
    assert len(killed) == 1 and not _alive(killed.pop())
    assert pool.stats.timeouts == 1
    assert await _pid(pool) in pool.pids()


async def test_the_event_loop_keeps_running_while_a_worker_spins(pool: WorkerPool) -> None:
    lags: list[float] = []

    async def tick() -> None:
        while True:
            start = time.monotonic()
            await asyncio.sleep(0.02)
            lags.append(time.monotonic() - start - 0.02)

    ticker = asyncio.create_task(tick())
    with pytest.raises(InvalidArgument):
        await pool.run(pool_tasks.spin, b"40", 1.5)
    # The other worker serves calls meanwhile.
    summary, _ = await pool.run(pool_tasks.echo, b"", 5)
    ticker.cancel()
    assert len(lags) > 30 and max(lags) < 0.25, max(lags)
    assert summary["pid"] in pool.pids()


async def test_a_cancelled_call_kills_its_worker(pool: WorkerPool) -> None:
    call = asyncio.create_task(pool.run(pool_tasks.spin, b"40", 600))
    await asyncio.sleep(0.5)
    busy = set(pool.pids())
    call.cancel()
    with pytest.raises(asyncio.CancelledError):
        await call
    await _wait_for_workers(pool, 2)
    gone = busy - set(pool.pids())
    assert len(gone) == 1
    deadline = time.monotonic() + 5
    while _alive(next(iter(gone))):
        assert time.monotonic() < deadline, "the cancelled call's worker still runs"
        await asyncio.sleep(0.05)
    assert pool.stats.cancelled == 1


async def test_the_caller_s_deadline_bounds_the_call(pool: WorkerPool) -> None:
    start = time.monotonic()
    with pytest.raises(DeadlineExceeded) as exc:
        await pool.run(pool_tasks.sleep, b"30", 60, deadline=time.monotonic() + 0.5)
    assert exc.value.reason == "DEADLINE_EXCEEDED"
    assert time.monotonic() - start < 2
    with pytest.raises(DeadlineExceeded):
        await pool.run(pool_tasks.echo, b"", 60, deadline=time.monotonic() - 1)


async def test_memory_over_the_cap_is_document_too_complex(pool: WorkerPool) -> None:
    with pytest.raises(InvalidArgument) as exc:
        await pool.run(pool_tasks.allocate, b"1000", 30)
    assert exc.value.reason == "DOCUMENT_TOO_COMPLEX"
    assert exc.value.metadata["limit"] == "worker_memory_mb"
    await _wait_for_workers(pool, 2)
    assert pool.stats.recycled == 1  # a child that ran out of memory is not reused
    summary, _ = await pool.run(pool_tasks.allocate, b"20", 30)  # under the cap: fine
    assert summary["pid"] in pool.pids()


async def test_a_worker_near_its_cap_is_replaced_after_replying(pool: WorkerPool) -> None:
    summary, data = await pool.run(pool_tasks.allocate, b"200", 30)
    assert data == b"allocated"
    await _wait_for_workers(pool, 2)
    assert summary["pid"] not in pool.pids()
    assert pool.stats.recycled == 1


@pytest.mark.parametrize(
    ("task", "error", "reason"),
    [
        (pool_tasks.abort, InvalidArgument, "DOCUMENT_TOO_COMPLEX"),
        (pool_tasks.segfault, Internal, "PARSER_CRASHED"),
    ],
)
async def test_a_worker_that_dies_is_replaced(
    pool: WorkerPool, task: pool_tasks.Task, error: type[Exception], reason: str
) -> None:
    with pytest.raises(error) as exc:
        await pool.run(task, b"", 30)
    assert exc.value.reason == reason  # type: ignore[attr-defined]
    assert "killed by SIG" in exc.value.metadata["worker_exit"]  # type: ignore[attr-defined]
    await _wait_for_workers(pool, 2)
    assert pool.stats.crashed == 1
    assert await _pid(pool) in pool.pids()


async def test_errors_travel_back_and_the_worker_stays(pool: WorkerPool) -> None:
    pids = set(pool.pids())
    with pytest.raises(InvalidArgument) as exc:
        await pool.run(pool_tasks.refuse, b"", 30)
    assert (exc.value.reason, exc.value.metadata) == ("CORRUPT_DOCUMENT", {"page": "3"})
    with pytest.raises(Internal) as internal:
        await pool.run(pool_tasks.fail, b"", 30)
    assert internal.value.reason == "INTERNAL_ERROR" and "ValueError" in internal.value.message
    with pytest.raises(InvalidArgument) as deep:
        await pool.run(pool_tasks.recurse, b"", 30)
    assert deep.value.reason == "DOCUMENT_TOO_COMPLEX"
    assert set(pool.pids()) == pids
    assert pool.stats.started == 2


async def test_a_failing_init_fails_start() -> None:
    pool = WorkerPool(1, pool_tasks.init_fails, ("the model",), name="test")
    with pytest.raises(WorkerStartError, match="RuntimeError: cannot load the model"):
        await pool.start()
    assert not pool.ready()


async def test_close_stops_every_worker() -> None:
    pool = WorkerPool(2, pool_tasks.init_state, ("t",), name="test")
    await pool.start()
    pids = pool.pids()
    busy = asyncio.create_task(pool.run(pool_tasks.sleep, b"30", 60))
    await asyncio.sleep(0.2)
    await pool.close()
    assert not pool.ready()
    assert not any(_alive(pid) for pid in pids)
    with pytest.raises(Unavailable) as exc:  # retryable: the service is stopping
        await busy
    assert exc.value.reason == "NOT_READY"


async def test_a_worker_that_died_while_idle_costs_no_call(pool: WorkerPool) -> None:
    for pid in pool.pids():
        os.kill(pid, signal.SIGKILL)
    await asyncio.sleep(0.2)
    _, data = await pool.run(pool_tasks.echo, b"fine", 30)  # waits for a replacement
    assert data == b"fine"
    assert pool.stats.crashed == 2
    await _wait_for_workers(pool, 2)


async def test_ready_while_every_worker_is_being_replaced(pool: WorkerPool) -> None:
    results = await asyncio.gather(
        *(pool.run(pool_tasks.spin, b"40", 0.3) for _ in range(2)), return_exceptions=True
    )
    assert all(isinstance(r, InvalidArgument) for r in results)
    assert pool.pids() == [] or len(pool.pids()) < 2
    assert pool.ready()  # calls wait for the replacements; health stays SERVING
    await _wait_for_workers(pool, 2)
    assert pool.ready()
