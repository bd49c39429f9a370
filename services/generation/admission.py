"""Admission control in front of the LLM server: at most `slots` calls run at
once; the others wait in a bounded queue that is fair across tenants and aware
of deadlines.

Why: an LLM server runs a handful of requests at a time (the bundled llama.cpp
server one). Sent everything at once it times some out after they waited —
UNAVAILABLE or DEADLINE_EXCEEDED for work that was only queued. Here a request
either gets a slot, waits for one in the open (its position is known and sent
to the caller), or is refused at once with RESOURCE_EXHAUSTED and a retry delay:
when the queue is full, when its tenant already has its share of the queue, or
when it could not start and finish before its deadline anyway.

Fairness: each tenant has its own FIFO line; a freed slot goes to the next
tenant in turn (round robin), so one tenant's burst of 30 questions waits
behind another tenant's single question, not in front of it.

Reservations: the gateway asks (CheckAdmission) before it embeds and retrieves,
so that a refusal costs the caller milliseconds, not a retrieval. An accepted
check leaves a placeholder in the tenant's line (`reserve`), which the answer
takes over when it arrives (`enter` with the reservation): the checks that
passed count against the bounds and the waits of the checks after them, and a
burst of questions does not all pass the check before any reaches the queue.
A placeholder is never given a slot (the answer is not here yet): the next
arrived ticket is, and the placeholder's tenant keeps its turn. Placeholders
lapse after `reservation_ttl_s` (a gateway that died, or abstained and could
not say so).

The wait estimate is conservative, so that an accepted answer does not run out
of its deadline in the queue: one answer's time is a high percentile of recent
slot hold times (not their mean), and the requests served before a new one
count every other active tenant's possible arrivals (round robin puts up to
k + 1 of each other tenant before a tenant's k-th waiting request, whether they
are in line yet or not).
"""

from __future__ import annotations

import asyncio
import math
import time
import uuid
from collections import Counter, OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from services.common.errors import DeadlineExceeded, ResourceExhausted

#: recent slot hold times the estimate is taken from
HOLD_WINDOW = 32
#: the percentile of those that counts as one answer's time (conservative: a
#: mean underestimates a queue that slows down)
HOLD_PERCENTILE = 0.9
#: how long a reservation keeps its place without its answer arriving
RESERVATION_TTL_S = 30.0
#: a tenant that asked within this long counts as active: it may ask again (a
#: client honouring a refusal's RetryInfo comes back) and take turns before
#: requests queued meanwhile
ACTIVE_WINDOW_S = 60.0
#: most tenants remembered as active (the least recent forgotten first)
MAX_ACTIVE_TENANTS = 1000


@dataclass(frozen=True)
class QueueState:
    """Where a waiting request stands: requests served before it, expected wait."""

    position: int
    estimated_wait_s: float


@dataclass(eq=False)
class Ticket:
    """One request's claim on a slot (a placeholder until its answer arrives)."""

    tenant: str
    enqueued_at: float
    granted: asyncio.Event = field(default_factory=asyncio.Event)
    started_at: float = 0.0
    released: bool = False
    #: its hold time feeds the estimate (answers); short calls (query rewrites) do
    #: not, or they would shrink the estimate answers are refused on
    measured: bool = True
    #: False for a reservation whose answer has not arrived yet
    arrived: bool = True
    reservation: str = ""
    expires_at: float = math.inf


