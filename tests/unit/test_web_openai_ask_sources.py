"""When the gateway's Ask sends the sources of an answer that goes to the LLM
(services/gateway/ask.py), against a stand-in generation service: as soon as the
generation service has taken the answer, not at the LLM's first token (which a busy
CPU puts tens of seconds later, and until which an OpenAI client's stream would
carry nothing); and still never before a refusal the queue sends at once, so that
a refused client has received nothing and may simply call again."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

from ragmesh.common.v1 import common_pb2
from ragmesh.gateway.v1 import gateway_pb2 as pb
from ragmesh.generation.v1 import generation_pb2 as gen
from services.common.deadlines import Deadline
from services.common.errors import ResourceExhausted
from services.gateway.answers.compose import Timer
from services.gateway.answers.verbatim import Selection
from services.gateway.ask import Asker, AskParams
from services.gateway.clients import ACCEPTED
from services.gateway.config import GatewaySettings
from services.gateway.search import Retrieved

SOURCES = pb.AskResponse(
    sources=pb.AskSources(sources=[common_pb2.Citation(chunk_id="c1", number=1, text="Milvus.")])
)
QUEUED = gen.GenerateAnswerResponse(queued=common_pb2.QueuePosition(position=2))
DELTA = gen.GenerateAnswerResponse(delta=gen.AnswerDelta(text="Milvus [1]."))
FINAL = gen.GenerateAnswerResponse(
    final=gen.FinalAnswer(answer="Milvus [1].", grounded=True, finish_reason=gen.FINISH_REASON_STOP)
)
WAIT = "wait"  # a step: until the test releases the stream (the LLM's first token)
#: longest a test waits for what must come at once (a loaded machine stretches "at once")
PROMPT_S = 10.0


class FakeDownstream:
    """The generation service's GenerateAnswer stream, played from a script."""

    def __init__(self, script: list[Any]) -> None:
        self.script = script
        self.release = asyncio.Event()
        self.closed = asyncio.Event()

    async def generate(
        self, request: Any, tenant: str, timeout_s: float, reservation: str = ""
    ) -> AsyncIterator[gen.GenerateAnswerResponse]:
        try:
            for step in self.script:
                if step == WAIT:
                    await self.release.wait()
                elif isinstance(step, Exception):
                    raise step
                else:
                    yield step
        finally:
            self.closed.set()


def answer(downstream: FakeDownstream) -> AsyncIterator[pb.AskResponse]:
    asker = Asker(None, downstream, GatewaySettings(), None)  # type: ignore[arg-type]
    return asker._generate(
        "tenant",
        AskParams(knowledge_base_id="kb", question="Where are the vectors?"),
        Retrieved(results=[], mode=0),
        SOURCES,
        Selection([], 0.0),
        Timer(time.perf_counter()),
        Deadline.after(60),
    )


async def next_within(events: AsyncIterator[pb.AskResponse]) -> pb.AskResponse:
    return await asyncio.wait_for(anext(events), PROMPT_S)


async def test_the_sources_do_not_wait_for_the_llms_first_token() -> None:
    # The generation service took the answer (a slot at once): nothing more comes until
    # the LLM's first token.
    downstream = FakeDownstream([ACCEPTED, WAIT, DELTA, FINAL])
    events = answer(downstream)
    first = await next_within(events)
    assert first.WhichOneof("event") == "sources"
    assert not downstream.release.is_set()  # the LLM has not written a token yet
    downstream.release.set()
    rest = [e.WhichOneof("event") async for e in events]
    assert rest == ["delta", "final"]


async def test_a_refusal_at_once_comes_before_anything() -> None:
    refused = ResourceExhausted("the LLM queue is full", reason="LLM_QUEUE_FULL", retry_after_s=2)
    events = answer(FakeDownstream([refused]))
    try:
        event = await next_within(events)
    except ResourceExhausted as err:
        assert err.reason == "LLM_QUEUE_FULL"
    else:
        raise AssertionError(f"an event before the refusal: {event}")


async def test_a_waiting_answer_gets_its_sources_and_place_at_once() -> None:
    downstream = FakeDownstream([ACCEPTED, QUEUED, WAIT, DELTA, FINAL])
    events = answer(downstream)
    kinds = [(await next_within(events)).WhichOneof("event") for _ in range(2)]
    assert kinds == ["sources", "queued"]
    downstream.release.set()
    assert [e.WhichOneof("event") async for e in events] == ["delta", "final"]


async def test_an_ask_that_ends_early_closes_the_generation_stream() -> None:
    downstream = FakeDownstream([ACCEPTED, WAIT, DELTA, FINAL])
    events = answer(downstream)
    assert (await next_within(events)).WhichOneof("event") == "sources"
    await events.aclose()  # type: ignore[attr-defined]
    await asyncio.wait_for(downstream.closed.wait(), PROMPT_S)
