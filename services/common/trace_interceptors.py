"""Trace context over gRPC: W3C `traceparent` in call metadata.

- `ServerCallSpan`: the SERVER span of one call, a child of the caller's span
  when its metadata carries `traceparent`; started and ended by the project's
  server interceptor (services.common.interceptors), which already wraps every
  handler in the handler's own task, so the span is current inside the handler.
- `AioUnaryUnaryTracing` (and the unary-stream and stream-unary ones): a
  CLIENT span per call of an aio channel, its
  context injected into the call's metadata (services.common.channels adds it
  to every channel when tracing is on).
- `SyncTracingInterceptor`: the same for the blocking channels of the worker.

Hand-written rather than the contrib grpc instrumentation: the project already
has one interceptor per side, and grpc.aio streaming calls need their span to
end when the stream ends, not when the call object is returned.

Span names and attributes follow OpenTelemetry's RPC conventions:
`ragmesh.retrieval.v1.RetrievalService/SearchChunks`, rpc.system=grpc,
rpc.service, rpc.method, rpc.grpc.status_code.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Sequence
from typing import Any

import grpc

from services.common import tracing
from services.common.tracing import Span, SpanKind

#: status codes that mark a span ERROR: the server's (OpenTelemetry's gRPC
#: conventions) — a caller's mistake (INVALID_ARGUMENT, NOT_FOUND, ...) is not
#: the server's error
SERVER_ERROR_CODES = frozenset(
    {
        "UNKNOWN",
        "DEADLINE_EXCEEDED",
        "UNIMPLEMENTED",
        "INTERNAL",
        "UNAVAILABLE",
        "DATA_LOSS",
    }
)


#: span-ending tasks not run yet
_PENDING: set[asyncio.Task[None]] = set()


def _rpc_attributes(method: str) -> dict[str, Any]:
    service, _, name = method.lstrip("/").partition("/")
    return {"rpc.system": "grpc", "rpc.service": service, "rpc.method": name}


def _span_name(method: str) -> str:
    return method.lstrip("/")


def finish(span: Span, code: str, *, client: bool) -> None:
    """Ends an RPC span with its status code (`OK`, `UNAVAILABLE`, ...)."""
    numeric = next((c.value[0] for c in grpc.StatusCode if c.name == code), 2)
    span.set_attribute("rpc.grpc.status_code", numeric)
    if code != "OK" and (client or code in SERVER_ERROR_CODES):
        span.set_status(tracing.Status(tracing.StatusCode.ERROR, code))
    span.end()


class ServerCallSpan:
    """The SERVER span of one call, current between `begin` and `end`."""

    def __init__(self, method: str, metadata: Sequence[tuple[str, Any]] | None) -> None:
        self.span: Span = tracing.INVALID_SPAN
        self._token: Any = None
        self.method = method
        self.metadata = metadata

    def begin(self, request_id: str) -> None:
        parent = tracing.extract(dict(self.metadata or ()))
        attributes = _rpc_attributes(self.method)
        attributes["ragmesh.request_id"] = request_id
        self.span = tracing.start(
            _span_name(self.method), attributes, kind=SpanKind.SERVER, context=parent
        )
        self._token = tracing.attach(self.span)

    def end(self, code: str, *, detach: bool = True) -> None:
        """`detach` False: ending in another Context than `begin`'s (nothing to detach there)."""
        if detach:
            tracing.detach(self._token)
        finish(self.span, code, client=False)


# --- clients ---------------------------------------------------------------------------------


def _start_client_span(method: str | bytes) -> tuple[Span, list[tuple[str, str]]]:
    name = method.decode() if isinstance(method, bytes) else method
    span = tracing.start(_span_name(name), _rpc_attributes(name), kind=SpanKind.CLIENT)
    with tracing.activate(span):
        carrier = tracing.inject({})
    return span, list(carrier.items())


def _code_of(error: BaseException) -> str:
    if isinstance(error, grpc.RpcError) and callable(getattr(error, "code", None)):
        code = error.code()
        if isinstance(code, grpc.StatusCode):
            return code.name
    if isinstance(error, asyncio.CancelledError):
        return "CANCELLED"
    return "UNKNOWN"


