"""The LLM admission queue on its own: slots, round robin across tenants, the
bounds, deadlines, reservations, the conservative wait estimate, and that the
positions it announces are the order it serves."""

from __future__ import annotations

import asyncio
import heapq
import itertools
import math
import random
from typing import Any

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
    assert q.hold_s == 2.0  # a wait is not a hold
    q.clock.now += 1.0  # type: ignore[attr-defined]
    q.release(running)  # held 1 s
    assert after.granted.is_set() and q.hold_s == pytest.approx(1.0)


async def test_waiters_wake_when_a_slot_frees() -> None:
    q = AdmissionQueue(1, 10, 10)
    first = q.enter("a", None)
    second = q.enter("b", None)
    waiter = asyncio.create_task(q.wait(second, 5))
    await asyncio.sleep(0.01)
    assert not waiter.done()
    q.release(first)
    assert await asyncio.wait_for(waiter, 1)


# --- the estimate ---------------------------------------------------------------------------


def test_one_answers_time_is_a_high_percentile_of_recent_holds_not_their_mean() -> None:
    q = queue(hold=2.0)
    for held in [1.0] * 8 + [4.0, 5.0]:  # mean 1.7 s; 2 of 10 took far longer
        t = q.enter("a", None)
        q.clock.now += held  # type: ignore[attr-defined]
        q.release(t)
    assert q.hold_s == 4.0  # the 90th percentile (nearest rank)
    q.enter("a", None)
    with pytest.raises(ResourceExhausted) as refused:
        q.enter("b", 7.5)  # ~4 s for the running one, ~4 s for its own: a mean said 3.4 s
    assert refused.value.reason == "LLM_QUEUE_WAIT_EXCEEDS_DEADLINE"


def test_the_estimate_counts_what_other_active_tenants_may_still_send() -> None:
    """B's second waiting request is served after up to two of A's, even when A has
    none in line yet: A's client is between questions (its answer holds the slot)."""
    q = queue(hold=2.0)
    q.enter("a", None)  # A holds the slot, nothing of A's in line
    q.enter("b", None)  # B's first: after the running one (~2 s)
    # B's second: a count of the line says 1 ahead (B's first): it starts in ~4 s and is
    # done in ~6 s. But A's next question, if it comes, goes before it: done in ~8 s.
    with pytest.raises(ResourceExhausted):
        q.enter("b", 7.0)
    second = q.enter("b", 8.5)
    assert q.state(second).position == 2  # what it is told is where it stands now


# --- reservations ---------------------------------------------------------------------------


def test_a_reservation_keeps_the_answers_place_until_it_arrives() -> None:
    q = queue(hold=2.0)
    running = q.enter("a", None)
    placeholder = q.reserve("b", None)
    assert placeholder.reservation and not placeholder.granted.is_set()
    later = q.enter("c", None)  # asked after B's check: behind it
    assert q.state(later).position == 2
    answer = q.enter("b", None, placeholder.reservation)
    assert answer is placeholder and answer.arrived
    q.release(running)
    assert answer.granted.is_set() and not later.granted.is_set()


def test_a_placeholder_is_never_given_a_slot_but_keeps_its_turn() -> None:
    q = queue(hold=2.0)
    running = q.enter("a", None)
    placeholder = q.reserve("b", None)
    arrived = q.enter("c", None)
    q.release(running)  # B's answer is still being retrieved: C's gets the slot
    assert arrived.granted.is_set() and not placeholder.granted.is_set()
    other = q.enter("c", None)
    answer = q.enter("b", None, placeholder.reservation)
    q.release(arrived)  # B kept its turn
    assert answer.granted.is_set() and not other.granted.is_set()


def test_a_free_slot_goes_at_once_to_an_arriving_answer() -> None:
    q = queue()
    placeholder = q.reserve("a", None)
    assert q.state(placeholder).estimated_wait_s == 0.0
    assert q.enter("a", None, placeholder.reservation).granted.is_set()
    assert (q.running, q.waiting, q.reserved) == (1, 0, 0)


def test_reservations_count_against_the_bounds() -> None:
    """A burst of checks cannot all pass before any answer reaches the queue."""
    q = queue(waiting=3, per_tenant=2)
    q.enter("a", None)
    q.reserve("a", None)
    q.reserve("a", None)
    with pytest.raises(ResourceExhausted) as tenant_full:
        q.reserve("a", None)
    assert tenant_full.value.reason == "LLM_TENANT_QUEUE_FULL"
    q.reserve("b", None)
    with pytest.raises(ResourceExhausted) as full:
        q.enter("c", None)
    assert full.value.reason == "LLM_QUEUE_FULL"


def test_an_unused_reservation_is_given_back_or_lapses() -> None:
    q = queue(waiting=1, per_tenant=1)
    q.enter("a", None)
    given_back = q.reserve("b", None)
    assert q.cancel(given_back.reservation) and not q.cancel(given_back.reservation)
    assert q.waiting == 0
    lapsing = q.reserve("b", None)
    with pytest.raises(ResourceExhausted):
        q.reserve("c", None)
    q.clock.now += q.reservation_ttl_s  # type: ignore[attr-defined]
    q.reserve("c", None)  # the lapsed one made room
    with pytest.raises(ResourceExhausted):  # its answer, arriving late, is a new one: no room
        q.enter("b", None, lapsing.reservation)


