"""Calls, not connections, are balanced over replicas: real gRPC servers on the
project's bootstrap, bound to one port on two loopback addresses (127.0.0.1 and
127.0.0.2, as two pods of a headless Service have one port on two IPs), behind
one DNS name served by a real (tiny) DNS server, reached through the channels
the gateway and the worker use (services.common.channels)."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterator

import grpc
import pytest

from devstack.procs import free_port
from ragmesh.chunking.v1 import chunking_pb2, chunking_pb2_grpc
from services.common.channels import create_channel, create_sync_channel
from services.common.config import CommonSettings
from services.common.server import RunningServer, start_server
from tests.support.tiny_dns import TinyDns

NAME = "ragmesh-chunking-headless.rag.svc.cluster.local"
CHUNKING = "ragmesh.chunking.v1.ChunkingService"


class Replica:
    """A chunking service that answers with the address it is bound to."""

    name = "replica"
    service_names = (CHUNKING,)

    def __init__(self, address: str) -> None:
        self.address = address

    def register(self, server: grpc.aio.Server) -> None:
        address = self.address

        class Servicer(chunking_pb2_grpc.ChunkingServiceServicer):
            async def ChunkDocument(
                self, request: chunking_pb2.ChunkDocumentRequest, context: grpc.aio.ServicerContext
            ) -> chunking_pb2.ChunkDocumentResponse:
                return chunking_pb2.ChunkDocumentResponse(title=address)

        chunking_pb2_grpc.add_ChunkingServiceServicer_to_server(Servicer(), server)

    async def start(self) -> None:
        pass

    async def ready(self) -> bool:
        return True

    async def close(self) -> None:
        pass


async def start_replica(address: str, port: int, max_age_s: float = 0.0) -> RunningServer:
    settings = CommonSettings(  # type: ignore[call-arg]
        bind_host=address, metrics_enabled=False, grpc_max_connection_age_s=max_age_s
    )
    return await start_server(Replica(address), port, settings)  # type: ignore[arg-type]


@pytest.fixture
async def replicas() -> AsyncIterator[int]:
    """Two replicas on one port, at 127.0.0.1 and 127.0.0.2."""
    port = free_port()
    running = [await start_replica(ip, port) for ip in ("127.0.0.1", "127.0.0.2")]
    yield port
    for server in running:
        await server.stop()


@pytest.fixture
def dns() -> Iterator[TinyDns]:
    with TinyDns({NAME: ["127.0.0.1", "127.0.0.2"]}) as server:
        yield server


async def who(channel: grpc.aio.Channel, calls: int) -> Counter[str]:
    stub = chunking_pb2_grpc.ChunkingServiceStub(channel)
    seen: Counter[str] = Counter()
    for _ in range(calls):
        resp = await stub.ChunkDocument(
            chunking_pb2.ChunkDocumentRequest(text="x"), timeout=10, wait_for_ready=True
        )
        seen[resp.title] += 1
    return seen


async def test_round_robin_sends_calls_to_every_address_of_a_dns_name(
    replicas: int, dns: TinyDns
) -> None:
    target = f"dns://127.0.0.1:{dns.port}/{NAME}:{replicas}"
    channel = create_channel(target, service=CHUNKING, idempotent_methods=["ChunkDocument"])
    try:
        await who(channel, 4)  # both connections up
        seen = await who(channel, 40)
    finally:
        await channel.close()
    assert (NAME, 1) in dns.queries  # resolved through the DNS server
    assert seen == Counter({"127.0.0.1": 20, "127.0.0.2": 20}), seen


async def test_pick_first_keeps_every_call_on_one_replica(replicas: int, dns: TinyDns) -> None:
    """The contrast: what gRPC's default policy does with the same name."""
    settings = CommonSettings(grpc_lb_policy="pick_first")  # type: ignore[call-arg]
    channel = create_channel(f"dns://127.0.0.1:{dns.port}/{NAME}:{replicas}", settings=settings)
    try:
        seen = await who(channel, 20)
    finally:
        await channel.close()
    assert len(seen) == 1 and sum(seen.values()) == 20, seen


async def test_the_workers_blocking_channel_balances_too(replicas: int) -> None:
    """The Celery worker's channel, to a static list of addresses (`ipv4:` target)."""
    target = f"ipv4:127.0.0.1:{replicas},127.0.0.2:{replicas}"

    def calls() -> Counter[str]:
        channel = create_sync_channel(target, service=CHUNKING)
        stub = chunking_pb2_grpc.ChunkingServiceStub(channel)
        seen: Counter[str] = Counter()
        try:
            grpc.channel_ready_future(channel).result(timeout=10)
            for _ in range(30):
                req = chunking_pb2.ChunkDocumentRequest(text="x")
                seen[stub.ChunkDocument(req, timeout=10, wait_for_ready=True).title] += 1
        finally:
            channel.close()
        return seen

    seen = await asyncio.to_thread(calls)
    assert set(seen) == {"127.0.0.1", "127.0.0.2"} and min(seen.values()) >= 10, seen


async def test_a_replica_added_later_gets_calls_once_connections_age(dns: TinyDns) -> None:
    """Scale-out: the name gains an address; servers end connections after
    RAGMESH_GRPC_MAX_CONNECTION_AGE_S, the channel resolves again and the new
    replica gets its share."""
    port = free_port()
    first = await start_replica("127.0.0.1", port, max_age_s=1.0)
    dns.set(NAME, ["127.0.0.1"])
    settings = CommonSettings(grpc_dns_min_resolution_interval_s=0.5)  # type: ignore[call-arg]
    channel = create_channel(f"dns://127.0.0.1:{dns.port}/{NAME}:{port}", settings=settings)
    second = None
    try:
        assert set(await who(channel, 10)) == {"127.0.0.1"}
        second = await start_replica("127.0.0.2", port, max_age_s=1.0)
        dns.set(NAME, ["127.0.0.1", "127.0.0.2"])
        deadline = time.monotonic() + 20
        seen: Counter[str] = Counter()
        while seen["127.0.0.2"] == 0:
            assert time.monotonic() < deadline, seen
            seen += await who(channel, 5)
            await asyncio.sleep(0.2)
        later = await who(channel, 20)
        assert min(later["127.0.0.1"], later["127.0.0.2"]) >= 5, later
    finally:
        await channel.close()
        for server in (first, second):
            if server is not None:
                await server.stop()
