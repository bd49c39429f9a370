"""Admission control in front of the LLM server: at most `slots` calls run at
once; the others wait in a bounded queue that is fair across tenants and aware
of deadlines.

Why: an LLM server runs a handful of requests at a time (the bundled llama.cpp
server one). Sent everything at once it times some out after they waited —
UNAVAILABLE or DEADLINE_EXCEEDED for work that was only queued. Here a request
either gets a slot, waits for one in the open (its position is known and sent
to the caller), or is refused at once with RESOURCE_EXHAUSTED and a retry delay:
when the queue is full, when its tenant already has its share of the queue, or
when it could not start before its deadline anyway.

Fairness: each tenant has its own FIFO line; a freed slot goes to the next
tenant in turn (round robin), so one tenant's burst of 30 questions waits
behind another tenant's single question, not in front of it.

The wait estimate is the mean slot hold time (an exponential moving average of
finished calls) times the number of "rounds" ahead of the request.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from services.common.errors import DeadlineExceeded, ResourceExhausted

#: weight of the newest hold time in the moving average
EWMA_WEIGHT = 0.2


@dataclass(frozen=True)
class QueueState:
    """Where a waiting request stands: requests served before it, expected wait."""

    position: int
    estimated_wait_s: float


@dataclass(eq=False)
class Ticket:
    """One request's claim on a slot."""

    tenant: str
    enqueued_at: float
    granted: asyncio.Event = field(default_factory=asyncio.Event)
    started_at: float = 0.0
    released: bool = False
    #: its hold time feeds the estimate (answers); short calls (query rewrites) do
    #: not, or they would shrink the estimate answers are refused on
    measured: bool = True


