"""Server interceptor: request id, access log, metrics and exception → status.

One interceptor wraps every handler so that the request id is set in the
task that runs the call (contextvars do not cross into the handler from an
interceptor's own frame), and so that whatever escapes a handler becomes a
precise status with an ErrorInfo — never UNKNOWN.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc

from services.common import errors, metrics, tracing
from services.common.logs import request_id_var
from services.common.reasons import SANITIZED_CODES, public_message
from services.common.status import from_rpc_error, to_status
from services.common.trace_interceptors import ServerCallSpan

log = logging.getLogger("ragmesh.access")
REQUEST_ID_KEY = "x-request-id"

_HEALTH_AND_REFLECTION = ("/grpc.health.v1.", "/grpc.reflection.")


def _request_id(details: grpc.HandlerCallDetails) -> str:
    for key, value in details.invocation_metadata or ():
        if key == REQUEST_ID_KEY and isinstance(value, str) and 0 < len(value) <= 128:
            return value
    return uuid.uuid4().hex


class ConcurrencyLimit:
    """Calls in progress on one server, refused past `limit` (SERVER_BUSY).

    Only counting: asyncio runs every handler on one thread."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.active = 0

    def enter(self) -> None:
        if self.active >= self.limit:
            raise errors.ResourceExhausted(
                f"the server is handling {self.active} calls, its limit "
                "(RAGMESH_MAX_CONCURRENT_RPCS)",
                reason="SERVER_BUSY",
                retry_after_s=1.0,
            )
        self.active += 1

    def leave(self) -> None:
        self.active -= 1


class ServerInterceptor(grpc.aio.ServerInterceptor):
    """`translate` turns a dependency's own exceptions (e.g. Redis's) into the
    project's errors; `public` (the gateway) keeps the details of INTERNAL and
    UNAVAILABLE errors in the logs and gives callers only what the error
    catalogue says, with the request id; `max_concurrent` bounds the calls in
    progress (health checks and reflection never count)."""

    def __init__(
        self,
        service: str,
        translate: Callable[[BaseException], errors.ServiceError | None] | None = None,
        public: bool = False,
        max_concurrent: int = 1_000_000,
    ) -> None:
        self.service = service
        self.translate = translate
        self.public = public
        self.limit = ConcurrencyLimit(max_concurrent)

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        method: str = handler_call_details.method
        if handler is None or method.startswith(_HEALTH_AND_REFLECTION):
            return handler
        call = _Call(
            self.service,
            method,
            _request_id(handler_call_details),
            self.translate,
            self.public,
            self.limit,
        )
        if tracing.enabled():
            call.trace = ServerCallSpan(method, handler_call_details.invocation_metadata)
        kwargs = {
            "request_deserializer": _tolerant(handler.request_deserializer),
            "response_serializer": handler.response_serializer,
        }
        if handler.unary_unary:
            return grpc.unary_unary_rpc_method_handler(call.unary(handler.unary_unary), **kwargs)
        if handler.stream_unary:
            return grpc.stream_unary_rpc_method_handler(
                call.unary(handler.stream_unary, streaming_request=True), **kwargs
            )
        if handler.unary_stream:
            return grpc.unary_stream_rpc_method_handler(call.stream(handler.unary_stream), **kwargs)
        return grpc.stream_stream_rpc_method_handler(
            call.stream(handler.stream_stream, streaming_request=True), **kwargs
        )


class _Malformed:
    """A request whose bytes did not decode. gRPC would end a unary call whose
    deserializer raises with UNKNOWN before any interceptor runs (and a streaming
    call's read would raise inside the handler, becoming INTERNAL); this stands in
    for the message so that the call fails INVALID_ARGUMENT like any bad input."""

    __slots__ = ()


def _tolerant(deserializer: Callable[[bytes], Any] | None) -> Callable[[bytes], Any] | None:
    if deserializer is None:
        return None

    def decode(raw: bytes) -> Any:
        try:
            return deserializer(raw)
        except Exception:  # DecodeError, or whatever else a deserializer raises
            return _Malformed()

    return decode


def _check_decoded(request: Any) -> Any:
    if isinstance(request, _Malformed):
        raise errors.InvalidArgument(
            "the request is not a valid protobuf message of this method's request type",
            reason="MALFORMED_REQUEST",
        )
    return request


async def _decoded(requests: AsyncIterator[Any]) -> AsyncIterator[Any]:
    async for request in requests:
        yield _check_decoded(request)


