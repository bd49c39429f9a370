"""Ask's admission pre-check: before the gateway embeds the question and
retrieves passages for an answer that will go to the LLM, it asks the generation
service's queue (CheckAdmission) whether the answer would be refused now.

Why: the queue's refusal (RESOURCE_EXHAUSTED with RetryInfo) used to come only
when the answer reached GenerateAnswer, after the embedding, the search and the
sentence scoring — seconds under load, all spent on an answer that was then
refused. Asked first, the refusal costs the caller one unary round trip.

An accepted check is a reservation: a place in the tenant's line that the
answer's GenerateAnswer takes over. When the Ask ends without using it (an
abstention, a verbatim answer, an error, a cancelled call) it is given back in
the background, when the Ask's task ends; one the gateway could not give back
lapses on its own.

The race: the queue may change between the check and GenerateAnswer (answers
slower than expected, the reservation lapsed during a slow retrieval), so
GenerateAnswer can still refuse — after retrieval, before any message reached
the caller (ask.py holds the sources until the generation service accepts).

The check fails open: a generation service that cannot answer it (down,
unimplemented in an older version, slow) leaves the decision to GenerateAnswer,
whose own failure then reaches the caller as before.
"""

from __future__ import annotations

import asyncio
import logging

from ragmesh.generation.v1 import generation_pb2
from services.common.deadlines import Deadline
from services.common.errors import ResourceExhausted, ServiceError
from services.gateway.answers.compose import GENERATIVE
from services.gateway.clients import Downstream

log = logging.getLogger("ragmesh.gateway")

#: longest the check may take before the Ask goes on without it
CHECK_TIMEOUT_S = 1.0
#: longest a release may take (in the background)
RELEASE_TIMEOUT_S = 2.0


class AdmissionCheck:
    def __init__(self, downstream: Downstream, enabled: bool = True) -> None:
        self.downstream = downstream
        self.enabled = enabled
        #: reservations made and not yet handed to a GenerateAnswer
        self._unused: set[str] = set()
        self._releases: set[asyncio.Task[None]] = set()

    async def reserve(self, tenant: str, mode: int, deadline: Deadline) -> str:
        """The reservation for the answer's GenerateAnswer ("" when the answer does
        not go to the LLM, the check is off, or it failed open); RESOURCE_EXHAUSTED
        when the queue would refuse the answer now."""
        if not self.enabled or mode != GENERATIVE:
            return ""
        request = generation_pb2.CheckAdmissionRequest(
            time_remaining_ms=deadline.remaining() * 1000
        )
        try:
            checked = await self.downstream.check_admission(
                request, tenant, deadline.remaining(CHECK_TIMEOUT_S)
            )
        except ResourceExhausted:
            raise
        except ServiceError as err:
            log.warning("admission check failed, going on without it: %s", err)
            return ""
        reservation = checked.reservation
        task = asyncio.current_task()
        if reservation and task is not None:
            self._unused.add(reservation)
            # The Ask's task ends however the Ask ends; give back what it did not use.
            task.add_done_callback(lambda _: self._release_unused(tenant, reservation))
        return reservation

    def claim(self, reservation: str) -> str:
        """The reservation, marked as handed to GenerateAnswer (which takes it over)."""
        self._unused.discard(reservation)
        return reservation

    def _release_unused(self, tenant: str, reservation: str) -> None:
        if reservation not in self._unused:
            return
        self._unused.discard(reservation)
        try:
            task = asyncio.get_running_loop().create_task(self._release(tenant, reservation))
        except RuntimeError:  # the loop is closing: the reservation lapses
            return
        self._releases.add(task)
        task.add_done_callback(self._releases.discard)

    async def _release(self, tenant: str, reservation: str) -> None:
        try:
            await self.downstream.check_admission(
                generation_pb2.CheckAdmissionRequest(release=reservation),
                tenant,
                RELEASE_TIMEOUT_S,
            )
        except ServiceError as err:  # it lapses on its own
            log.info("could not give back an admission reservation: %s", err)