def test_an_arriving_answer_is_refused_when_the_queue_slowed_down_meanwhile() -> None:
    q = queue(hold=1.0)
    running = q.enter("a", None)
    placeholder = q.reserve("b", 5.0)  # ~1 s ahead + ~1 s: fits in 5 s
    q.clock.now += 4.0  # type: ignore[attr-defined]
    q.release(running)  # held 4 s: the estimate is now 4 s an answer
    q.enter("a", None)
    with pytest.raises(ResourceExhausted) as refused:
        q.enter("b", 1.0, placeholder.reservation)  # 1 s left of its deadline
    assert refused.value.reason == "LLM_QUEUE_WAIT_EXCEEDS_DEADLINE"
    assert (q.waiting, q.reserved) == (0, 0)


def test_a_reservation_is_only_its_tenants() -> None:
    q = queue()
    q.enter("a", None)
    placeholder = q.reserve("b", None)
    stranger = q.enter("c", None, placeholder.reservation)
    assert stranger is not placeholder and q.reserved == 1


# --- the rule under load ------------------------------------------------------------------


def simulate(  # noqa: C901 - one event loop: ask, arrive, done, the periodic re-check
    seed: int, slow_from: float = math.inf, clients: int = 32
) -> dict[str, int]:
    """Closed-loop clients of two tenants against one slot, in virtual time: each
    asks 3 questions; a question is checked (reserve), spends 0.2-6 s in retrieval,
    then enters with its reservation. A refused client waits its RetryInfo delay
    before the next question (its tenant is idle meanwhile, then comes back).
    Answers take 1-2 s, from `slow_from` s on 2-5 s. Every second the waiting
    answers are re-checked (`hopeless`), as the generation service does."""
    rng = random.Random(seed)
    clock = Clock()
    start = clock.now
    deadline_s = 30.0
    q = AdmissionQueue(1, 64, 16, initial_hold_s=5.0, clock=clock)
    seq = itertools.count()
    events: list[tuple[float, int, str, int, Any]] = []
    out = dict.fromkeys(["answered", "refused", "refused_in_line", "missed"], 0)
    left = dict.fromkeys(range(clients), 3)
    asked_at: dict[int, float] = {}
    waiting: dict[int, Ticket] = {}

    def push(delay: float, kind: str, client: int, data: Any = None) -> None:
        heapq.heappush(events, (clock.now + delay, next(seq), kind, client, data))

    def next_question(client: int, delay: float = 0.0) -> None:
        left[client] -= 1
        if left[client]:
            push(delay, "ask", client)

    def start_answers() -> None:
        for client, ticket in list(waiting.items()):
            if ticket.granted.is_set():
                del waiting[client]
                slow = clock.now - start >= slow_from
                push(
                    rng.uniform(2.0, 5.0) if slow else rng.uniform(1.0, 2.0), "done", client, ticket
                )

    for client in range(clients):
        push(rng.uniform(0, 0.5), "ask", client)
    push(1.0, "tick", -1)
    while events:
        clock.now, _, kind, client, data = heapq.heappop(events)
        tenant = "ab"[client % 2]
        try:
            if kind == "tick":
                for other, ticket in list(waiting.items()):
                    refusal = q.hopeless(ticket, deadline_s - (clock.now - asked_at[other]))
                    if refusal is not None:
                        q.release(ticket)
                        del waiting[other]
                        out["refused_in_line"] += 1
                        next_question(other, refusal.retry_after_s or 0)
                if any(left.values()):
                    push(1.0, "tick", -1)
            elif kind == "ask":
                asked_at[client] = clock.now
                reservation = q.reserve(tenant, deadline_s).reservation
                push(rng.uniform(0.2, 6.0), "arrive", client, reservation)
            elif kind == "arrive":
                remaining = deadline_s - (clock.now - asked_at[client])
                waiting[client] = q.enter(tenant, remaining, data)
                start_answers()
            else:
                q.release(data)
                late = clock.now - asked_at[client] > deadline_s
                out["missed" if late else "answered"] += 1
                start_answers()
                next_question(client)
        except ResourceExhausted as refused:
            out["refused"] += 1
            next_question(client, refused.retry_after_s or 0)
    return out


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_no_accepted_answer_runs_out_of_its_deadline_in_line(seed: int) -> None:
    outcome = simulate(seed)
    assert outcome["missed"] == 0 and outcome["refused_in_line"] == 0, outcome
    assert outcome["answered"] > 40 and outcome["refused"] > 0, outcome


def test_answers_left_hopeless_by_a_slowdown_are_refused_in_line_not_timed_out() -> None:
    """Answers suddenly take 2.5 times as long: what was accepted before cannot all
    make it; most of those are refused while waiting instead of timing out."""
    outcome = simulate(1, slow_from=30.0)
    assert outcome["refused_in_line"] > 0, outcome
    assert outcome["missed"] <= outcome["refused_in_line"] // 2, outcome


def test_a_waiting_answer_that_cannot_make_it_is_refused_before_its_deadline() -> None:
    q = queue(hold=2.0)
    q.enter("a", None)
    waiting = q.enter("b", 10.0)  # ~2 s + ~2 s
    assert q.hopeless(waiting, 9.0) is None
    refusal = q.hopeless(waiting, 3.0)  # the running answer will take ~2 s, its own ~2 s
    assert refusal is not None and refusal.reason == "LLM_QUEUE_WAIT_EXCEEDS_DEADLINE"
