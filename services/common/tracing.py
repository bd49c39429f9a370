"""OpenTelemetry tracing: one trace per request from the gateway through every
service to the LLM call, and one per ingestion job across the Celery hop.

Off by default. A process traces when its environment asks for an exporter
with the standard variables: OTEL_TRACES_EXPORTER (`otlp` or `console`; `none`
turns tracing off), or an OTLP endpoint (OTEL_EXPORTER_OTLP_ENDPOINT or
OTEL_EXPORTER_OTLP_TRACES_ENDPOINT) alone; OTEL_SDK_DISABLED=true wins over
both. The SDK itself reads the rest: OTEL_SERVICE_NAME (default
`ragmesh-<service>`), OTEL_RESOURCE_ATTRIBUTES, OTEL_TRACES_SAMPLER(_ARG),
OTEL_EXPORTER_OTLP_* (headers, TLS, timeout, compression), OTEL_BSP_* (batching)
and OTEL_PROPAGATORS.

Off, nothing is installed: `span()` yields a shared non-recording span, no
context is extracted or injected, and the gRPC interceptors are not added to
channels at all, so the cost is one attribute read per instrumented step.

The exporter speaks OTLP over gRPC (opentelemetry-exporter-otlp-proto-grpc);
OTEL_EXPORTER_OTLP_PROTOCOL may say `grpc` or nothing. Spans leave in batches
from a background thread (BatchSpanProcessor), never on the request's path.

This module does not import grpc: the interceptors that carry `traceparent` in
gRPC metadata are services.common.trace_interceptors.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Iterator, Mapping, MutableMapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.trace import INVALID_SPAN, Span, SpanKind, Status, StatusCode

log = logging.getLogger("ragmesh.tracing")

__all__ = [
    "INVALID_SPAN",
    "Span",
    "SpanKind",
    "Status",
    "StatusCode",
    "activate",
    "annotate",
    "attach",
    "check",
    "configure",
    "detach",
    "enabled",
    "end_with_error",
    "extract",
    "inject",
    "install",
    "shutdown",
    "span",
    "span_steps",
    "start",
    "wanted",
]

#: the instrumentation scope of every span of the project
TRACER_NAME = "ragmesh"
EXPORTERS = ("otlp", "console")

_tracer: trace.Tracer | None = None  # None: tracing is off in this process
_provider: Any = None  # the SDK TracerProvider we installed (to flush and shut down)
_lock = threading.Lock()


def enabled() -> bool:
    return _tracer is not None


def wanted(environ: Mapping[str, str] = os.environ) -> bool:
    """Whether the environment asks for traces (see the module docstring)."""
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    exporter = environ.get("OTEL_TRACES_EXPORTER", "").strip().lower()
    if exporter:
        return exporter != "none"
    return bool(
        environ.get("OTEL_EXPORTER_OTLP_ENDPOINT", "").strip()
        or environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "").strip()
    )


def _exporter_names(environ: Mapping[str, str]) -> list[str]:
    names = [
        n.strip().lower()
        for n in (environ.get("OTEL_TRACES_EXPORTER") or "otlp").split(",")
        if n.strip() and n.strip().lower() != "none"
    ]
    unknown = [n for n in names if n not in EXPORTERS]
    if unknown:
        raise ValueError(
            f"OTEL_TRACES_EXPORTER names {', '.join(unknown)}; ragmesh exports "
            f"{' or '.join(EXPORTERS)} (or none)"
        )
    return names


def _protocol(environ: Mapping[str, str]) -> str:
    protocol = (
        environ.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
        or environ.get("OTEL_EXPORTER_OTLP_PROTOCOL")
        or "grpc"
    )
    if protocol.strip().lower() != "grpc" and "otlp" in _exporter_names(environ):
        raise ValueError(
            f"OTEL_EXPORTER_OTLP_PROTOCOL={protocol!r}: ragmesh exports OTLP over gRPC only"
        )
    return protocol


def _exporters(environ: Mapping[str, str]) -> list[Any]:
    names = _exporter_names(environ)
    _protocol(environ)
    exporters: list[Any] = []
    if "otlp" in names:
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        exporters.append(OTLPSpanExporter())
    if "console" in names:
        from opentelemetry.sdk.trace.export import ConsoleSpanExporter

        exporters.append(ConsoleSpanExporter())
    return exporters


def check(environ: Mapping[str, str] = os.environ) -> None:
    """Raises ValueError when the environment asks for an exporter or protocol
    that cannot be served; builds nothing (a parent process that forks the ones
    that trace checks here, so that a mistake stops it at start-up)."""
    if wanted(environ):
        _exporter_names(environ)
        _protocol(environ)


def configure(service: str, environ: Mapping[str, str] = os.environ) -> bool:
    """Installs the SDK with the exporters the environment names; True when this
    process traces. Called once per process at start-up (a second call keeps the
    first set-up). Raises ValueError on an exporter or protocol it cannot serve,
    so that a mistyped variable stops the start-up instead of tracing nothing."""
    global _tracer, _provider  # noqa: PLW0603 - one tracer per process by design
    with _lock:
        if _tracer is not None:
            return True
        if not wanted(environ):
            return False
        from opentelemetry.sdk.resources import SERVICE_NAME, Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor

        exporters = _exporters(environ)
        name = environ.get("OTEL_SERVICE_NAME", "").strip() or f"ragmesh-{service}"
        # The sampler comes from OTEL_TRACES_SAMPLER (default: parent-based, always on).
        provider = TracerProvider(
            resource=Resource.create({SERVICE_NAME: name, "ragmesh.component": service})
        )
        for exporter in exporters:
            provider.add_span_processor(BatchSpanProcessor(exporter))
        trace.set_tracer_provider(provider)
        _provider = provider
        _tracer = provider.get_tracer(TRACER_NAME)
    log.info(
        "tracing on: service %s, exporters %s, endpoint %s",
        name,
        environ.get("OTEL_TRACES_EXPORTER") or "otlp",
        environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
        or environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")
        or "the default (localhost:4317)",
    )
    return True


def install(provider: Any | None) -> None:
    """Traces into `provider` (tests: an SDK TracerProvider with an in-memory
    exporter), or stops tracing with None. The global provider is left alone."""
    global _tracer, _provider  # noqa: PLW0603 - see configure
    with _lock:
        _provider = provider
        _tracer = provider.get_tracer(TRACER_NAME) if provider is not None else None


def shutdown() -> None:
    """Exports what is still batched (a process about to exit)."""
    provider = _provider
    if provider is not None:
        try:
            provider.force_flush(5000)
        except Exception:  # never fail a shutdown over telemetry
            log.exception("flushing spans failed")


# --- spans ---------------------------------------------------------------------------------


class _Off(AbstractContextManager[Span]):
    """What `span()` returns when tracing is off: one shared object, no generator."""

    def __enter__(self) -> Span:
        return INVALID_SPAN

    def __exit__(self, *exc: object) -> None:
        return None


_OFF = _Off()


def span(
    name: str,
    attributes: Mapping[str, Any] | None = None,
    *,
    kind: SpanKind = SpanKind.INTERNAL,
    context: otel_context.Context | None = None,
    start_time_ns: int | None = None,
) -> AbstractContextManager[Span]:
    """A span around the block, current inside it (its children nest under it);
    an exception escaping the block is recorded and marks it ERROR. Off: the
    shared non-recording span, nothing else."""
    tracer = _tracer
    if tracer is None:
        return _OFF
    return tracer.start_as_current_span(
        name,
        context=context,
        kind=kind,
        attributes=attributes,
        start_time=start_time_ns,
    )


def start(
    name: str,
    attributes: Mapping[str, Any] | None = None,
    *,
    kind: SpanKind = SpanKind.INTERNAL,
    parent: Span | None = None,
    context: otel_context.Context | None = None,
    start_time_ns: int | None = None,
) -> Span:
    """A span that the caller ends (`.end()`), not made current: for a wait or a
    stream that ends somewhere else than where it began. Its parent is `parent`,
    else `context`, else the current span."""
    tracer = _tracer
    if tracer is None:
        return INVALID_SPAN
    if parent is not None:
        context = trace.set_span_in_context(parent)
    return tracer.start_span(
        name, context=context, kind=kind, attributes=attributes, start_time=start_time_ns
    )


@contextmanager
def activate(current: Span) -> Iterator[None]:
    """Makes `current` the current span inside the block (without ending it)."""
    if current is INVALID_SPAN or _tracer is None:
        yield
        return
    token = otel_context.attach(trace.set_span_in_context(current))
    try:
        yield
    finally:
        otel_context.detach(token)


def attach(current: Span) -> object | None:
    """Makes `current` the current span until `detach(token)` (for a begin and
    an end in different functions); None when off."""
    if current is INVALID_SPAN or _tracer is None:
        return None
    return otel_context.attach(trace.set_span_in_context(current))


def detach(token: object | None) -> None:
    if token is not None:
        otel_context.detach(token)  # type: ignore[arg-type]


def annotate(attributes: Mapping[str, Any]) -> None:
    """Sets attributes on the current span (nothing when off)."""
    if _tracer is not None:
        trace.get_current_span().set_attributes(attributes)


def end_with_error(current: Span, exc: BaseException | None, description: str = "") -> None:
    """Ends `current` marked ERROR (with the exception as an event, when given)."""
    if current is INVALID_SPAN:
        return
    if exc is not None:
        current.record_exception(exc)
    if not description and exc is not None:
        description = f"{type(exc).__name__}: {exc}"
    current.set_status(Status(StatusCode.ERROR, description))
    current.end()


def span_steps(steps: Sequence[tuple[str, float]], end_ns: int | None = None) -> None:
    """Child spans of the current span for steps timed elsewhere (another
    process), laid end to end so that the last ends at `end_ns` (now)."""
    if _tracer is None:
        return
    at = end_ns if end_ns is not None else time.time_ns()
    starts: list[tuple[str, int, int]] = []
    for name, seconds in reversed(steps):
        begin = at - int(max(seconds, 0.0) * 1e9)
        starts.append((name, begin, at))
        at = begin
    for name, begin, end in reversed(starts):
        _tracer.start_span(name, start_time=begin).end(end_time=end)


def epoch_ns(wall_clock_s: float) -> int:
    """A `time.time()` reading as a span timestamp."""
    return int(wall_clock_s * 1e9)


def now_ns() -> int:
    return time.time_ns()


# --- propagation (W3C traceparent / tracestate, and baggage, per OTEL_PROPAGATORS) ---------


def inject(carrier: MutableMapping[str, str]) -> MutableMapping[str, str]:
    """Adds the current span's `traceparent` (and `tracestate`) to `carrier`;
    nothing when tracing is off or there is no current span."""
    if _tracer is not None:
        propagate.inject(carrier)
    return carrier


def extract(carrier: Mapping[str, Any]) -> otel_context.Context | None:
    """The context a carrier's `traceparent` names (None when tracing is off)."""
    if _tracer is None:
        return None
    return propagate.extract({k: v for k, v in carrier.items() if isinstance(v, str)})
