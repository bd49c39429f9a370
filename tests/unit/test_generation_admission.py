"""The LLM admission queue on its own: slots, round robin across tenants, the
bounds, deadlines, and that the positions it announces are the order it serves."""

from __future__ import annotations

import asyncio
import random

import pytest

from services.common.errors import ResourceExhausted
from services.generation.admission import AdmissionQueue, Ticket


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def queue(
    slots: int = 1, waiting: int = 100, per_tenant: int = 100, hold: float = 2.0
) -> AdmissionQueue:
    return AdmissionQueue(slots, waiting, per_tenant, initial_hold_s=hold, clock=Clock())


def drain(q: AdmissionQueue, running: list[Ticket], waiting: list[Ticket]) -> list[Ticket]:
    """Releases running tickets one by one; the order in which the waiting ones got a slot."""
    order: list[Ticket] = []
    pending = set(map(id, waiting))
    while running:
        q.release(running.pop(0))
        for t in waiting:
            if id(t) in pending and t.granted.is_set():
                pending.discard(id(t))
                order.append(t)
                running.append(t)
    assert not pending
    return order


async def test_one_slot_then_a_line() -> None:
    q = queue()
    first = q.enter("a", None)
    second = q.enter("a", None)
    assert first.granted.is_set() and not second.granted.is_set()
    assert (q.running, q.waiting) == (1, 1)
    assert not await q.wait(second, 0.01)  # still waiting: keeps its place
    q.release(first)
    assert await q.wait(second, 0.01)
    assert (q.running, q.waiting) == (1, 0)
    q.release(second)
    q.release(second)  # idempotent (a `finally` may run it twice)
    assert (q.running, q.waiting) == (0, 0)


async def test_a_burst_does_not_starve_another_tenants_single_question() -> None:
    q = queue()
    running = [q.enter("burst", None)]
    burst = [q.enter("burst", None) for _ in range(5)]
    single = q.enter("single", None)
    assert q.state(single).position == 2  # after the burst's next one, not its last
    order = drain(q, running, [*burst, single])
    assert order.index(single) == 1


async def test_announced_positions_are_the_order_of_service() -> None:
    rng = random.Random(7)
    for _ in range(50):
        slots = rng.randint(1, 3)
        q = queue(slots=slots)
        running = [q.enter(rng.choice("abc"), None) for _ in range(slots)]
        waiting = [q.enter(rng.choice("abcd"), None) for _ in range(rng.randint(1, 15))]
        announced = {id(t): q.state(t).position for t in waiting}
        order = drain(q, running, waiting)
        assert [announced[id(t)] for t in order] == list(range(1, len(order) + 1))


async def test_a_full_queue_refuses_at_once_with_a_retry_delay() -> None:
    q = queue(waiting=2, per_tenant=1)
    q.enter("a", None)
    q.enter("a", None)  # waits
    with pytest.raises(ResourceExhausted) as tenant_full:
        q.enter("a", None)
    assert tenant_full.value.reason == "LLM_TENANT_QUEUE_FULL"
    q.enter("b", None)  # another tenant still gets in
    with pytest.raises(ResourceExhausted) as full:
        q.enter("c", None)
    assert full.value.reason == "LLM_QUEUE_FULL"
    assert full.value.retry_after_s is not None and full.value.retry_after_s > 0
    assert q.waiting == 2  # refusals took no place


async def test_a_request_that_could_not_finish_before_its_deadline_is_refused() -> None:
    q = queue(hold=2.0)
    q.enter("a", None)  # running: ~2 s left
    q.enter("a", None)  # waiting: starts in ~2 s, done in ~4 s
    with pytest.raises(ResourceExhausted) as refused:
        q.enter("b", 5.0)  # would start in ~4 s and need ~2 s more
    assert refused.value.reason == "LLM_QUEUE_WAIT_EXCEEDS_DEADLINE"
    assert refused.value.retry_after_s == pytest.approx(4.0)
    assert not q.enter("b", 6.5).granted.is_set()  # that one can make it: it waits


async def test_leaving_the_line_frees_the_place_and_learns_nothing() -> None:
    q = queue(hold=2.0)
    running = q.enter("a", None)
    gave_up = q.enter("a", None)
    after = q.enter("b", None)
    q.release(gave_up)  # the caller cancelled while waiting
    assert q.waiting == 1 and q.state(after).position == 1
    assert q.mean_hold_s == 2.0  # a wait is not a hold
    q.clock.now += 1.0  # type: ignore[attr-defined]
    q.release(running)  # held 1 s
    assert after.granted.is_set() and q.mean_hold_s == pytest.approx(2.0 + 0.2 * (1.0 - 2.0))


async def test_waiters_wake_when_a_slot_frees() -> None:
    q = AdmissionQueue(1, 10, 10)
    first = q.enter("a", None)
    second = q.enter("b", None)
    waiter = asyncio.create_task(q.wait(second, 5))
    await asyncio.sleep(0.01)
    assert not waiter.done()
    q.release(first)
    assert await asyncio.wait_for(waiter, 1)
