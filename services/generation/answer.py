"""Answering a question from passages: validate, abstain or pack, stream, check citations.

This is the whole behaviour of GenerateAnswer on plain objects; server.py only converts
protobuf messages to and from these.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import AsyncGenerator, Awaitable, Callable
from dataclasses import dataclass

from services.common import metrics, tracing
from services.common.errors import (
    DeadlineExceeded,
    Internal,
    InvalidArgument,
    ResourceExhausted,
    Unavailable,
)
from services.generation import rewrite
from services.generation.admission import AdmissionQueue, Ticket
from services.generation.citations import CitationFilter
from services.generation.config import GenerationSettings
from services.generation.history import ChatTurn, HistoryLimits, check_history, fit_history
from services.generation.language import detect_language, pick_message
from services.generation.llm import LLMClient
from services.generation.packing import PackedPrompt, TokenCounter, pack, typical_estimate
from services.generation.prompt import PromptTemplate
from services.generation.types import (
    AnswerDelta,
    AnswerRequest,
    ChatMessage,
    Citation,
    FinalAnswer,
    FinishReason,
    Passage,
    Queued,
    RewriteRequest,
    RewriteResult,
    Timings,
    Usage,
)

log = logging.getLogger("ragmesh.generation")

AnswerEvent = AnswerDelta | FinalAnswer | Queued

_FINISH_REASONS = {
    "stop": FinishReason.STOP,
    "length": FinishReason.LENGTH,
    "content_filter": FinishReason.CONTENT_FILTER,
}
#: seconds kept from the caller's deadline so our DEADLINE_EXCEEDED (with its reason)
#: reaches the caller before the caller's own timer fires
DEADLINE_RESERVE_S = 0.05
#: how often a waiting request is told its place in the LLM queue
QUEUE_UPDATE_INTERVAL_S = 1.0


@dataclass(frozen=True)
class _Resolved:
    """A validated request with the server defaults filled in."""

    question: str
    passages: tuple[Passage, ...]
    max_tokens: int
    temperature: float
    min_relevance: float
    history: tuple[ChatTurn, ...] = ()


class AnswerGenerator:
    def __init__(
        self,
        settings: GenerationSettings,
        llm: LLMClient,
        counter: TokenCounter,
        template: PromptTemplate,
        admission: AdmissionQueue | None = None,
    ) -> None:
        self.settings = settings
        self.llm = llm
        self.counter = counter
        self.template = template
        self.admission = admission or AdmissionQueue(
            settings.llm_max_concurrency,
            settings.llm_max_queued,
            settings.llm_max_queued_per_tenant,
        )

    # --- validation --------------------------------------------------------------------
    def validate(self, request: AnswerRequest) -> _Resolved:  # noqa: C901 - one check per request field, in the order of the proto
        s = self.settings
        question = self._check_question(request.question)
        if len(request.passages) > s.max_passages:
            raise InvalidArgument(
                f"{len(request.passages)} passages; the limit is {s.max_passages}",
                reason="TOO_MANY_PASSAGES",
                metadata={"field": "passages", "limit": s.max_passages},
            )
        seen: set[str] = set()
        for i, p in enumerate(request.passages):
            where = f"passages[{i}]"
            if not p.id:
                raise InvalidArgument(
                    f"{where}.id is empty",
                    reason="MISSING_PASSAGE_ID",
                    metadata={"field": f"{where}.id"},
                )
            if p.id in seen:
                raise InvalidArgument(
                    f"{where}.id {p.id!r} appears twice",
                    reason="DUPLICATE_PASSAGE_ID",
                    metadata={"field": f"{where}.id"},
                )
            seen.add(p.id)
            if not p.text.strip():
                raise InvalidArgument(
                    f"{where}.text is empty",
                    reason="EMPTY_PASSAGE",
                    metadata={"field": f"{where}.text"},
                )
            if len(p.text) > s.max_passage_chars:
                raise InvalidArgument(
                    f"{where}.text has {len(p.text)} characters; the limit is "
                    f"{s.max_passage_chars}",
                    reason="PASSAGE_TOO_LONG",
                    metadata={"field": f"{where}.text", "limit": s.max_passage_chars},
                )
            for name in ("id", "title", "source"):
                value = getattr(p, name)
                if len(value) > s.max_passage_field_chars:
                    raise InvalidArgument(
                        f"{where}.{name} has {len(value)} characters; the limit is "
                        f"{s.max_passage_field_chars}",
                        reason="PASSAGE_FIELD_TOO_LONG",
                        metadata={"field": f"{where}.{name}", "limit": s.max_passage_field_chars},
                    )
            if not math.isfinite(p.score):
                raise InvalidArgument(
                    f"{where}.score is not a finite number",
                    reason="INVALID_PASSAGE_SCORE",
                    metadata={"field": f"{where}.score"},
                )
        max_tokens = request.max_tokens or s.max_tokens_default
        if not 1 <= max_tokens <= s.max_tokens_max:
            raise InvalidArgument(
                f"max_tokens must be between 1 and {s.max_tokens_max} (0 for the default "
                f"{s.max_tokens_default}); got {request.max_tokens}",
                reason="MAX_TOKENS_OUT_OF_RANGE",
                metadata={"field": "max_tokens", "max": s.max_tokens_max},
            )
        temperature = s.temperature if request.temperature is None else request.temperature
        if not (math.isfinite(temperature) and 0.0 <= temperature <= 2.0):
            raise InvalidArgument(
                f"temperature must be between 0 and 2; got {temperature}",
                reason="TEMPERATURE_OUT_OF_RANGE",
                metadata={"field": "temperature"},
            )
        threshold = s.min_relevance if request.min_relevance is None else request.min_relevance
        if math.isnan(threshold):
            raise InvalidArgument(
                "min_relevance is not a number",
                reason="INVALID_MIN_RELEVANCE",
                metadata={"field": "min_relevance"},
            )
        history = check_history(request.history, self.history_limits())
        return _Resolved(question, request.passages, max_tokens, temperature, threshold, history)

    def history_limits(self) -> HistoryLimits:
        s = self.settings
        return HistoryLimits(s.max_history_turns, s.max_history_turn_chars, s.max_history_chars)

    def _check_question(self, question: str) -> str:
        question = question.strip()
        if not question:
            raise InvalidArgument(
                "question is empty", reason="EMPTY_QUESTION", metadata={"field": "question"}
            )
        if len(question) > self.settings.max_question_chars:
            raise InvalidArgument(
                f"question has {len(question)} characters; the limit is "
                f"{self.settings.max_question_chars}",
                reason="QUESTION_TOO_LONG",
                metadata={"field": "question", "limit": self.settings.max_question_chars},
            )
        return question

    # --- answering ---------------------------------------------------------------------
    async def generate(
        self,
        request: AnswerRequest,
        *,
        time_remaining_s: float | None = None,
        reservation: str = "",
        on_admitted: Callable[[], Awaitable[None]] | None = None,
    ) -> AsyncGenerator[AnswerEvent, None]:
        """Queued events while the answer waits for an LLM slot, then deltas as they
        come, then one FinalAnswer.

        `reservation` is a CheckAdmission's, whose place in line the answer takes.
        `on_admitted` is awaited once the queue has taken the answer (a place in line or
        a slot), before the wait: a refusal comes before it, never after.
        `time_remaining_s` is what is left of the caller's deadline; the LLM gets the
        smaller of what is left after the queue and RAGMESH_GENERATION_LLM_TIMEOUT_S.
        Cancelling the consumer leaves the queue, or closes the upstream stream, at
        once (the `finally`s below).
        """
        start = time.perf_counter()
        r = self.validate(request)
        language = detect_language(r.question)
        relevant = tuple(p for p in r.passages if p.score >= r.min_relevance)
        below = tuple(p.id for p in r.passages if p.score < r.min_relevance)
        if not relevant:
            message = pick_message(self.settings.abstention_messages, language)
            yield AnswerDelta(message)
            elapsed = (time.perf_counter() - start) * 1000
            yield FinalAnswer(
                answer=message,
                citations=(),
                invalid_citation_numbers=(),
                grounded=False,
                abstained=True,
                finish_reason=FinishReason.ABSTAINED,
                usage=Usage(),
                timings=Timings(first_token_ms=elapsed, total_ms=elapsed, llm_ms=0.0),
                used_passage_ids=(),
                dropped_passage_ids=below,
                model="",
                language=language,
            )
            return

        loop = asyncio.get_running_loop()
        caller_deadline = None if time_remaining_s is None else loop.time() + time_remaining_s
        # The admission queue's wait, from arrival to a slot (or refusal).
        waiting = tracing.start("llm.queue_wait", {"ragmesh.tenant": request.tenant})
        try:
            ticket = self.admission.enter(request.tenant, time_remaining_s, reservation)
        except ResourceExhausted as refused:
            metrics.LLM_QUEUE_REFUSED.labels(refused.reason).inc()
            tracing.end_with_error(waiting, refused, refused.reason)
            raise
        try:
            if on_admitted is not None:
                await on_admitted()
            if not ticket.granted.is_set():
                waiting.set_attribute(
                    "ragmesh.queue_position", self.admission.state(ticket).position
                )
            try:
                async for queued in self._wait_for_slot(ticket, caller_deadline):
                    yield queued
            except BaseException as exc:
                tracing.end_with_error(waiting, exc)
                raise
            waiting.end()
            async for event in self._answer(r, relevant, below, language, start, caller_deadline):
                yield event
        finally:
            self.admission.release(ticket)
            self.observe_queue()

    # --- query rewriting -----------------------------------------------------------------
    async def rewrite(
        self, request: RewriteRequest, *, time_remaining_s: float | None = None
    ) -> RewriteResult:
        """The follow-up question as one standalone line, written by the LLM.

        It waits for a slot in the same admission queue as the answers (same
        tenant lines, same refusals), but its hold time does not feed the queue's
        estimate of an answer's. The caller's deadline bounds the whole call;
        the text is returned unchecked (the caller knows what it searches)."""
        start = time.perf_counter()
        question = self._check_question(request.question)
        history = check_history(request.history, self.history_limits())
        if not history:
            raise InvalidArgument(
                "history is empty: a question without a conversation needs no rewriting",
                reason="EMPTY_HISTORY",
                metadata={"field": "history"},
            )
        max_tokens = request.max_tokens or rewrite.DEFAULT_MAX_TOKENS
        if not 1 <= max_tokens <= rewrite.MAX_TOKENS:
            raise InvalidArgument(
                f"max_tokens must be between 1 and {rewrite.MAX_TOKENS} (0 for the default "
                f"{rewrite.DEFAULT_MAX_TOKENS}); got {request.max_tokens}",
                reason="MAX_TOKENS_OUT_OF_RANGE",
                metadata={"field": "max_tokens", "max": rewrite.MAX_TOKENS},
            )
        kept, _ = await fit_history(history, self.settings.rewrite_history_tokens)
        if not kept:  # the newest turn alone is too long: show its beginning, not nothing
            last = history[-1]
            cut = self.settings.rewrite_history_tokens // 2  # characters; ≤ 2 tokens each
            kept = (ChatTurn(last.role, last.content[:cut]),)
        messages = rewrite.rewrite_messages(question, kept, detect_language(question))
        loop = asyncio.get_running_loop()
        caller_deadline = None if time_remaining_s is None else loop.time() + time_remaining_s
        try:
            ticket = self.admission.enter(request.tenant, time_remaining_s, measured=False)
        except ResourceExhausted as refused:
            metrics.LLM_QUEUE_REFUSED.labels(refused.reason).inc()
            raise
        try:
            async for _ in self._wait_for_slot(ticket, caller_deadline):
                pass  # a unary call: nobody to tell the position to
            text, usage, llm_ms = await self._complete(
                messages, max_tokens, caller_deadline, what="rewrite the question"
            )
        finally:
            self.admission.release(ticket)
            self.observe_queue()
        log.debug("rewrite in %.0f ms: %r", (time.perf_counter() - start) * 1000, text)
        return RewriteResult(rewrite.first_line(text), usage, llm_ms, len(kept))

    async def _complete(
        self,
        messages: list[ChatMessage],
        max_tokens: int,
        caller_deadline: float | None,
        *,
        what: str,
    ) -> tuple[str, Usage, float]:
        """A whole (short) completion at temperature 0, within the caller's deadline
        and RAGMESH_GENERATION_LLM_TIMEOUT_S; it stops at the first complete line."""
        loop = asyncio.get_running_loop()
        budget_s = self.settings.llm_timeout_s
        if caller_deadline is not None:
            budget_s = min(budget_s, caller_deadline - loop.time() - DEADLINE_RESERVE_S)
        if budget_s <= 0:
            raise DeadlineExceeded(
                f"no time left to {what}", reason="LLM_TIMEOUT", metadata={"timeout_s": 0}
            )
        llm_start = time.perf_counter()
        parts: list[str] = []
        usage: Usage | None = None
        chunks = 0
        try:
            async with asyncio.timeout(budget_s):
                stream = await self.llm.open_chat_stream(
                    messages, max_tokens=max_tokens, temperature=0.0, timeout_s=budget_s
                )
                try:
                    async for chunk in stream:
                        if chunk.usage is not None:
                            usage = chunk.usage
                        if chunk.text:
                            chunks += 1
                            parts.append(chunk.text)
                            joined = "".join(parts).lstrip()
                            if "\n" in joined:
                                break  # one line is all we asked for
                finally:
                    await stream.aclose()
        except TimeoutError as exc:
            raise DeadlineExceeded(
                f"the LLM did not {what} within {budget_s:.2f}s",
                reason="LLM_TIMEOUT",
                metadata={"timeout_s": round(budget_s, 3)},
            ) from exc
        text = "".join(parts)
        llm_ms = (time.perf_counter() - llm_start) * 1000
        prompt = typical_estimate("\n".join(m.content for m in messages))
        return text, usage or Usage(prompt, chunks), llm_ms

    async def _wait_for_slot(
        self, ticket: Ticket, caller_deadline: float | None
    ) -> AsyncGenerator[Queued, None]:
        """Queued events while the ticket waits for an LLM slot (none when it has one)."""
        admission = self.admission
        self.observe_queue()
        loop = asyncio.get_running_loop()
        while not ticket.granted.is_set():
            state = admission.state(ticket)
            yield Queued(state.position, state.estimated_wait_s)
            step = QUEUE_UPDATE_INTERVAL_S
            if caller_deadline is not None:
                left = caller_deadline - loop.time() - DEADLINE_RESERVE_S
                if left <= 0:
                    metrics.LLM_QUEUE_REFUSED.labels("LLM_QUEUE_TIMEOUT").inc()
                    raise admission.deadline_passed(ticket)
                hopeless = admission.hopeless(ticket, left)
                if hopeless is not None:
                    metrics.LLM_QUEUE_REFUSED.labels(hopeless.reason).inc()
                    raise hopeless
                step = min(step, left)
            await admission.wait(ticket, step)
        metrics.LLM_QUEUE_WAIT.observe(ticket.started_at - ticket.enqueued_at)
        self.observe_queue()

    def observe_queue(self) -> None:
        metrics.LLM_QUEUE_DEPTH.set(self.admission.waiting)
        metrics.LLM_SLOTS_BUSY.set(self.admission.running)

    async def _answer(  # noqa: C901, PLR0912, PLR0915 - the stream's states in order: pack, stream, final
        self,
        r: _Resolved,
        relevant: tuple[Passage, ...],
        below: tuple[str, ...],
        language: str,
        start: float,
        caller_deadline: float | None,
    ) -> AsyncGenerator[AnswerEvent, None]:
        """The LLM's answer, holding a slot: pack, stream, check citations."""
        loop = asyncio.get_running_loop()
        budget_s = self.settings.llm_timeout_s
        if caller_deadline is not None:
            budget_s = min(budget_s, caller_deadline - loop.time() - DEADLINE_RESERVE_S)
        deadline = loop.time() + budget_s

        def timed_out() -> DeadlineExceeded:
            return DeadlineExceeded(
                f"the LLM did not finish the answer within {budget_s:.2f}s (the caller's "
                f"deadline or RAGMESH_GENERATION_LLM_TIMEOUT_S)",
                reason="LLM_TIMEOUT",
                metadata={"timeout_s": round(budget_s, 3)},
            )

        if budget_s <= 0:
            raise timed_out()
        window_budget = (
            self.settings.context_window_tokens
            - r.max_tokens
            - self.settings.prompt_overhead_tokens
        )
        try:
            async with asyncio.timeout_at(deadline):
                with tracing.span("prompt.pack", {"ragmesh.passages": len(relevant)}) as packing:
                    packed = await pack(
                        self.template,
                        r.question,
                        relevant,
                        budget_tokens=window_budget,
                        counter=self.counter,
                        history=r.history,
                        history_share=self.settings.history_share,
                    )
                    packing.set_attributes(
                        {
                            "ragmesh.passages_used": len(packed.used),
                            "ragmesh.prompt_tokens": packed.prompt_tokens,
                        }
                    )
                llm_start = time.perf_counter()
                stream = await self.llm.open_chat_stream(
                    packed.messages,
                    max_tokens=r.max_tokens,
                    temperature=r.temperature,
                    timeout_s=max(budget_s, 0.001),
                )
        except TimeoutError as exc:
            raise timed_out() from exc

        citations = CitationFilter(len(packed.used))
        first_token_ms = 0.0
        finish: str | None = None
        usage: Usage | None = None
        chunks = 0  # chunks carrying text
        received = 0  # chunks of any kind
        try:
            while True:
                try:
                    async with asyncio.timeout_at(deadline):
                        chunk = await anext(stream, None)
                except TimeoutError as exc:
                    raise timed_out() from exc
                if chunk is None:
                    break
                received += 1
                if chunk.usage is not None:
                    usage = chunk.usage
                if chunk.finish_reason is not None:
                    finish = chunk.finish_reason
                if chunk.text:
                    chunks += 1
                    text = citations.feed(chunk.text)
                    if text:
                        if not first_token_ms:
                            first_token_ms = (time.perf_counter() - start) * 1000
                        yield AnswerDelta(text)
        finally:
            # Runs on success, on error and when the caller cancels (CancelledError or
            # GeneratorExit here): the LLM server sees the connection close and stops.
            await stream.aclose()
        llm_ms = (time.perf_counter() - llm_start) * 1000
        if finish is None:
            if received == 0:
                raise Internal(
                    "the LLM server ended the stream without any output; it probably failed "
                    "on the prompt (llama.cpp does this when the prompt exceeds its context "
                    "window: check RAGMESH_GENERATION_CONTEXT_WINDOW_TOKENS against the "
                    "server's)",
                    reason="LLM_EMPTY_STREAM",
                )
            raise Unavailable(
                "the LLM server ended the answer early, without a finish_reason (a "
                "llama-cpp-python server does this to a stream when another request "
                "arrives, unless started with --interrupt_requests False)",
                reason="LLM_STREAM_INTERRUPTED",
            )
        tail = citations.finish()
        if tail:
            if not first_token_ms:
                first_token_ms = (time.perf_counter() - start) * 1000
            yield AnswerDelta(tail)
        yield self._final(
            packed,
            citations,
            below,
            finish,
            usage,
            chunks=chunks,
            language=language,
            start=start,
            first_token_ms=first_token_ms,
            llm_ms=llm_ms,
        )

    def _final(
        self,
        packed: PackedPrompt,
        citations: CitationFilter,
        below: tuple[str, ...],
        finish: str,
        usage: Usage | None,
        *,
        chunks: int,
        language: str,
        start: float,
        first_token_ms: float,
        llm_ms: float,
    ) -> FinalAnswer:
        cited = tuple(Citation(n, packed.used[n - 1].id) for n in citations.cited)
        if usage is None:
            # The server did not stream usage (llama-cpp-python does not): the packer's
            # figure for the prompt (a count, or an estimate when the prompt fitted by
            # its byte bound), and one token per streamed chunk (llama.cpp streams one
            # token per chunk).
            usage = Usage(packed.prompt_tokens, chunks)
        return FinalAnswer(
            answer=citations.answer,
            citations=cited,
            invalid_citation_numbers=tuple(citations.invalid),
            grounded=bool(cited),
            abstained=False,
            finish_reason=_FINISH_REASONS.get(finish, FinishReason.UNSPECIFIED),
            usage=usage,
            timings=Timings(
                first_token_ms=first_token_ms,
                total_ms=(time.perf_counter() - start) * 1000,
                llm_ms=llm_ms,
            ),
            used_passage_ids=tuple(p.id for p in packed.used),
            dropped_passage_ids=below + packed.dropped,
            model=self.llm.model,
            language=language,
        )
