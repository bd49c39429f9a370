"""The server bootstrap over real sockets: health, reflection, interceptor,
request ids, metrics and graceful SIGTERM shutdown."""

from __future__ import annotations

import asyncio
import signal
import sys
import time
import urllib.request
from collections.abc import AsyncIterator

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)

from devstack.procs import ManagedProcess, free_port, health_status
from ragmesh.chunking.v1 import chunking_pb2, chunking_pb2_grpc
from ragmesh.generation.v1 import generation_pb2, generation_pb2_grpc
from ragmesh.rpc import retry_delay_of
from services.common.channels import create_channel
from services.common.config import CommonSettings
from services.common.server import RunningServer, start_server
from services.common.status import error_info_of
from tests.support.toy_service import ToyService

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


@pytest.fixture
async def toy() -> AsyncIterator[tuple[RunningServer, grpc.aio.Channel, int]]:
    metrics_port = free_port()
    settings = CommonSettings(readiness_interval_s=0.05, shutdown_grace_s=1.0)
    running = await start_server(ToyService(), 0, settings, metrics_port)
    channel = create_channel(f"127.0.0.1:{running.port}")
    yield running, channel, metrics_port
    await channel.close()
    await running.stop()


async def _health(channel: grpc.aio.Channel, service: str = "") -> int:
    stub = health_pb2_grpc.HealthStub(channel)
    resp = await stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=2)
    return int(resp.status)


async def _wait_health(channel: grpc.aio.Channel, want: int) -> None:
    for _ in range(100):
        if await _health(channel) == want:
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"health never became {want}")


async def test_health_follows_readiness(toy: tuple[RunningServer, grpc.aio.Channel, int]) -> None:
    running, channel, _ = toy
    await _wait_health(channel, SERVING)
    assert await _health(channel, "ragmesh.chunking.v1.ChunkingService") == SERVING
    running.service.is_ready = False  # type: ignore[attr-defined]
    await _wait_health(channel, NOT_SERVING)
    running.service.is_ready = True  # type: ignore[attr-defined]
    await _wait_health(channel, SERVING)


async def test_health_not_serving_until_started() -> None:
    port = free_port()
    settings = CommonSettings(readiness_interval_s=0.05, metrics_enabled=False)
    task = asyncio.create_task(start_server(ToyService(start_delay=1.0), port, settings))
    channel = create_channel(f"127.0.0.1:{port}")
    try:
        for _ in range(100):
            try:
                status = await _health(channel)
                break
            except grpc.aio.AioRpcError:
                await asyncio.sleep(0.02)
        assert status == NOT_SERVING
        running = await task
        await _wait_health(channel, SERVING)
        await running.stop()
    finally:
        await channel.close()


async def test_reflection_lists_the_services(
    toy: tuple[RunningServer, grpc.aio.Channel, int],
) -> None:
    running, _, _ = toy

    def list_services() -> set[str]:
        # The blocking reflection client runs in a thread: the server shares this loop.
        with grpc.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            return set(ProtoReflectionDescriptorDatabase(channel).get_services())

    names = await asyncio.to_thread(list_services)
    assert {
        "ragmesh.chunking.v1.ChunkingService",
        "ragmesh.generation.v1.GenerationService",
        "grpc.health.v1.Health",
    } <= names


async def test_domain_error_becomes_status_with_error_info(
    toy: tuple[RunningServer, grpc.aio.Channel, int],
) -> None:
    _, channel, _ = toy
    stub = chunking_pb2_grpc.ChunkingServiceStub(channel)
    with pytest.raises(grpc.aio.AioRpcError) as exc:
        await stub.ChunkDocument(chunking_pb2.ChunkDocumentRequest(text="invalid"), timeout=5)
    assert exc.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert exc.value.details() == "text is invalid"
    info = error_info_of(exc.value)
    assert info is not None
    assert (info.reason, info.domain, dict(info.metadata)) == (
        "TOY_INVALID",
        "toy.ragmesh",
        {"field": "text"},
    )


@pytest.mark.parametrize(
    ("text", "code", "reason"),
    [
        ("crash", grpc.StatusCode.INTERNAL, "INTERNAL_ERROR"),
        ("timeout", grpc.StatusCode.DEADLINE_EXCEEDED, "DEADLINE_EXCEEDED"),
    ],
)
async def test_unexpected_errors_never_become_unknown(
    toy: tuple[RunningServer, grpc.aio.Channel, int],
    text: str,
    code: grpc.StatusCode,
    reason: str,
) -> None:
    _, channel, _ = toy
    stub = chunking_pb2_grpc.ChunkingServiceStub(channel)
    with pytest.raises(grpc.aio.AioRpcError) as exc:
        await stub.ChunkDocument(chunking_pb2.ChunkDocumentRequest(text=text), timeout=5)
    assert exc.value.code() == code
    info = error_info_of(exc.value)
    assert info is not None and info.reason == reason