class AdmissionQueue:
    def __init__(
        self,
        slots: int,
        max_waiting: int,
        max_waiting_per_tenant: int,
        *,
        initial_hold_s: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if slots < 1:
            raise ValueError("slots must be at least 1")
        self.slots = slots
        self.max_waiting = max_waiting
        self.max_waiting_per_tenant = max_waiting_per_tenant
        self.clock = clock
        self.mean_hold_s = initial_hold_s
        self.running = 0
        # tenant -> its waiting tickets, oldest first; the order of the dict is the
        # round robin's (the tenant served last moves to the end)
        self._lines: OrderedDict[str, deque[Ticket]] = OrderedDict()
        self.waiting = 0

    # --- what callers see ----------------------------------------------------------------
    def enter(
        self, tenant: str, time_remaining_s: float | None, *, measured: bool = True
    ) -> Ticket:
        """A granted ticket, or one waiting in line; RESOURCE_EXHAUSTED when the
        request cannot be queued (full, over its tenant's share, or it would not
        start before its deadline)."""
        ticket = Ticket(tenant, self.clock(), measured=measured)
        if self.running < self.slots and self.waiting == 0:
            self._grant(ticket)
            return ticket
        line = self._lines.get(tenant)
        if self.waiting >= self.max_waiting:
            raise ResourceExhausted(
                f"the LLM queue is full ({self.waiting} requests waiting for {self.slots} slot(s))",
                reason="LLM_QUEUE_FULL",
                **self._refusal_details(),
            )
        if line is not None and len(line) >= self.max_waiting_per_tenant:
            raise ResourceExhausted(
                f"this tenant already has {len(line)} requests waiting for the LLM "
                f"(RAGMESH_GENERATION_LLM_MAX_QUEUED_PER_TENANT)",
                reason="LLM_TENANT_QUEUE_FULL",
                **self._refusal_details(),
            )
        expected = self._wait_estimate(self._position_if_added(tenant))
        # the answer itself takes about a hold time too: refuse now what would time out
        if time_remaining_s is not None and expected + self.mean_hold_s > time_remaining_s:
            raise ResourceExhausted(
                f"the LLM would not finish this answer before the deadline: about "
                f"{expected:.1f} s of queue ahead and {self.mean_hold_s:.1f} s per answer, "
                f"{max(time_remaining_s, 0):.1f} s left",
                reason="LLM_QUEUE_WAIT_EXCEEDS_DEADLINE",
                **self._refusal_details(expected),
            )
        if line is None:
            line = self._lines[tenant] = deque()
        line.append(ticket)
        self.waiting += 1
        return ticket

    def state(self, ticket: Ticket) -> QueueState:
        """Where a waiting ticket stands now."""
        ahead = self._position(ticket)
        return QueueState(ahead + 1, self._wait_estimate(ahead))

    async def wait(self, ticket: Ticket, timeout_s: float | None) -> bool:
        """True once the ticket holds a slot; False when `timeout_s` passed first
        (the ticket keeps its place)."""
        if ticket.granted.is_set():
            return True
        try:
            await asyncio.wait_for(ticket.granted.wait(), timeout_s)
        except TimeoutError:
            return ticket.granted.is_set()
        return True

    def release(self, ticket: Ticket) -> None:
        """Gives the slot back (or leaves the line); the next tenant in turn gets it.
        Idempotent: called in a `finally`."""
        if ticket.released:
            return
        ticket.released = True
        if ticket.granted.is_set():
            self.running -= 1
            if ticket.measured:
                held = self.clock() - ticket.started_at
                self.mean_hold_s += EWMA_WEIGHT * (held - self.mean_hold_s)
        else:
            line = self._lines.get(ticket.tenant)
            if line is not None and ticket in line:
                line.remove(ticket)
                self.waiting -= 1
                if not line:
                    del self._lines[ticket.tenant]
        self._grant_next()

    def deadline_passed(self, ticket: Ticket) -> DeadlineExceeded:
        waited = self.clock() - ticket.enqueued_at
        return DeadlineExceeded(
            f"the deadline passed after {waited:.1f} s in the LLM queue",
            reason="LLM_QUEUE_TIMEOUT",
            metadata={"waited_s": round(waited, 3)},
        )

    # --- the queue ---------------------------------------------------------------------
    def _grant(self, ticket: Ticket) -> None:
        self.running += 1
        ticket.started_at = self.clock()
        ticket.granted.set()

    def _grant_next(self) -> None:
        while self.running < self.slots and self._lines:
            tenant, line = next(iter(self._lines.items()))
            ticket = line.popleft()
            self.waiting -= 1
            if line:
                self._lines.move_to_end(tenant)  # its next request waits for the others
            else:
                del self._lines[tenant]
            self._grant(ticket)

    def _position(self, ticket: Ticket) -> int:
        """Requests the round robin serves before `ticket`."""
        line = self._lines.get(ticket.tenant)
        if line is None or ticket not in line:
            return 0
        return self._ahead(ticket.tenant, line.index(ticket))

    def _position_if_added(self, tenant: str) -> int:
        line = self._lines.get(tenant)
        return self._ahead(tenant, len(line) if line is not None else 0)

    def _ahead(self, tenant: str, index: int) -> int:
        """Requests served before the `index`-th of `tenant`'s line. Each round
        serves every tenant with requests left once, in the dict's order (a tenant
        not in line yet joins at the end): the k-th request of a tenant comes after
        k + 1 of each tenant before it and k of each tenant after it."""
        ahead, before = index, True
        for other, line in self._lines.items():
            if other == tenant:
                before = False
                continue
            ahead += min(len(line), index + (1 if before else 0))
        return ahead

    def _wait_estimate(self, ahead: int) -> float:
        """Seconds until a request with `ahead` requests before it gets a slot:
        a full hold time per round of `slots` (pessimistic about the calls running
        now, which may be near their end)."""
        free = self.slots - self.running
        rounds = max(0, math.ceil((ahead + 1 - free) / self.slots))
        return rounds * self.mean_hold_s

    def _refusal_details(self, retry_after_s: float | None = None) -> dict[str, Any]:
        """The metadata and retry delay of a refusal (by default: one hold time,
        when a slot is likely to have freed)."""
        retry = retry_after_s if retry_after_s is not None else self.mean_hold_s
        return {
            "metadata": {"waiting": self.waiting, "slots": self.slots},
            "retry_after_s": max(0.5, min(retry, 60.0)),
        }
