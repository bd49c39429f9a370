"""Unit tests of services/common: errors → status, retry config, logs."""

from __future__ import annotations

import asyncio
import contextvars
import json
import logging
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
from google.rpc import error_details_pb2, status_pb2
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from services.common import errors, tracing
from services.common.channels import retry_service_config
from services.common.config import default_metrics_port
from services.common.interceptors import _Call
from services.common.logs import JsonFormatter, request_id_var
from services.common.status import to_status
from services.common.trace_interceptors import ServerCallSpan


def test_to_status_carries_code_message_and_error_info() -> None:
    err = errors.NotFound("no such kb", reason="KNOWLEDGE_BASE_NOT_FOUND", metadata={"kb": "x"})
    status = to_status(err, "gateway.ragmesh")
    assert status.code == grpc.StatusCode.NOT_FOUND
    assert status.details == "no such kb"
    raw = dict(status.trailing_metadata)["grpc-status-details-bin"]
    decoded = status_pb2.Status.FromString(raw)
    info = error_details_pb2.ErrorInfo()
    assert decoded.details[0].Unpack(info)
    assert (info.reason, info.domain, dict(info.metadata)) == (
        "KNOWLEDGE_BASE_NOT_FOUND",
        "gateway.ragmesh",
        {"kb": "x"},
    )


def test_every_error_class_names_a_real_status_code() -> None:
    for cls in errors.ServiceError.__subclasses__():
        assert getattr(grpc.StatusCode, cls.code) is not grpc.StatusCode.UNKNOWN
        assert cls.default_reason.isupper()


def test_retry_policy_only_for_idempotent_methods() -> None:
    config = json.loads(retry_service_config("pkg.Svc", ["Get", "List"]))
    (method_config,) = config["methodConfig"]
    assert [n["method"] for n in method_config["name"]] == ["Get", "List"]
    assert method_config["retryPolicy"]["retryableStatusCodes"] == ["UNAVAILABLE"]
    assert json.loads(retry_service_config("pkg.Svc", [])) == {"methodConfig": []}


def test_metrics_port_follows_grpc_port() -> None:
    assert default_metrics_port(50051) == 9101
    assert default_metrics_port(50055) == 9105


def test_json_log_lines_carry_the_request_id() -> None:
    formatter = JsonFormatter("toy")
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "hello %s", ("world",), None)
    record.method = "/a.B/C"
    token = request_id_var.set("rid-123")
    try:
        line = json.loads(formatter.format(record))
    finally:
        request_id_var.reset(token)
    assert line["msg"] == "hello world"
    assert line["request_id"] == "rid-123"
    assert line["service"] == "toy"
    assert line["method"] == "/a.B/C"


class _StreamContext:
    """What the interceptor's stream wrapper asks of a grpc.aio.ServicerContext."""

    def set_trailing_metadata(self, metadata: object) -> None:
        self.trailing = metadata


async def _close_in_a_task_of_its_own(stream: Any) -> None:
    # What the event loop's async-generator finalizer does with a stream left suspended
    # at a `yield` (its client went away while that response was being written).
    await asyncio.get_running_loop().create_task(stream.aclose(), context=contextvars.Context())


@pytest.mark.parametrize("traced", [False, True])
async def test_a_stream_closed_from_another_context_ends_as_cancelled(
    traced: bool, caplog: pytest.LogCaptureFixture
) -> None:
    """Seen on `make run` (~1 watch in 10): `Task exception was never retrieved … ValueError:
    <Token …> was created in a different Context` after `WatchIngestionJob CANCELLED`."""

    async def two_responses(request: object, context: object) -> AsyncIterator[str]:
        yield "first"
        yield "second"

    memory = InMemorySpanExporter()
    if traced:
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(memory))
        tracing.install(provider)
    try:
        call = _Call("gateway", "/ragmesh.gateway.v1.Rag/WatchIngestionJob", "rid-1")
        if traced:
            call.trace = ServerCallSpan(call.method, ())
        stream = call.stream(two_responses)(object(), _StreamContext())
        with caplog.at_level(logging.DEBUG):
            assert await anext(stream) == "first"
            assert request_id_var.get() == "rid-1"
            await _close_in_a_task_of_its_own(stream)  # raised ValueError before the fix
    finally:
        tracing.install(None)
    ended = [r.getMessage() for r in caplog.records if r.name == "ragmesh.access"]
    assert len(ended) == 1 and ended[0].startswith("WatchIngestionJob CANCELLED ")
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]  # nor OTel's detach
    if traced:
        (span,) = memory.get_finished_spans()
        assert (span.attributes or {})["rpc.grpc.status_code"] == grpc.StatusCode.CANCELLED.value[0]
