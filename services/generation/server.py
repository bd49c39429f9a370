"""GenerationService over gRPC: protobuf in and out, the logic lives in answer.py."""

from __future__ import annotations

import logging
import math
from collections.abc import AsyncIterator

import grpc

from ragmesh.common.v1 import common_pb2
from ragmesh.generation.v1 import generation_pb2, generation_pb2_grpc
from services.common import metrics
from services.common.api import RESERVATION_METADATA, TENANT_METADATA
from services.common.config import DEFAULT_PORTS
from services.common.errors import InvalidArgument, ResourceExhausted
from services.generation.admission import AdmissionQueue
from services.generation.answer import AnswerEvent, AnswerGenerator
from services.generation.config import GenerationSettings
from services.generation.history_proto import history_from_proto
from services.generation.llm import LLMClient, OpenAILLMClient
from services.generation.packing import (
    AutoTokenCounter,
    ByteEstimateCounter,
    ServerTokenCounter,
    TokenCounter,
)
from services.generation.prompt import PromptTemplate
from services.generation.types import (
    AnswerDelta,
    AnswerRequest,
    FinalAnswer,
    FinishReason,
    Passage,
    Queued,
    RewriteRequest,
)

log = logging.getLogger("ragmesh.generation")

SERVICE_NAME = "ragmesh.generation.v1.GenerationService"

_FINISH = {
    FinishReason.UNSPECIFIED: generation_pb2.FINISH_REASON_UNSPECIFIED,
    FinishReason.STOP: generation_pb2.FINISH_REASON_STOP,
    FinishReason.LENGTH: generation_pb2.FINISH_REASON_LENGTH,
    FinishReason.ABSTAINED: generation_pb2.FINISH_REASON_ABSTAINED,
    FinishReason.CONTENT_FILTER: generation_pb2.FINISH_REASON_CONTENT_FILTER,
}


def rewrite_from_proto(msg: generation_pb2.RewriteQueryRequest, tenant: str = "") -> RewriteRequest:
    return RewriteRequest(
        question=msg.question,
        history=history_from_proto(msg.history),
        max_tokens=msg.max_tokens,
        tenant=tenant,
    )


def request_from_proto(
    msg: generation_pb2.GenerateAnswerRequest, tenant: str = ""
) -> AnswerRequest:
    return AnswerRequest(
        question=msg.question,
        passages=tuple(
            Passage(id=p.id, text=p.text, score=p.score, title=p.title, source=p.source)
            for p in msg.passages
        ),
        max_tokens=msg.max_tokens,
        temperature=msg.temperature if msg.HasField("temperature") else None,
        min_relevance=msg.min_relevance if msg.HasField("min_relevance") else None,
        tenant=tenant,
        history=history_from_proto(msg.history),
    )


def tenant_of(context: grpc.aio.ServicerContext) -> str:
    for key, value in context.invocation_metadata() or ():
        if key == TENANT_METADATA:
            return str(value)[:128]
    return ""


def reservation_of(context: grpc.aio.ServicerContext) -> str:
    for key, value in context.invocation_metadata() or ():
        if key == RESERVATION_METADATA:
            return str(value)[:64]
    return ""


def event_to_proto(event: AnswerEvent) -> generation_pb2.GenerateAnswerResponse:
    if isinstance(event, AnswerDelta):
        return generation_pb2.GenerateAnswerResponse(
            delta=generation_pb2.AnswerDelta(text=event.text)
        )
    if isinstance(event, Queued):
        return generation_pb2.GenerateAnswerResponse(
            queued=common_pb2.QueuePosition(
                position=event.position, estimated_wait_ms=event.estimated_wait_s * 1000
            )
        )
    return generation_pb2.GenerateAnswerResponse(final=final_to_proto(event))


def final_to_proto(final: FinalAnswer) -> generation_pb2.FinalAnswer:
    return generation_pb2.FinalAnswer(
        answer=final.answer,
        citations=[
            generation_pb2.Citation(number=c.number, passage_id=c.passage_id)
            for c in final.citations
        ],
        invalid_citation_numbers=list(final.invalid_citation_numbers),
        grounded=final.grounded,
        abstained=final.abstained,
        finish_reason=_FINISH[final.finish_reason],
        usage=common_pb2.TokenUsage(
            prompt_tokens=final.usage.prompt_tokens,
            completion_tokens=final.usage.completion_tokens,
            total_tokens=final.usage.total_tokens,
        ),
        timings=generation_pb2.Timings(
            first_token_ms=final.timings.first_token_ms,
            total_ms=final.timings.total_ms,
            llm_ms=final.timings.llm_ms,
        ),
        used_passage_ids=list(final.used_passage_ids),
        dropped_passage_ids=list(final.dropped_passage_ids),
        model=final.model,
    )


