"""Tracing's set-up from the OTEL_* variables (off by default), the spans laid
for steps timed in another process, and the worker's reading of the task
message's headers."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from services.common import tracing
from services.jobs.queue import ENQUEUED_AT_HEADER
from services.worker.trace import message_headers, traced_run

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    ("environ", "on"),
    [
        ({}, False),
        ({"OTEL_SERVICE_NAME": "x", "OTEL_TRACES_SAMPLER": "always_on"}, False),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4317"}, True),
        ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://collector:4317"}, True),
        ({"OTEL_TRACES_EXPORTER": "otlp"}, True),
        ({"OTEL_TRACES_EXPORTER": "console"}, True),
        ({"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4317"}, False),
        ({"OTEL_TRACES_EXPORTER": "otlp", "OTEL_SDK_DISABLED": "true"}, False),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "  "}, False),
    ],
)
def test_tracing_is_on_only_when_the_environment_asks(environ: dict[str, str], on: bool) -> None:
    assert tracing.wanted(environ) is on


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({"OTEL_TRACES_EXPORTER": "jaeger"}, "OTEL_TRACES_EXPORTER names jaeger"),
        ({"OTEL_TRACES_EXPORTER": "otlp,zipkin"}, "OTEL_TRACES_EXPORTER names zipkin"),
        (
            {"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf"},
            "OTLP over gRPC only",
        ),
    ],
)
def test_an_exporter_it_cannot_serve_stops_the_start_up(
    environ: dict[str, str], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        tracing.check(environ)
    with pytest.raises(ValueError, match=message):
        tracing.configure("gateway", environ)
    assert not tracing.enabled()


def test_off_by_default_nothing_is_recorded_or_injected() -> None:
    assert tracing.configure("gateway", {}) is False
    assert not tracing.enabled()
    with tracing.span("x", {"a": 1}) as span:
        assert span is tracing.INVALID_SPAN
        assert tracing.inject({}) == {}
        assert tracing.start("y") is tracing.INVALID_SPAN
    assert tracing.extract({"traceparent": "00-" + "1" * 32 + "-" + "2" * 16 + "-01"}) is None


def test_configure_installs_the_sdk_from_the_environment() -> None:
    """In a process of its own (the tracer provider is process-wide): the console
    exporter prints the span, named after the component unless OTEL_SERVICE_NAME says."""
    code = (
        "from services.common import tracing\n"
        "assert tracing.configure('embedding')\n"
        "with tracing.span('hello', {'k': 'v'}):\n"
        "    pass\n"
        "tracing.shutdown()\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_") and k != "PYTHONPATH"}
    env.update(
        {
            "PYTHONPATH": str(REPO),
            "OTEL_TRACES_EXPORTER": "console",
            "OTEL_RESOURCE_ATTRIBUTES": "deployment.environment=test",
        }
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        check=False,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    span = json.loads(out.stdout)
    assert span["name"] == "hello"
    assert span["attributes"] == {"k": "v"}
    resource = span["resource"]["attributes"]
    assert resource["service.name"] == "ragmesh-embedding"
    assert resource["ragmesh.component"] == "embedding"
    assert resource["deployment.environment"] == "test"

    env["OTEL_SERVICE_NAME"] = "my-embedder"
    out = subprocess.run(
        [sys.executable, "-c", code],
        check=False,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert json.loads(out.stdout)["resource"]["attributes"]["service.name"] == "my-embedder"


@pytest.fixture
def exporter() -> InMemorySpanExporter:
    memory = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(memory))
    tracing.install(provider)
    yield memory  # type: ignore[misc]
    tracing.install(None)


def test_steps_timed_elsewhere_are_laid_end_to_end(exporter: InMemorySpanExporter) -> None:
    end = 10_000_000_000
    with tracing.span("document") as parent:
        tracing.span_steps([("parse", 0.5), ("tokenize", 0.25), ("split", 0.125)], end_ns=end)
    steps = [s for s in exporter.get_finished_spans() if s.name != "document"]
    assert [(s.name, s.start_time, s.end_time) for s in steps] == [
        ("parse", end - 875_000_000, end - 375_000_000),
        ("tokenize", end - 375_000_000, end - 125_000_000),
        ("split", end - 125_000_000, end),
    ]
    for s in steps:
        assert s.parent is not None and s.parent.span_id == parent.get_span_context().span_id


def test_the_worker_reads_the_headers_where_celery_keeps_them() -> None:
    tp = "00-" + "a" * 32 + "-" + "b" * 16 + "-01"
    # Celery's protocol 2 puts a message's custom headers on the request itself ...
    on_request = SimpleNamespace(headers=None, traceparent=tp, **{ENQUEUED_AT_HEADER: 12.5})
    assert message_headers(on_request) == {"traceparent": tp, ENQUEUED_AT_HEADER: 12.5}
    # ... and some versions in request.headers
    in_headers = SimpleNamespace(headers={"traceparent": tp})
    assert message_headers(in_headers) == {"traceparent": tp}
    assert message_headers(SimpleNamespace()) == {}


def test_a_run_continues_the_senders_trace(exporter: InMemorySpanExporter) -> None:
    with tracing.span("upload") as upload:
        headers = dict(tracing.inject({}))
    sent_at = 1_000.0
    request = SimpleNamespace(
        id="task-1",
        retries=1,
        delivery_info={"routing_key": "ragmesh-ingest"},
        headers=None,
        **headers,
        **{ENQUEUED_AT_HEADER: sent_at},
    )
    with traced_run(request, "job-1") as run:
        assert run.is_recording()
    spans = {s.name: s for s in exporter.get_finished_spans()}
    upload_id = upload.get_span_context().span_id
    process, wait = spans["ragmesh-ingest process"], spans["ingest.queue_wait"]
    for s in (process, wait):
        assert s.parent is not None and s.parent.span_id == upload_id
        assert s.context.trace_id == upload.get_span_context().trace_id
    assert wait.start_time == 1_000_000_000_000
    assert process.attributes is not None
    assert process.attributes["ragmesh.retries"] == 1
    assert process.attributes["messaging.message.id"] == "task-1"