class _Call:
    """Per-call bookkeeping around one handler invocation."""

    def __init__(
        self,
        service: str,
        method: str,
        request_id: str,
        translate: Callable[[BaseException], errors.ServiceError | None] | None = None,
        public: bool = False,
        limit: ConcurrencyLimit | None = None,
    ) -> None:
        self.service = service
        self.method = method
        self.limit = limit or ConcurrencyLimit(1_000_000)
        self.short_method = method.rsplit("/", 1)[-1]
        self.request_id = request_id
        self.translate = translate
        self.public = public
        #: the call's SERVER span (a no-op one when tracing is off)
        self.trace: ServerCallSpan | None = None

    def unary(
        self, behavior: Callable[..., Awaitable[Any]], streaming_request: bool = False
    ) -> Callable[..., Awaitable[Any]]:
        async def wrapped(request: Any, context: grpc.aio.ServicerContext) -> Any:
            token = self._begin(context)
            start = time.perf_counter()
            code = "OK"
            entered = False
            try:
                self.limit.enter()
                entered = True
                request = _decoded(request) if streaming_request else _check_decoded(request)
                return await behavior(request, context)
            except grpc.aio.AbortError:
                code = _code_name(context)
                raise
            except asyncio.CancelledError:
                code = "CANCELLED"
                raise
            except Exception as exc:
                error = self._as_service_error(exc)
                code = error.code
                await self._abort(error, context)
            finally:
                if entered:
                    self.limit.leave()
                self._end(token, code, start)

        return wrapped

    def stream(
        self, behavior: Callable[..., Any], streaming_request: bool = False
    ) -> Callable[..., AsyncIterator[Any]]:
        async def wrapped(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
            token = self._begin(context)
            start = time.perf_counter()
            code = "OK"
            entered = False
            try:
                self.limit.enter()
                entered = True
                request = _decoded(request) if streaming_request else _check_decoded(request)
                async for response in behavior(request, context):
                    yield response
            except grpc.aio.AbortError:
                code = _code_name(context)
                raise
            except (asyncio.CancelledError, GeneratorExit):
                code = "CANCELLED"
                raise
            except Exception as exc:
                error = self._as_service_error(exc)
                code = error.code
                await self._abort(error, context)
            finally:
                if entered:
                    self.limit.leave()
                self._end(token, code, start)

        return wrapped

    def _begin(self, context: grpc.aio.ServicerContext) -> Any:
        token = request_id_var.set(self.request_id)
        context.set_trailing_metadata(((REQUEST_ID_KEY, self.request_id),))
        if self.trace is not None:
            self.trace.begin(self.request_id)
        return token

    def _end(self, token: Any, code: str, start: float) -> None:
        elapsed = time.perf_counter() - start
        metrics.observe(self.service, self.short_method, code, elapsed)
        level = logging.INFO if code in ("OK", "CANCELLED") else logging.WARNING
        log.log(
            level,
            "%s %s %.1fms",
            self.short_method,
            code,
            elapsed * 1000,
            extra={"method": self.method, "code": code, "ms": round(elapsed * 1000, 2)},
        )
        try:
            request_id_var.reset(token)
            in_call_context = True
        except ValueError:
            # A stream whose client went away while a response was being written is closed
            # later by the event loop's async-generator finalizer, in a task of its own: this
            # `finally` then runs in another Context, where the call's values were never set.
            in_call_context = False
        if self.trace is not None:
            self.trace.end(code, detach=in_call_context)

    async def _abort(self, error: errors.ServiceError, context: grpc.aio.ServicerContext) -> None:
        """Ends the call with `error`'s status and ErrorInfo (context.abort raises)."""
        if self.public and error.code in SANITIZED_CODES:
            log.warning(
                "%s failed: %s %s: %s",
                self.short_method,
                error.code,
                error.reason,
                error.message,
                extra={"method": self.method, "code": error.code, "reason": error.reason},
            )
            error = sanitized(error, self.request_id)
        status = to_status(error, f"{self.service}.ragmesh")
        metadata = (*tuple(status.trailing_metadata), (REQUEST_ID_KEY, self.request_id))
        await context.abort(status.code, status.details, metadata)

    def _as_service_error(self, exc: BaseException) -> errors.ServiceError:
        if isinstance(exc, errors.ServiceError):
            return exc
        translated = self.translate(exc) if self.translate is not None else None
        if translated is not None:
            return translated
        if isinstance(exc, grpc.aio.AioRpcError):
            return from_rpc_error(exc, "downstream call failed")
        if isinstance(exc, TimeoutError):
            return errors.DeadlineExceeded(str(exc) or "operation timed out")
        log.exception("unhandled error in %s", self.method, exc_info=exc)
        return errors.Internal(
            f"internal error in {self.short_method}: {type(exc).__name__}: {exc}"
        )


def sanitized(error: errors.ServiceError, request_id: str) -> errors.ServiceError:
    """The same error with no detail that could name a host, a port, a URL, a
    path, an exception type or an upstream's answer: the catalogue's words for
    its reason, and the request id to find the details in the logs."""
    return type(error)(
        f"{public_message(error.code, error.reason)} (request id {request_id})",
        reason=error.reason,
        retry_after_s=error.retry_after_s,
    )


def _code_name(context: grpc.aio.ServicerContext) -> str:
    code = context.code()
    if isinstance(code, grpc.StatusCode):
        return code.name
    if isinstance(code, int):
        return next((c.name for c in grpc.StatusCode if c.value[0] == code), "UNKNOWN")
    return "UNKNOWN"