class _AioClientSpan:
    """A CLIENT span per call, ended when the call (or its stream) is done.

    One class per kind of call below: a grpc.aio channel files each interceptor
    under the first kind it is an instance of, so a single class deriving from
    all three would intercept unary-unary calls only."""

    @staticmethod
    def _details(
        details: grpc.aio.ClientCallDetails, headers: list[tuple[str, str]]
    ) -> grpc.aio.ClientCallDetails:
        metadata = grpc.aio.Metadata(*(details.metadata or ()))
        for key, value in headers:
            metadata[key] = value
        return grpc.aio.ClientCallDetails(
            details.method, details.timeout, metadata, details.credentials, details.wait_for_ready
        )

    async def _intercept(self, continuation: Any, details: Any, request: Any) -> Any:
        span, headers = _start_client_span(details.method)
        try:
            call = await continuation(self._details(details, headers), request)
        except BaseException as exc:
            finish(span, _code_of(exc), client=True)
            raise
        loop = asyncio.get_running_loop()

        async def done(finished: Any) -> None:
            try:
                code = await finished.code()
            except BaseException:  # cancelled before a status
                code = grpc.StatusCode.CANCELLED
            finish(span, code.name if isinstance(code, grpc.StatusCode) else "UNKNOWN", client=True)

        def on_done(finished: Any) -> None:
            # The callback cannot await the status; the call is done, so code() is
            # immediate. The task is kept referenced until it ran (the loop holds
            # tasks weakly: an unreferenced one can vanish before it ends the span).
            task = loop.create_task(done(finished))
            _PENDING.add(task)
            task.add_done_callback(_PENDING.discard)

        call.add_done_callback(on_done)
        return call


class AioUnaryUnaryTracing(_AioClientSpan, grpc.aio.UnaryUnaryClientInterceptor):
    async def intercept_unary_unary(self, continuation, client_call_details, request):  # type: ignore[no-untyped-def]
        return await self._intercept(continuation, client_call_details, request)


class AioUnaryStreamTracing(_AioClientSpan, grpc.aio.UnaryStreamClientInterceptor):
    async def intercept_unary_stream(self, continuation, client_call_details, request):  # type: ignore[no-untyped-def]
        return await self._intercept(continuation, client_call_details, request)


class AioStreamUnaryTracing(_AioClientSpan, grpc.aio.StreamUnaryClientInterceptor):
    async def intercept_stream_unary(self, continuation, client_call_details, request_iterator):  # type: ignore[no-untyped-def]
        return await self._intercept(continuation, client_call_details, request_iterator)


class _SyncDetails(
    collections.namedtuple(
        "_SyncDetails",
        ("method", "timeout", "metadata", "credentials", "wait_for_ready", "compression"),
    ),
    grpc.ClientCallDetails,
):
    """grpc.ClientCallDetails is abstract; this is the usual concrete form."""


class SyncTracingInterceptor(grpc.UnaryUnaryClientInterceptor):
    """A CLIENT span per unary call of a blocking channel (the worker's)."""

    def intercept_unary_unary(self, continuation, client_call_details, request):  # type: ignore[no-untyped-def]
        d = client_call_details
        span, headers = _start_client_span(d.method)
        details = _SyncDetails(
            d.method,
            d.timeout,
            [*(d.metadata or ()), *headers],
            d.credentials,
            getattr(d, "wait_for_ready", None),
            getattr(d, "compression", None),
        )
        try:
            outcome = continuation(details, request)
        except BaseException as exc:
            finish(span, _code_of(exc), client=True)
            raise
        code = outcome.code()
        finish(span, code.name if isinstance(code, grpc.StatusCode) else "UNKNOWN", client=True)
        return outcome


def aio_client_interceptors() -> list[Any]:
    """What a new aio channel adds: the tracing interceptor when tracing is on."""
    if not tracing.enabled():
        return []
    return [AioUnaryUnaryTracing(), AioUnaryStreamTracing(), AioStreamUnaryTracing()]


def traced_sync_channel(channel: grpc.Channel) -> grpc.Channel:
    """`channel` with the tracing interceptor when tracing is on."""
    if not tracing.enabled():
        return channel
    return grpc.intercept_channel(channel, SyncTracingInterceptor())
