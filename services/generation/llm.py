"""The LLM behind a small Protocol, and its OpenAI-compatible implementation.

`OpenAILLMClient` talks to any OpenAI-compatible server (llama.cpp, vLLM, OpenAI) with
the `openai` package. Failures become domain errors here, so the service maps them to
gRPC statuses without knowing about HTTP:

- cannot connect → Unavailable LLM_UNAVAILABLE; connection lost mid-answer →
  Unavailable LLM_CONNECTION_LOST; 5xx after the retries → Unavailable LLM_SERVER_ERROR;
- 429 after the retries → ResourceExhausted LLM_RATE_LIMITED;
- no response in time → DeadlineExceeded LLM_TIMEOUT;
- 401/403, 404, other 4xx (our configuration) → Internal LLM_AUTH_FAILED, LLM_NOT_FOUND,
  LLM_REQUEST_REJECTED;
- not a chat-completion stream, a bad chunk, no finish → Internal LLM_MALFORMED_RESPONSE;
- an error event inside the stream → Internal LLM_STREAM_ERROR.

Retries (408/409/429/5xx and connection failures, exponential backoff honouring
Retry-After) are the `openai` client's own, with `max_retries`; they can only happen
before the first token, since a stream that has started is never replayed.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import httpx
import openai

from services.common import tracing
from services.common.errors import (
    DeadlineExceeded,
    Internal,
    ResourceExhausted,
    ServiceError,
    Unavailable,
)
from services.generation.types import ChatMessage, Usage

log = logging.getLogger("ragmesh.generation.llm")

KNOWN_FINISH_REASONS = {"stop", "length", "content_filter", "tool_calls", "function_call"}


@dataclass(frozen=True)
class LLMChunk:
    text: str
    finish_reason: str | None = None
    usage: Usage | None = None


class LLMStream(Protocol):
    """An answer being streamed; `aclose()` ends it upstream at once."""

    def __aiter__(self) -> AsyncIterator[LLMChunk]: ...

    async def __anext__(self) -> LLMChunk: ...

    async def aclose(self) -> None: ...


class LLMClient(Protocol):
    model: str

    async def open_chat_stream(
        self,
        messages: Sequence[ChatMessage],
        *,
        max_tokens: int,
        temperature: float,
        timeout_s: float,
    ) -> LLMStream:
        """Start a streamed chat completion (retried before it starts)."""

    async def ready(self) -> bool:
        """Whether the server is reachable now."""

    async def close(self) -> None: ...


def malformed_response(detail: str) -> Internal:
    return Internal(
        f"the LLM server sent a malformed chat-completion stream: {detail}",
        reason="LLM_MALFORMED_RESPONSE",
    )


def _body_excerpt(err: openai.APIStatusError) -> str:
    try:
        text = err.response.text
    except Exception:  # the body of a streamed response may be unreadable
        text = str(err.message)
    return " ".join(text.split())[:300]


def map_openai_error(exc: BaseException, base_url: str, *, streaming: bool) -> ServiceError:  # noqa: PLR0911 - one return per upstream error class
    """An `openai` exception (or a decoding error) as a ragmesh domain error."""
    if isinstance(exc, openai.APITimeoutError):
        return DeadlineExceeded(
            f"the LLM server at {base_url} did not respond in time", reason="LLM_TIMEOUT"
        )
    if isinstance(exc, openai.APIConnectionError):
        cause = exc.__cause__ or exc
        if streaming:
            return Unavailable(
                f"the connection to the LLM server at {base_url} was lost mid-answer: "
                f"{type(cause).__name__}: {cause}",
                reason="LLM_CONNECTION_LOST",
            )
        return Unavailable(
            f"the LLM server at {base_url} is unreachable: {type(cause).__name__}: {cause}",
            reason="LLM_UNAVAILABLE",
        )
    if isinstance(exc, openai.APIStatusError):
        status = exc.status_code
        meta = {"http_status": status}
        body = _body_excerpt(exc)
        if status == 429:
            return ResourceExhausted(
                f"the LLM server at {base_url} is rate limiting (HTTP 429): {body}",
                reason="LLM_RATE_LIMITED",
                metadata=meta,
            )
        if status >= 500:
            return Unavailable(
                f"the LLM server at {base_url} failed (HTTP {status}): {body}",
                reason="LLM_SERVER_ERROR",
                metadata=meta,
            )
        if status in (401, 403):
            return Internal(
                f"the LLM server at {base_url} refused our credentials (HTTP {status}); "
                f"check RAGMESH_GENERATION_LLM_API_KEY",
                reason="LLM_AUTH_FAILED",
                metadata=meta,
            )
        if status == 404:
            return Internal(
                f"the LLM server at {base_url} has no such endpoint or model (HTTP 404): "
                f"{body}; check RAGMESH_GENERATION_LLM_BASE_URL and _LLM_MODEL",
                reason="LLM_NOT_FOUND",
                metadata=meta,
            )
        return Internal(
            f"the LLM server at {base_url} rejected the request (HTTP {status}): {body}",
            reason="LLM_REQUEST_REJECTED",
            metadata=meta,
        )
    if isinstance(exc, openai.APIError):  # an error event inside the stream
        return Internal(
            f"the LLM server reported an error mid-stream: {exc.message}", reason="LLM_STREAM_ERROR"
        )
    if isinstance(exc, json.JSONDecodeError):
        return malformed_response(f"an event is not JSON ({exc})")
    return malformed_response(f"{type(exc).__name__}: {exc}")


def parse_chunk(chunk: Any) -> LLMChunk:
    """Check one chat.completion.chunk (a decoded JSON object) and extract it.

    Chunks are taken as plain JSON rather than the client's typed models: building those
    costs ~0.25 ms a token, which the service would spend on top of the caller's own
    parsing, on the same cores the LLM decodes on."""
    if not isinstance(chunk, dict):
        raise malformed_response(f"a chunk is not a JSON object: {_repr(chunk)}")
    usage = None
    usage_obj = chunk.get("usage")
    if isinstance(usage_obj, dict):
        prompt = usage_obj.get("prompt_tokens")
        completion = usage_obj.get("completion_tokens")
        if isinstance(prompt, int) and isinstance(completion, int):
            usage = Usage(prompt, completion)
    choices = chunk.get("choices")
    if not isinstance(choices, list):
        raise malformed_response(f"a chunk has no `choices` list: {_repr(chunk)}")
    if not choices:  # the usage-only chunk of stream_options.include_usage
        return LLMChunk("", None, usage)
    choice = choices[0]
    if not isinstance(choice, dict):
        raise malformed_response(f"a choice is not a JSON object: {_repr(chunk)}")
    delta = choice.get("delta")
    if delta is not None and not isinstance(delta, dict):
        raise malformed_response(f"a delta is not a JSON object: {_repr(chunk)}")
    text = delta.get("content") if delta else None
    if text is not None and not isinstance(text, str):
        raise malformed_response(f"a delta's content is not text: {_repr(chunk)}")
    finish = choice.get("finish_reason")
    if finish is not None and not isinstance(finish, str):
        raise malformed_response(f"finish_reason is not a string: {_repr(chunk)}")
    if delta is None and finish is None:
        raise malformed_response(
            f"a choice has neither a delta nor a finish_reason: {_repr(chunk)}"
        )
    return LLMChunk(text or "", finish, usage)


def _repr(chunk: Any) -> str:
    try:
        text = json.dumps(chunk, default=str)
    except (TypeError, ValueError):
        text = repr(chunk)
    return text[:300]


class OpenAIChatStream:
    """Validated chunks of one streamed completion; errors mapped to domain errors."""

    def __init__(
        self,
        stream: openai.AsyncStream[object],
        base_url: str,
        on_close: Callable[[], None] = lambda: None,
        span: tracing.Span = tracing.INVALID_SPAN,
        first_token: tracing.Span = tracing.INVALID_SPAN,
    ) -> None:
        self._stream = stream
        self._on_close = on_close
        self._iter = stream.__aiter__()
        self._base_url = base_url
        self._finished = False
        self._closed = False
        #: the LLM call's span (ends with the stream) and the wait for its first token
        self._span = span
        self._first_token: tracing.Span | None = first_token

    def __aiter__(self) -> OpenAIChatStream:
        return self

    async def __anext__(self) -> LLMChunk:
        if self._finished:
            raise StopAsyncIteration
        try:
            chunk = await self._iter.__anext__()
        except StopAsyncIteration:
            self._finished = True
            raise
        except ServiceError as exc:
            self._failed(exc)
            raise
        except (openai.OpenAIError, ValueError, TypeError, KeyError, AttributeError) as exc:
            error = map_openai_error(exc, self._base_url, streaming=True)
            self._failed(error)
            raise error from exc
        try:
            parsed = parse_chunk(chunk)
        except ServiceError as exc:
            self._failed(exc)
            raise
        if self._span is not tracing.INVALID_SPAN:
            self._trace(parsed)
        return parsed

    def _trace(self, chunk: LLMChunk) -> None:
        if chunk.text and self._first_token is not None:
            self._first_token.end()
            self._first_token = None
        if chunk.usage is not None:
            self._span.set_attributes(
                {
                    "gen_ai.usage.input_tokens": chunk.usage.prompt_tokens,
                    "gen_ai.usage.output_tokens": chunk.usage.completion_tokens,
                }
            )
        if chunk.finish_reason is not None:
            self._span.set_attribute("gen_ai.response.finish_reasons", [chunk.finish_reason])

    def _failed(self, error: ServiceError) -> None:
        tracing.end_with_error(self._span, error, error.reason)
        self._span = tracing.INVALID_SPAN

    async def aclose(self) -> None:
        """Close the HTTP response: the server sees the connection drop and stops."""
        if not self._closed:
            self._closed = True
            self._on_close()
            if self._first_token is not None:
                self._first_token.end()  # no token came: the wait ended with the stream
                self._first_token = None
            self._span.end()
            await self._stream.close()

    @property
    def closed(self) -> bool:
        return self._closed


class OpenAILLMClient:
    def __init__(
        self,
        base_url: str,
        *,
        model: str,
        api_key: str,
        timeout_s: float,
        max_retries: int,
        ready_timeout_s: float = 1.0,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.model = model
        self.ready_timeout_s = ready_timeout_s
        self._client = openai.AsyncOpenAI(
            base_url=self.base_url, api_key=api_key, timeout=timeout_s, max_retries=max_retries
        )
        self._probe = httpx.AsyncClient(headers={"Authorization": f"Bearer {api_key}"})
        self._in_flight = 0  # streams open now

    async def open_chat_stream(
        self,
        messages: Sequence[ChatMessage],
        *,
        max_tokens: int,
        temperature: float,
        timeout_s: float,
    ) -> OpenAIChatStream:
        self._in_flight += 1  # from the request on: readiness must not probe meanwhile
        # The LLM call's CLIENT span; its traceparent goes to the server (vLLM can
        # continue the trace), and a child span times the wait for the first token.
        span = tracing.start(
            "llm.chat",
            {
                "gen_ai.operation.name": "chat",
                "gen_ai.system": "openai",
                "gen_ai.request.model": self.model,
                "gen_ai.request.max_tokens": max_tokens,
                "gen_ai.request.temperature": temperature,
                "server.address": self.base_url,
            },
            kind=tracing.SpanKind.CLIENT,
        )
        first_token = tracing.start("llm.first_token", parent=span)
        with tracing.activate(span):
            headers = dict(tracing.inject({}))
        try:
            # The generic post() of the client (its documented way to custom endpoints):
            # same retries, timeouts and error types as chat.completions.create, with
            # chunks as plain JSON (see parse_chunk).
            stream = await self._client.post(
                "/chat/completions",
                cast_to=object,
                body={
                    "model": self.model,
                    "messages": [{"role": m.role, "content": m.content} for m in messages],
                    "max_tokens": max_tokens,
                    "temperature": temperature,
                    "stream": True,
                    "stream_options": {"include_usage": True},
                },
                options={"timeout": timeout_s, "headers": headers},
                stream=True,
                stream_cls=openai.AsyncStream[object],
            )
        except BaseException as exc:
            self._in_flight -= 1
            first_token.end()
            if isinstance(exc, (openai.OpenAIError, ValueError, TypeError)):
                error = map_openai_error(exc, self.base_url, streaming=False)
                tracing.end_with_error(span, error, error.reason)
                raise error from exc
            tracing.end_with_error(span, exc)
            raise
        return OpenAIChatStream(
            stream,
            self.base_url,
            on_close=self._stream_closed,
            span=span,
            first_token=first_token,
        )

    def _stream_closed(self) -> None:
        self._in_flight -= 1

    async def ready(self) -> bool:
        """GET /models answers, or the server accepted the connection but is busy.

        llama-cpp-python serialises every request behind the one generating, so a
        server in the middle of a long answer is up even when /models waits. While one
        of our own answers is streaming the server is evidently up, and it is not probed:
        a llama-cpp-python server left at its default `--interrupt_requests True` would
        cut that answer short for the probe.
        """
        if self._in_flight:
            return True
        try:
            resp = await self._probe.get(f"{self.base_url}/models", timeout=self.ready_timeout_s)
        except (httpx.ReadTimeout, httpx.PoolTimeout):
            return True
        except httpx.HTTPError as exc:
            log.warning("LLM server %s not ready: %s", self.base_url, exc)
            return False
        if resp.status_code != 200:
            log.warning(
                "LLM server %s answered /models with HTTP %d", self.base_url, resp.status_code
            )
        return resp.status_code == 200

    async def close(self) -> None:
        await self._client.close()
        await self._probe.aclose()
