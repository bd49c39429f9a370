"""Ask: retrieve passages, then stream the answer: the generation service's,
its citations mapped back to the retrieved chunks (document and offsets), or a
verbatim answer or an abstention the gateway composes itself (answers/).

The events are the public API's AskResponse messages: sources first, then
answer deltas, then the final answer.
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
from collections.abc import AsyncGenerator, AsyncIterator, Iterator, Sequence
from dataclasses import dataclass, field
from typing import cast

from ragmesh.common.v1 import common_pb2
from ragmesh.gateway.v1 import gateway_pb2 as pb
from ragmesh.generation.v1 import generation_pb2
from services.common import api
from services.common.deadlines import Deadline
from services.common.errors import InvalidArgument
from services.gateway import validation as v
from services.gateway.admission import AdmissionCheck
from services.gateway.answers.compose import GENERATIVE, VERBATIM, AnswerComposer, Timer
from services.gateway.answers.verbatim import Selection
from services.gateway.clients import Downstream
from services.gateway.config import GatewaySettings
from services.gateway.conversation import Conversation, SearchQuery
from services.gateway.convert import cited_sources
from services.gateway.search import Retrieved, Searcher, SearchParams, check_search_enums
from services.generation.history import ChatTurn
from services.generation.history_proto import history_to_proto
from services.jobs.records import KnowledgeBaseRecord

MAX_TEMPERATURE = 2.0


@dataclass
class AskParams:
    knowledge_base_id: str
    question: str
    mode: int = 0
    top_k: int = 0
    filters: Sequence[common_pb2.FilterCondition] = field(default_factory=list)
    max_tokens: int = 0
    temperature: float | None = None
    answer_mode: int = 0
    require_citations: bool = False
    rerank: bool | None = None
    #: the conversation before the question, oldest first
    history: Sequence[ChatTurn] = ()


class Asker:
    def __init__(
        self,
        searcher: Searcher,
        downstream: Downstream,
        settings: GatewaySettings,
        composer: AnswerComposer,
    ) -> None:
        self.searcher = searcher
        self.downstream = downstream
        self.settings = settings
        self.composer = composer
        self.conversation = Conversation(downstream, settings)
        self.admission = AdmissionCheck(downstream, settings.ask_admission_check)

    def check(self, params: AskParams) -> SearchParams:
        """Validated parameters; the retrieval they imply."""
        s = self.settings
        v.check_kb_id(params.knowledge_base_id)
        v.check_text(params.question, "question", s.max_query_chars)
        top_k = api.top_k(params.top_k, s.default_top_k, s.max_top_k)
        if params.max_tokens < 0 or params.max_tokens > s.max_answer_tokens:
            raise InvalidArgument(
                f"max_tokens must be between 1 and {s.max_answer_tokens} (0: default)",
                reason="MAX_TOKENS_OUT_OF_RANGE",
            )
        if params.temperature is not None and not 0.0 <= params.temperature <= MAX_TEMPERATURE:
            raise InvalidArgument(
                f"temperature must be between 0 and {MAX_TEMPERATURE:g}",
                reason="TEMPERATURE_OUT_OF_RANGE",
            )
        search = SearchParams(
            knowledge_base_id=params.knowledge_base_id,
            query=params.question,
            mode=params.mode,
            top_k=top_k,
            filters=params.filters,
            rerank=params.rerank,
        )
        check_search_enums(search)
        self.composer.check_mode(params.answer_mode)
        params.history = self.conversation.check(params.history)
        return search

    async def ask(
        self, tenant: str, params: AskParams, deadline: Deadline
    ) -> AsyncIterator[pb.AskResponse]:
        """The events; the final one says what was searched (AskFinal.search_query)."""
        timer = Timer(time.perf_counter())
        search = self.check(params)
        known = await self.searcher.knowledge_base(tenant, params.knowledge_base_id)
        mode = self.composer.resolve_mode(params.answer_mode, known[0].answer_mode)
        # Would the LLM's queue refuse the answer? Ask it before the rewrite's and
        # the retrieval's work (a place in line is kept meanwhile).
        reservation = await self.admission.reserve(tenant, mode, deadline)
        query = await self.conversation.search_query(
            tenant, params.question, params.history, deadline
        )
        answer = self._answer(
            tenant, params, search, known, query, mode, reservation, timer, deadline
        )
        async for event in answer:
            if event.WhichOneof("event") == "final":
                query.stamp(event.final)
            yield event

    async def _answer(
        self,
        tenant: str,
        params: AskParams,
        search: SearchParams,
        known: tuple[KnowledgeBaseRecord, list[str]],
        query: SearchQuery,
        mode: int,
        reservation: str,
        timer: Timer,
        deadline: Deadline,
    ) -> AsyncIterator[pb.AskResponse]:
        # The search query's vector (the question itself without history) serves
        # the search and the sentences' scores alike: with history, relevance and
        # verbatim sentences are measured against the standalone query, since the
        # follow-up alone ("How tall is it?") resembles nothing in the passages.
        model = known[0].embedding_model  # the knowledge base's: its vectors were made by it
        vector = await self.downstream.embed_query(query.text, deadline.remaining(), model)
        search = dataclasses.replace(search, query=query.text)
        result = await self.searcher.retrieve(
            tenant, search, deadline, known=known, query_vector=vector
        )
        timer.retrieval_ms = timer.now_ms()
        sources = result.citations(numbered=True)
        sources_event = pb.AskResponse(
            sources=pb.AskSources(sources=sources, rerank=result.rerank_pb())
        )
        selection = await self.composer.select(query.text, vector, result.results, deadline, model)
        if self.composer.abstains(selection, model):
            yield sources_event
            for event in self.composer.abstention(
                params.question, mode, selection.relevance, timer
            ):
                yield event
        elif mode == VERBATIM:
            yield sources_event
            for event in self.composer.verbatim(selection, sources, timer):
                yield event
        else:
            async for event in self._generate(
                tenant, params, result, sources_event, selection, timer, deadline, reservation
            ):
                yield event

    async def _generate(
        self,
        tenant: str,
        params: AskParams,
        result: Retrieved,
        sources_event: pb.AskResponse,
        selection: Selection,
        timer: Timer,
        deadline: Deadline,
        reservation: str = "",
    ) -> AsyncIterator[pb.AskResponse]:
        """The generation service's answer. With require_citations its deltas are
        held back until the final says it is grounded; an ungrounded answer is
        replaced by the verbatim one (an abstention when no sentence was chosen).

        The sources wait until the generation service has taken the answer
        (clients.py's ACCEPTED: it has a place in the LLM's queue or a slot; the LLM's
        first token may be tens of seconds later on a busy CPU, and the client is not
        left on a silent stream meanwhile). A queue that refuses the answer
        (RESOURCE_EXHAUSTED with RetryInfo) does so before accepting it, so the client
        has received nothing yet and may call again."""
        sources = list(sources_event.sources.sources)
        pending: pb.AskResponse | None = sources_event
        held: list[pb.AskResponse] = []
        request = generate_request(params, result)
        reservation = self.admission.claim(reservation)
        # (an async generator: closed as soon as the Ask ends, however it ends)
        stream = cast(
            AsyncGenerator[generation_pb2.GenerateAnswerResponse | None, None],
            self.downstream.generate(request, tenant, deadline.remaining(), reservation),
        )
        async with contextlib.aclosing(stream):
            async for event in stream:
                if pending is not None:
                    yield pending
                    pending = None
                if event is None:  # ACCEPTED: the sources (above) could go
                    continue
                kind = event.WhichOneof("event")
                if kind == "queued":
                    yield pb.AskResponse(queued=event.queued)
                elif kind == "delta":
                    timer.token()
                    delta = pb.AskResponse(delta=pb.AskDelta(text=event.delta.text))
                    if params.require_citations:
                        held.append(delta)
                    else:
                        yield delta
                elif kind == "final":
                    final = event.final
                    if params.require_citations and not final.grounded and not final.abstained:
                        for replaced in self._replace_ungrounded(params, selection, sources, timer):
                            yield replaced
                        return
                    for delta in held:
                        yield delta
                    yield final_event(final, sources, selection, timer)

    def _replace_ungrounded(
        self,
        params: AskParams,
        selection: Selection,
        sources: list[common_pb2.Citation],
        timer: Timer,
    ) -> Iterator[pb.AskResponse]:
        """The verbatim answer, or an abstention when no sentence was chosen."""
        if selection.chosen:
            yield from self.composer.verbatim(selection, sources, timer, replaced_ungrounded=True)
        else:
            yield from self.composer.abstention(
                params.question, VERBATIM, selection.relevance, timer
            )


def generate_request(params: AskParams, result: Retrieved) -> generation_pb2.GenerateAnswerRequest:
    request = generation_pb2.GenerateAnswerRequest(
        question=params.question,
        max_tokens=params.max_tokens,
        history=history_to_proto(params.history),
        passages=[
            generation_pb2.Passage(
                id=r.chunk.id,
                text=r.chunk.text,
                score=r.score,
                title=r.chunk.title,
                source=r.chunk.source,
            )
            for r in result.results
        ],
    )
    if params.temperature is not None:
        request.temperature = params.temperature
    return request


def final_event(
    final: generation_pb2.FinalAnswer,
    sources: list[common_pb2.Citation],
    selection: Selection,
    timer: Timer,
) -> pb.AskResponse:
    """The generation service's final event as Ask's, citations mapped to the sources."""
    total_ms = timer.now_ms()
    return pb.AskResponse(
        final=pb.AskFinal(
            answer=final.answer,
            citations=cited_sources(final.citations, {c.chunk_id: c for c in sources}),
            grounded=final.grounded,
            abstained=final.abstained,
            finish_reason=generation_pb2.FinishReason.Name(final.finish_reason).removeprefix(
                "FINISH_REASON_"
            ),
            usage=final.usage,
            retrieval_ms=timer.retrieval_ms,
            first_token_ms=timer.first_token_ms or total_ms,
            total_ms=total_ms,
            answer_mode=GENERATIVE,
            relevance=selection.relevance,
        )
    )