class _Servicer(generation_pb2_grpc.GenerationServiceServicer):
    def __init__(self, generator: AnswerGenerator) -> None:
        self.generator = generator

    async def GenerateAnswer(
        self, request: generation_pb2.GenerateAnswerRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[generation_pb2.GenerateAnswerResponse]:
        reservation = reservation_of(context)

        async def admitted() -> None:
            # The answer has its place: the caller may tell its client so (the gateway
            # sends the sources) rather than wait for the LLM's first token; a refusal
            # comes before this, with no metadata sent.
            await context.send_initial_metadata(())

        events = self.generator.generate(
            request_from_proto(request, tenant_of(context)),
            time_remaining_s=context.time_remaining(),
            reservation=reservation,
            on_admitted=admitted,
        )
        try:
            async for event in events:
                yield event_to_proto(event)
        finally:
            # Close the logic's generator (and with it the LLM stream) now, even when the
            # cancellation arrived while we were suspended at `yield`.
            await events.aclose()
            # A reservation the answer did not take over (invalid, abstained, cancelled
            # before it queued) gives its place back now rather than when it lapses.
            self.generator.admission.cancel(reservation)

    async def CheckAdmission(
        self, request: generation_pb2.CheckAdmissionRequest, context: grpc.aio.ServicerContext
    ) -> generation_pb2.CheckAdmissionResponse:
        check = check_admission(
            self.generator.admission,
            tenant_of(context),
            request.time_remaining_ms,
            request.release,
        )
        self.generator.observe_queue()
        return check

    async def RewriteQuery(
        self, request: generation_pb2.RewriteQueryRequest, context: grpc.aio.ServicerContext
    ) -> generation_pb2.RewriteQueryResponse:
        result = await self.generator.rewrite(
            rewrite_from_proto(request, tenant_of(context)),
            time_remaining_s=context.time_remaining(),
        )
        return generation_pb2.RewriteQueryResponse(
            query=result.query,
            usage=common_pb2.TokenUsage(
                prompt_tokens=result.usage.prompt_tokens,
                completion_tokens=result.usage.completion_tokens,
                total_tokens=result.usage.total_tokens,
            ),
            llm_ms=result.llm_ms,
            turns_used=result.turns_used,
        )


def check_admission(
    admission: AdmissionQueue, tenant: str, time_remaining_ms: float, release: str
) -> generation_pb2.CheckAdmissionResponse:
    """CheckAdmission on the queue: a release, or a reservation (RESOURCE_EXHAUSTED
    raised as GenerateAnswer would)."""
    if release:
        admission.cancel(release)
        return generation_pb2.CheckAdmissionResponse()
    if time_remaining_ms < 0 or not math.isfinite(time_remaining_ms):
        raise InvalidArgument(
            "time_remaining_ms must be a finite number, 0 or more (0: no deadline)",
            reason="INVALID_TIME_REMAINING",
            metadata={"field": "time_remaining_ms"},
        )
    try:
        ticket = admission.reserve(tenant, time_remaining_ms / 1000 or None)
    except ResourceExhausted as refused:
        metrics.LLM_QUEUE_REFUSED.labels(refused.reason).inc()
        raise
    state = admission.state(ticket)
    return generation_pb2.CheckAdmissionResponse(
        reservation=ticket.reservation,
        queue=common_pb2.QueuePosition(
            position=state.position, estimated_wait_ms=state.estimated_wait_s * 1000
        ),
        reservation_ttl_ms=admission.reservation_ttl_s * 1000,
    )


def build_token_counter(settings: GenerationSettings) -> TokenCounter:
    estimate = ByteEstimateCounter(settings.estimate_bytes_per_token)
    if settings.token_counting == "estimate":
        return estimate
    server = ServerTokenCounter(
        settings.llm_base_url,
        model=settings.llm_model,
        api_key=settings.llm_api_key,
        timeout_s=min(10.0, settings.llm_timeout_s),
    )
    if settings.token_counting == "server":
        return server
    return AutoTokenCounter(server, estimate)


class GenerationService:
    name = "generation"
    service_names = (SERVICE_NAME,)

    def __init__(
        self,
        settings: GenerationSettings | None = None,
        llm: LLMClient | None = None,
        counter: TokenCounter | None = None,
    ) -> None:
        self.settings = settings or GenerationSettings()
        s = self.settings
        self.llm: LLMClient = llm or OpenAILLMClient(
            s.llm_base_url,
            model=s.llm_model,
            api_key=s.llm_api_key,
            timeout_s=s.llm_timeout_s,
            max_retries=s.llm_max_retries,
            ready_timeout_s=s.llm_ready_timeout_s,
        )
        self.counter = counter or build_token_counter(s)
        # A broken template fails the start-up, not every request.
        self.template = PromptTemplate.load(s.prompt_template)
        self.generator = AnswerGenerator(s, self.llm, self.counter, self.template)

    def register(self, server: grpc.aio.Server) -> None:
        generation_pb2_grpc.add_GenerationServiceServicer_to_server(
            _Servicer(self.generator), server
        )

    async def start(self) -> None:
        log.info(
            "LLM %s (model %s), prompt template %s, context window %d tokens",
            self.settings.llm_base_url,
            self.settings.llm_model,
            self.settings.prompt_template,
            self.settings.context_window_tokens,
        )

    async def ready(self) -> bool:
        return await self.llm.ready()

    async def close(self) -> None:
        await self.llm.close()
        close = getattr(self.counter, "close", None)
        if close is not None:
            await close()
        server = getattr(self.counter, "server", None)
        if server is not None:
            await server.close()


def create_service() -> tuple[GenerationService, int]:
    return GenerationService(), DEFAULT_PORTS["generation"]