class AdmissionQueue:
    def __init__(
        self,
        slots: int,
        max_waiting: int,
        max_waiting_per_tenant: int,
        *,
        initial_hold_s: float = 5.0,
        reservation_ttl_s: float = RESERVATION_TTL_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if slots < 1:
            raise ValueError("slots must be at least 1")
        self.slots = slots
        self.max_waiting = max_waiting
        self.max_waiting_per_tenant = max_waiting_per_tenant
        self.reservation_ttl_s = reservation_ttl_s
        self.clock = clock
        self.initial_hold_s = initial_hold_s
        self._holds: deque[float] = deque(maxlen=HOLD_WINDOW)
        self.running = 0
        self._running_tenants: Counter[str] = Counter()
        # tenant -> its waiting tickets (placeholders included), oldest first; the
        # order of the dict is the round robin's (the tenant served last moves to the end)
        self._lines: OrderedDict[str, deque[Ticket]] = OrderedDict()
        self.waiting = 0
        self._reservations: dict[str, Ticket] = {}
        # tenant -> when it last asked, least recent first
        self._seen: OrderedDict[str, float] = OrderedDict()

    @property
    def reserved(self) -> int:
        """Placeholders in line (checked, their answers not here yet)."""
        return len(self._reservations)

    @property
    def hold_s(self) -> float:
        """One answer's time for admission: the HOLD_PERCENTILE of recent hold
        times (nearest rank), `initial_hold_s` before the first."""
        return self._hold_percentile(HOLD_PERCENTILE)

    def _hold_percentile(self, fraction: float) -> float:
        if not self._holds:
            return self.initial_hold_s
        ordered = sorted(self._holds)
        return ordered[min(len(ordered) - 1, math.ceil(fraction * len(ordered)) - 1)]

    # --- what callers see ----------------------------------------------------------------
    def enter(
        self,
        tenant: str,
        time_remaining_s: float | None,
        reservation: str = "",
        *,
        measured: bool = True,
    ) -> Ticket:
        """A granted ticket, or one waiting in line; RESOURCE_EXHAUSTED when the
        request cannot be queued (full, over its tenant's share, or it would not
        finish before its deadline). With the id of a live reservation of the same
        tenant the request takes the placeholder's place in line (only the deadline
        is checked again: the queue may have slowed down since)."""
        self._expire()
        self._note(tenant)
        placeholder = self._reservations.get(reservation) if reservation else None
        if placeholder is not None and placeholder.tenant == tenant:
            del self._reservations[reservation]
            try:
                self._check_deadline(placeholder, time_remaining_s)
            except ResourceExhausted:
                self._leave_line(placeholder)
                placeholder.released = True
                raise
            placeholder.arrived = True
            self._grant_next()
            return placeholder
        ticket = self._join(tenant, time_remaining_s, measured=measured)
        self._grant_next()
        return ticket

    def reserve(self, tenant: str, time_remaining_s: float | None) -> Ticket:
        """CheckAdmission: the same refusals as `enter`; when accepted, a placeholder
        in the tenant's line that the answer takes over (its id in `.reservation`)."""
        self._expire()
        self._note(tenant)
        ticket = self._join(tenant, time_remaining_s, arrived=False)
        ticket.reservation = uuid.uuid4().hex
        ticket.expires_at = ticket.enqueued_at + self.reservation_ttl_s
        self._reservations[ticket.reservation] = ticket
        return ticket

    def cancel(self, reservation: str) -> bool:
        """Gives back an unused reservation (the answer will not come); False when
        there is none by that id (taken over, lapsed or unknown)."""
        ticket = self._reservations.pop(reservation, None)
        if ticket is None:
            return False
        ticket.released = True
        self._leave_line(ticket)
        return True

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
            self._running_tenants[ticket.tenant] -= 1
            if self._running_tenants[ticket.tenant] <= 0:
                del self._running_tenants[ticket.tenant]
            if ticket.measured:
                self._holds.append(self.clock() - ticket.started_at)
            self._grant_next()
        else:
            self._leave_line(ticket)

    def hopeless(self, ticket: Ticket, time_remaining_s: float) -> ResourceExhausted | None:
        """For a ticket waiting in line: the refusal to send now when it cannot make
        its deadline even if the answers ahead take their median time (the queue
        slowed down after it was accepted) — better refused now, its place given to
        others, than DEADLINE_EXCEEDED at the deadline."""
        if ticket.granted.is_set():
            return None
        median = self._hold_percentile(0.5)
        expected = self._wait_estimate(self._position(ticket), median)
        if expected + median <= time_remaining_s:
            return None
        return ResourceExhausted(
            f"the LLM queue slowed down: this answer would not finish before the deadline "
            f"(about {expected:.1f} s of queue ahead and {median:.1f} s per answer, "
            f"{max(time_remaining_s, 0):.1f} s left)",
            reason="LLM_QUEUE_WAIT_EXCEEDS_DEADLINE",
            **self._refusal_details(expected),
        )

    def deadline_passed(self, ticket: Ticket) -> DeadlineExceeded:
        waited = self.clock() - ticket.enqueued_at
        return DeadlineExceeded(
            f"the deadline passed after {waited:.1f} s in the LLM queue",
            reason="LLM_QUEUE_TIMEOUT",
            metadata={"waited_s": round(waited, 3)},
        )

    # --- admission -----------------------------------------------------------------------
    def _join(
        self,
        tenant: str,
        time_remaining_s: float | None,
        arrived: bool = True,
        measured: bool = True,
    ) -> Ticket:
        """A new ticket at the end of its tenant's line, or RESOURCE_EXHAUSTED."""
        line = self._lines.get(tenant)
        index = len(line) if line is not None else 0
        starts_at_once = self._ahead(tenant, index) < self.slots - self.running
        if not starts_at_once:
            if self.waiting >= self.max_waiting:
                raise ResourceExhausted(
                    f"the LLM queue is full ({self.waiting} requests waiting for "
                    f"{self.slots} slot(s))",
                    reason="LLM_QUEUE_FULL",
                    **self._refusal_details(),
                )
            if index >= self.max_waiting_per_tenant:
                raise ResourceExhausted(
                    f"this tenant already has {index} requests waiting for the LLM "
                    f"(RAGMESH_GENERATION_LLM_MAX_QUEUED_PER_TENANT)",
                    reason="LLM_TENANT_QUEUE_FULL",
                    **self._refusal_details(),
                )
            self._refuse_past_deadline(self._worst_wait(tenant, index), time_remaining_s)
        ticket = Ticket(tenant, self.clock(), arrived=arrived, measured=measured)
        if line is None:
            line = self._lines[tenant] = deque()
        line.append(ticket)
        self.waiting += 1
        return ticket

    def _check_deadline(self, ticket: Ticket, time_remaining_s: float | None) -> None:
        """A placeholder's answer arrived: can it still make its deadline from where
        it stands now?"""
        line = self._lines[ticket.tenant]
        index = line.index(ticket)
        if self._ahead(ticket.tenant, index) < self.slots - self.running:
            return
        self._refuse_past_deadline(self._worst_wait(ticket.tenant, index), time_remaining_s)

    def _refuse_past_deadline(self, expected: float, time_remaining_s: float | None) -> None:
        # the answer itself takes a hold time too: refuse now what would time out
        hold = self.hold_s
        if time_remaining_s is not None and expected + hold > time_remaining_s:
            raise ResourceExhausted(
                f"the LLM would not finish this answer before the deadline: about "
                f"{expected:.1f} s of queue ahead and {hold:.1f} s per answer, "
                f"{max(time_remaining_s, 0):.1f} s left",
                reason="LLM_QUEUE_WAIT_EXCEEDS_DEADLINE",
                **self._refusal_details(expected),
            )

    def _worst_wait(self, tenant: str, index: int) -> float:
        return self._wait_estimate(self._ahead(tenant, index, worst=True))

    # --- the queue ---------------------------------------------------------------------
    def _grant(self, ticket: Ticket) -> None:
        self.running += 1
        self._running_tenants[ticket.tenant] += 1
        ticket.started_at = self.clock()
        ticket.granted.set()

    def _grant_next(self) -> None:
        """Free slots to the arrived tickets, tenants in turn. A tenant whose line
        holds only placeholders is passed over and keeps its turn."""
        while self.running < self.slots:
            found = next(
                (
                    (tenant, line, ticket)
                    for tenant, line in self._lines.items()
                    for ticket in line
                    if ticket.arrived
                ),
                None,
            )
            if found is None:
                return
            tenant, line, ticket = found
            line.remove(ticket)
            self.waiting -= 1
            if line:
                self._lines.move_to_end(tenant)  # its next request waits for the others
            else:
                del self._lines[tenant]
            self._grant(ticket)

    def _leave_line(self, ticket: Ticket) -> None:
        line = self._lines.get(ticket.tenant)
        if line is not None and ticket in line:
            line.remove(ticket)
            self.waiting -= 1
            if not line:
                del self._lines[ticket.tenant]
        if ticket.reservation:
            self._reservations.pop(ticket.reservation, None)
        self._grant_next()

    def _expire(self) -> None:
        now = self.clock()
        for reservation, ticket in list(self._reservations.items()):
            if ticket.expires_at <= now:
                self.cancel(reservation)
        while self._seen and (
            next(iter(self._seen.values())) < now - ACTIVE_WINDOW_S
            or len(self._seen) > MAX_ACTIVE_TENANTS
        ):
            self._seen.popitem(last=False)

    def _note(self, tenant: str) -> None:
        self._seen[tenant] = self.clock()
        self._seen.move_to_end(tenant)

    def _position(self, ticket: Ticket) -> int:
        """Requests the round robin serves before `ticket`."""
        line = self._lines.get(ticket.tenant)
        if line is None or ticket not in line:
            return 0
        return self._ahead(ticket.tenant, line.index(ticket))

    def _ahead(self, tenant: str, index: int, *, worst: bool = False) -> int:
        """Requests served before the `index`-th of `tenant`'s line. Each round
        serves every tenant with requests left once, in the dict's order (a tenant
        not in line yet joins at the end): the k-th request of a tenant comes after
        k + 1 of each tenant before it and k of each tenant after it, as far as
        they have requests in line.

        `worst`: as many as the other active tenants (in line, holding a slot, or
        asked within ACTIVE_WINDOW_S) could put before it, counting requests they
        have not sent yet: k + 1 of each before it, k of each after it. A tenant
        idle longer may still come; the percentile absorbs some of that."""
        ahead, before = index, True
        for other, line in self._lines.items():
            if other == tenant:
                before = False
                continue
            may = index + (1 if before else 0)
            ahead += may if worst else min(len(line), may)
        if worst:  # active tenants with none in line would join the round at its end
            idle = (set(self._seen) | set(self._running_tenants)) - set(self._lines) - {tenant}
            ahead += len(idle) * index
            # no more than the queue holds (with many tenants, each asking now and then,
            # the count would otherwise grow with their number)
            ahead = min(ahead, max(self.max_waiting, index))
        return ahead

    def _wait_estimate(self, ahead: int, hold_s: float | None = None) -> float:
        """Seconds until a request with `ahead` requests before it gets a slot:
        a full hold time per round of `slots` (pessimistic about the calls running
        now, which may be near their end)."""
        free = self.slots - self.running
        rounds = max(0, math.ceil((ahead + 1 - free) / self.slots))
        return rounds * (self.hold_s if hold_s is None else hold_s)

    def _refusal_details(self, retry_after_s: float | None = None) -> dict[str, Any]:
        """The metadata and retry delay of a refusal (by default: one hold time,
        when a slot is likely to have freed)."""
        retry = retry_after_s if retry_after_s is not None else self.hold_s
        return {
            "metadata": {"waiting": self.waiting, "slots": self.slots},
            "retry_after_s": max(0.5, min(retry, 60.0)),
        }
