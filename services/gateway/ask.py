"""Ask: retrieve passages, then stream the generation service's answer, its
citations mapped back to the retrieved chunks (document and offsets).

The events are the public API's AskResponse messages: sources first, then
answer deltas, then the final answer.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field

from ragmesh.common.v1 import common_pb2
from ragmesh.gateway.v1 import gateway_pb2 as pb
from ragmesh.generation.v1 import generation_pb2
from services.common import api
from services.common.deadlines import Deadline
from services.common.errors import InvalidArgument
from services.gateway import validation as v
from services.gateway.clients import Downstream
from services.gateway.config import GatewaySettings
from services.gateway.convert import cited_sources
from services.gateway.search import Searcher, SearchParams, check_search_enums

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
    rerank: bool | None = None


class Asker:
    def __init__(
        self, searcher: Searcher, downstream: Downstream, settings: GatewaySettings
    ) -> None:
        self.searcher = searcher
        self.downstream = downstream
        self.settings = settings

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
        return search

    async def ask(
        self, tenant: str, params: AskParams, deadline: Deadline
    ) -> AsyncIterator[pb.AskResponse]:
        start = time.perf_counter()
        search = self.check(params)
        result = await self.searcher.retrieve(tenant, search, deadline)
        retrieval_ms = (time.perf_counter() - start) * 1000
        sources = result.citations(numbered=True)
        by_id = {c.chunk_id: c for c in sources}
        # The sources wait for the generation service's first event: when its
        # queue refuses the answer at once (RESOURCE_EXHAUSTED with RetryInfo),
        # the client has received nothing yet and may call again.
        pending_sources: pb.AskResponse | None = pb.AskResponse(
            sources=pb.AskSources(sources=sources, rerank=result.rerank_pb())
        )
        generate = generation_pb2.GenerateAnswerRequest(
            question=params.question,
            max_tokens=params.max_tokens,
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
            generate.temperature = params.temperature
        first_token_ms = 0.0
        async for event in self.downstream.generate(generate, tenant, deadline.remaining()):
            if pending_sources is not None:
                yield pending_sources
                pending_sources = None
            kind = event.WhichOneof("event")
            if kind == "queued":
                yield pb.AskResponse(queued=event.queued)
            elif kind == "delta":
                if not first_token_ms:
                    first_token_ms = (time.perf_counter() - start) * 1000
                yield pb.AskResponse(delta=pb.AskDelta(text=event.delta.text))
            elif kind == "final":
                final = event.final
                total_ms = (time.perf_counter() - start) * 1000
                yield pb.AskResponse(
                    final=pb.AskFinal(
                        answer=final.answer,
                        citations=cited_sources(final.citations, by_id),
                        grounded=final.grounded,
                        abstained=final.abstained,
                        finish_reason=generation_pb2.FinishReason.Name(
                            final.finish_reason
                        ).removeprefix("FINISH_REASON_"),
                        usage=final.usage,
                        retrieval_ms=retrieval_ms,
                        first_token_ms=first_token_ms or total_ms,
                        total_ms=total_ms,
                    )
                )
