"""The gateway's admission pre-check (services/gateway/admission.py) against a real
generation service: it checks only answers that go to the LLM, turns the queue's
refusal into the caller's, gives back a reservation its Ask did not use, and goes
on without the check when the generation service cannot answer it. No LLM call
is made (the checks answer from the queue's state)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from devstack.procs import free_port
from services.common.config import ServiceAddresses
from services.common.deadlines import Deadline
from services.common.errors import ResourceExhausted
from services.gateway.admission import AdmissionCheck
from services.gateway.answers.compose import GENERATIVE, VERBATIM
from services.gateway.clients import Downstream

pytestmark = [pytest.mark.llm]


@pytest.fixture(scope="module")
def generation(start_ragmesh_service: Any, llm_base_url: str) -> str:
    """One LLM slot and a queue of one place: one reservation fills it."""
    _, addr = start_ragmesh_service(
        "generation",
        env={
            "RAGMESH_GENERATION_LLM_BASE_URL": llm_base_url,
            "RAGMESH_GENERATION_LLM_MAX_CONCURRENCY": "1",
            "RAGMESH_GENERATION_LLM_MAX_QUEUED": "1",
            "RAGMESH_GENERATION_LLM_MAX_QUEUED_PER_TENANT": "1",
        },
    )
    return str(addr)


async def _downstream(generation_addr: str) -> AsyncIterator[Downstream]:
    downstream = Downstream(ServiceAddresses(generation_addr=generation_addr))
    await downstream.start()
    try:
        yield downstream
    finally:
        await downstream.close()


@pytest.fixture
async def check(generation: str) -> AsyncIterator[AdmissionCheck]:
    async for downstream in _downstream(generation):
        yield AdmissionCheck(downstream)


async def _reserve_in_a_task(check: AdmissionCheck, tenant: str) -> str:
    """A reservation made by a task that then ends, as an Ask's does."""
    return await asyncio.create_task(check.reserve(tenant, GENERATIVE, Deadline.after(60)))


async def _free_again(check: AdmissionCheck, tenant: str) -> str:
    """Until the queue takes a reservation of `tenant` (the release runs in the background)."""
    for _ in range(50):
        try:
            return await check.reserve(tenant, GENERATIVE, Deadline.after(60))
        except ResourceExhausted:
            await asyncio.sleep(0.1)
    raise AssertionError("the unused reservation was not given back")


async def test_only_answers_for_the_llm_are_checked(check: AdmissionCheck) -> None:
    assert await check.reserve("a", VERBATIM, Deadline.after(60)) == ""


async def test_a_full_queue_refuses_and_an_unused_place_is_given_back(
    check: AdmissionCheck,
) -> None:
    first = await _reserve_in_a_task(check, "a")  # its task ended without using it
    assert first
    # the place is given back when the task ends; until then another tenant may be refused
    second = await _free_again(check, "b")
    with pytest.raises(ResourceExhausted) as refused:
        await check.reserve("c", GENERATIVE, Deadline.after(60))
    assert refused.value.reason == "LLM_QUEUE_FULL"
    assert refused.value.retry_after_s is not None and refused.value.retry_after_s > 0
    # a claimed reservation is GenerateAnswer's to take over: the gateway keeps out of it
    check.claim(second)
    assert second not in check._unused
    await check._release("b", second)  # as GenerateAnswer would take it: the place is free
    assert await check.reserve("c", GENERATIVE, Deadline.after(60))


async def test_the_check_fails_open_when_the_generation_service_cannot_answer() -> None:
    async for downstream in _downstream(f"127.0.0.1:{free_port()}"):  # nothing listens
        assert await AdmissionCheck(downstream).reserve("a", GENERATIVE, Deadline.after(5)) == ""