async def test_error_in_a_stream_after_messages(
    toy: tuple[RunningServer, grpc.aio.Channel, int],
) -> None:
    _, channel, _ = toy
    stub = generation_pb2_grpc.GenerationServiceStub(channel)
    received = []
    with pytest.raises(grpc.aio.AioRpcError) as exc:
        async for msg in stub.GenerateAnswer(
            generation_pb2.GenerateAnswerRequest(question="fail"), timeout=5
        ):
            received.append(msg.delta.text)
    assert received == ["a"]
    assert exc.value.code() == grpc.StatusCode.UNAVAILABLE
    info = error_info_of(exc.value)
    assert info is not None and info.reason == "TOY_UPSTREAM_DOWN"


async def test_request_id_is_taken_from_metadata_or_generated(
    toy: tuple[RunningServer, grpc.aio.Channel, int],
) -> None:
    _, channel, _ = toy
    stub = chunking_pb2_grpc.ChunkingServiceStub(channel)
    call = stub.ChunkDocument(
        chunking_pb2.ChunkDocumentRequest(text="ok"), metadata=(("x-request-id", "abc-1"),)
    )
    assert (await call).title == "abc-1"
    assert ("x-request-id", "abc-1") in tuple(await call.trailing_metadata())
    generated = (await stub.ChunkDocument(chunking_pb2.ChunkDocumentRequest(text="ok"))).title
    assert len(generated) == 32 and generated != "abc-1"


async def test_metrics_count_requests_and_errors(
    toy: tuple[RunningServer, grpc.aio.Channel, int],
) -> None:
    _, channel, metrics_port = toy
    stub = chunking_pb2_grpc.ChunkingServiceStub(channel)
    await stub.ChunkDocument(chunking_pb2.ChunkDocumentRequest(text="ok"))
    with pytest.raises(grpc.aio.AioRpcError):
        await stub.ChunkDocument(chunking_pb2.ChunkDocumentRequest(text="invalid"))
    body = await asyncio.to_thread(
        lambda: urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics").read().decode()
    )
    assert 'ragmesh_grpc_requests_total{code="OK",method="ChunkDocument",service="toy"}' in body
    assert (
        'ragmesh_grpc_errors_total{code="INVALID_ARGUMENT",method="ChunkDocument",service="toy"}'
    ) in body
    assert 'ragmesh_grpc_latency_seconds_count{method="ChunkDocument",service="toy"}' in body


def test_sigterm_drains_in_flight_calls_then_exits() -> None:
    port = free_port()
    proc = ManagedProcess(
        "toy",
        [sys.executable, "-m", "tests.support.toy_service", str(port)],
        env={"RAGMESH_METRICS_ENABLED": "false", "RAGMESH_SHUTDOWN_GRACE_S": "5"},
    ).start()
    addr = f"127.0.0.1:{port}"
    try:
        proc.wait_until(lambda: health_status(addr) == "SERVING", 60, "SERVING")
        with grpc.insecure_channel(addr) as channel:
            stub = chunking_pb2_grpc.ChunkingServiceStub(channel)
            future = stub.ChunkDocument.future(
                chunking_pb2.ChunkDocumentRequest(text="slow"), timeout=10
            )
            time.sleep(0.5)  # let the slow call reach the handler before the signal
            proc.proc.send_signal(signal.SIGTERM)  # type: ignore[union-attr]
            assert future.result(timeout=10).title  # the in-flight call completed
        assert proc.proc.wait(10) == 0  # type: ignore[union-attr]
    finally:
        proc.stop()


async def test_calls_past_the_concurrency_limit_are_refused_at_once() -> None:
    """RAGMESH_MAX_CONCURRENT_RPCS: a third call while two are running is
    RESOURCE_EXHAUSTED / SERVER_BUSY with a retry delay; health still answers, and
    the slots come back when the calls end."""
    settings = CommonSettings(metrics_enabled=False, max_concurrent_rpcs=2)  # type: ignore[call-arg]
    running = await start_server(ToyService(), 0, settings)
    channel = create_channel(f"127.0.0.1:{running.port}")
    stub = chunking_pb2_grpc.ChunkingServiceStub(channel)
    slow = chunking_pb2.ChunkDocumentRequest(text="slow")  # 2 s each
    try:

        async def call() -> chunking_pb2.ChunkDocumentResponse:
            return await stub.ChunkDocument(slow, timeout=10)

        busy = [asyncio.create_task(call()) for _ in range(2)]
        await asyncio.sleep(0.3)
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await stub.ChunkDocument(chunking_pb2.ChunkDocumentRequest(text="x"), timeout=10)
        assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        info = error_info_of(refused.value)
        assert info is not None and info.reason == "SERVER_BUSY"
        assert retry_delay_of(refused.value) == 1.0
        assert not any(t.done() for t in busy)  # refused while they ran, not after
        assert await _health(channel) == SERVING
        await asyncio.gather(*busy)
        await stub.ChunkDocument(chunking_pb2.ChunkDocumentRequest(text="x"), timeout=10)
    finally:
        await channel.close()
        await running.stop()
