"""The gateway's transport and authentication defences, on real processes.

Each test starts `ragmesh serve gateway` against a real Redis with no
downstream service (ListKnowledgeBases needs only Redis):

- TLS from certificate files generated here (openssl): the SDK, the asyncio SDK
  and the CLI given the CA file get answers; plaintext clients and clients
  trusting another CA get UNAVAILABLE; health and reflection work over TLS; the
  plaintext health port answers health only; a renewed certificate is served
  without a restart.
- The API key file rewritten while the gateway runs: a new key is accepted, a
  removed key refused, a broken file ignored.
- Failed authentications from one address lock it out (RESOURCE_EXHAUSTED /
  AUTH_RATE_LIMITED with a RetryInfo delay), even with a right key, until the
  window passes.

Mutual TLS (client certificates) is tested on the in-process server bootstrap.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator, Mapping
from pathlib import Path

import grpc
import pytest
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)

from devstack.procs import ManagedProcess, free_port, health_status, service_process
from ragmesh.chunking.v1 import chunking_pb2, chunking_pb2_grpc
from ragmesh.client import (
    AsyncRagmeshClient,
    RagmeshClient,
    ResourceExhaustedError,
    UnauthenticatedError,
    UnavailableError,
)
from ragmesh.gateway.v1 import gateway_pb2, gateway_pb2_grpc
from services.common.config import CommonSettings
from services.common.server import start_server
from services.common.tls import ServerTLS
from tests.support.certs import CertificateAuthority, make_ca
from tests.support.toy_service import ToyService

REPO = Path(__file__).resolve().parents[2]
KEY = "sec-key-00000001"


def start_gateway(
    redis_url: str, env: Mapping[str, str], log_dir: Path, health_addr: str | None = None
) -> tuple[ManagedProcess, str]:
    """A gateway on free ports, with its own key prefix and queue; waits for SERVING
    on `health_addr` (default: the API port, in plaintext)."""
    port = free_port()
    full_env = {
        "RAGMESH_REDIS_URL": redis_url,
        "RAGMESH_REDIS_KEY_PREFIX": f"sec{uuid.uuid4().hex[:8]}",
        "RAGMESH_WORKER_QUEUE": f"ragmesh-sec-{uuid.uuid4().hex[:8]}",
        "RAGMESH_LOG_FORMAT": "text",
        **env,
    }
    proc = service_process(
        "gateway", port, env=full_env, log_dir=log_dir, metrics_port=free_port()
    ).start()
    addr = f"127.0.0.1:{port}"
    check = health_addr or addr
    try:
        proc.wait_until(lambda: health_status(check) == "SERVING", 90, "SERVING health")
    except BaseException:
        proc.stop()
        raise
    return proc, addr


def cli(*args: str, env: Mapping[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ragmesh.cli", *args],
        check=False,
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
        env={**os.environ, "RAGMESH_CONFIG": "/nonexistent/ragmesh.json", **(env or {})},
    )


def tls_credentials(ca: Path) -> grpc.ChannelCredentials:
    return grpc.ssl_channel_credentials(ca.read_bytes())


# ---- TLS ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, CertificateAuthority]:
    base = tmp_path_factory.mktemp("pki")
    return {"good": make_ca(base / "good", "good-ca"), "other": make_ca(base / "other", "other-ca")}


@pytest.fixture(scope="module")
def tls_gateway(
    redis_url: str,
    pki: dict[str, CertificateAuthority],
    log_dir: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[str, Path, int]]:
    """A gateway serving TLS with files in a directory the tests may rewrite."""
    live = tmp_path_factory.mktemp("tls-live")
    leaf = pki["good"].issue("gateway", dest=tmp_path_factory.mktemp("tls-issued"))
    shutil.copy(leaf.cert, live / "tls.crt")
    shutil.copy(leaf.key, live / "tls.key")
    health_port = free_port()
    proc, addr = start_gateway(
        redis_url,
        {
            "RAGMESH_GATEWAY_API_KEYS": f"{KEY}:alpha",
            "RAGMESH_GATEWAY_TLS_CERT_FILE": str(live / "tls.crt"),
            "RAGMESH_GATEWAY_TLS_KEY_FILE": str(live / "tls.key"),
            "RAGMESH_GATEWAY_TLS_RELOAD_INTERVAL_S": "0.2",
            "RAGMESH_GATEWAY_HEALTH_PORT": str(health_port),
        },
        log_dir,
        health_addr=f"127.0.0.1:{health_port}",
    )
    yield addr, live, health_port
    proc.stop()


def test_sdk_with_the_ca_file_talks_tls(
    tls_gateway: tuple[str, Path, int], pki: dict[str, CertificateAuthority]
) -> None:
    addr, _, _ = tls_gateway
    ca = pki["good"].cert
    with RagmeshClient(addr, KEY, ca_file=ca, timeout=10) as rag:
        assert rag.tls
        assert list(rag.iter_knowledge_bases()) == []
    with RagmeshClient(addr, KEY, root_certificates=ca.read_bytes(), timeout=10) as rag:
        assert rag.list_knowledge_bases().knowledge_bases == []

    async def asyncio_client() -> None:
        async with AsyncRagmeshClient(addr, KEY, ca_file=str(ca), timeout=10) as rag:
            assert (await rag.list_knowledge_bases()).knowledge_bases == []

    asyncio.run(asyncio_client())


def test_plaintext_clients_and_other_cas_are_refused(
    tls_gateway: tuple[str, Path, int], pki: dict[str, CertificateAuthority]
) -> None:
    addr, _, _ = tls_gateway
    for client in (
        RagmeshClient(addr, KEY, tls=False, timeout=5),
        RagmeshClient(addr, KEY, ca_file=pki["other"].cert, timeout=5),
        RagmeshClient(addr, KEY, tls=True, timeout=5),  # system roots do not know it either
    ):
        with client as rag, pytest.raises(UnavailableError) as exc:
            rag.list_knowledge_bases()
        assert exc.value.code == grpc.StatusCode.UNAVAILABLE
    assert health_status(addr, timeout=3) == "UNREACHABLE"  # plaintext health on the TLS port


def test_health_and_reflection_over_tls(
    tls_gateway: tuple[str, Path, int], pki: dict[str, CertificateAuthority]
) -> None:
    addr, _, health_port = tls_gateway
    creds = tls_credentials(pki["good"].cert)
    assert health_status(addr, credentials=creds, timeout=5) == "SERVING"
    with grpc.secure_channel(addr, creds) as channel:
        services = set(ProtoReflectionDescriptorDatabase(channel).get_services())
    assert {"ragmesh.gateway.v1.RagService", "grpc.health.v1.Health"} <= services
    # the plaintext health port answers health and nothing else
    health_addr = f"127.0.0.1:{health_port}"
    assert health_status(health_addr) == "SERVING"
    assert health_status(health_addr, "ragmesh.gateway.v1.RagService") == "SERVING"
    with grpc.insecure_channel(health_addr) as channel:
        stub = gateway_pb2_grpc.RagServiceStub(channel)
        with pytest.raises(grpc.RpcError) as err:
            stub.ListKnowledgeBases(
                gateway_pb2.ListKnowledgeBasesRequest(),
                metadata=[("authorization", f"Bearer {KEY}")],
                timeout=5,
            )
        assert err.value.code() == grpc.StatusCode.UNIMPLEMENTED


def test_cli_takes_a_ca_file(
    tls_gateway: tuple[str, Path, int], pki: dict[str, CertificateAuthority]
) -> None:
    addr, _, _ = tls_gateway
    ca = str(pki["good"].cert)
    ok = cli("kb", "list", "--addr", addr, "--api-key", KEY, "--ca-file", ca, "--json")
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout) == []
    by_env = cli("kb", "list", "--addr", addr, "--api-key", KEY, env={"RAGMESH_TLS_CA_FILE": ca})
    assert by_env.returncode == 0, by_env.stderr
    plain = cli("kb", "list", "--addr", addr, "--api-key", KEY)
    assert plain.returncode == 6 and "--ca-file" in plain.stderr  # exit 6: unreachable
    refused = cli("kb", "list", "--addr", addr, "--api-key", KEY, "--ca-file", ca, "--no-tls")
    assert refused.returncode == 6
    missing = cli("kb", "list", "--addr", addr, "--api-key", KEY, "--ca-file", "/nonexistent.pem")
    assert missing.returncode == 2 and "UNREADABLE_CA_FILE" in missing.stderr
    status = cli("status", "--addr", addr, "--api-key", KEY, "--ca-file", ca, "--json")
    report = json.loads(status.stdout)
    gateway = next(r for r in report["services"] if r["service"] == "gateway")
    assert gateway["status"] == "SERVING" and report["api_key"] == "accepted"


def test_a_renewed_certificate_is_served_without_a_restart(
    tls_gateway: tuple[str, Path, int],
    pki: dict[str, CertificateAuthority],
    tmp_path: Path,
) -> None:
    addr, live, _ = tls_gateway
    renewed = pki["other"].issue("gateway-renewed", dest=tmp_path)
    for src, name in ((renewed.key, "tls.key"), (renewed.cert, "tls.crt")):
        shutil.copy(src, live / f"{name}.new")
        (live / f"{name}.new").replace(live / name)
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            status = health_status(addr, credentials=tls_credentials(pki["other"].cert))
            if status == "SERVING":
                break
            time.sleep(0.2)
        assert status == "SERVING"  # new connections get the renewed certificate
        old_ca = pki["good"].cert
        with (
            RagmeshClient(addr, KEY, ca_file=old_ca, timeout=5) as rag,
            pytest.raises(UnavailableError),
        ):
            rag.list_knowledge_bases()
    finally:  # leave the fixture as it was for any later test
        original = pki["good"].issue("gateway-again", dest=tmp_path)
        for src, name in ((original.key, "tls.key"), (original.cert, "tls.crt")):
            shutil.copy(src, live / f"{name}.new")
            (live / f"{name}.new").replace(live / name)


def test_a_gateway_with_unusable_tls_files_does_not_start(
    pki: dict[str, CertificateAuthority], tmp_path: Path, log_dir: Path
) -> None:
    one = pki["good"].issue("one", dest=tmp_path)
    two = pki["good"].issue("two", dest=tmp_path)
    proc = service_process(
        "gateway",
        free_port(),
        env={
            "RAGMESH_GATEWAY_API_KEYS": f"{KEY}:alpha",
            "RAGMESH_GATEWAY_TLS_CERT_FILE": str(one.cert),
            "RAGMESH_GATEWAY_TLS_KEY_FILE": str(two.key),  # not this certificate's key
        },
        log_dir=log_dir,
        metrics_port=free_port(),
    ).start()
    try:
        assert proc.proc is not None
        assert proc.proc.wait(60) != 0
        assert "BAD_TLS_CONFIG" in proc.log_tail(80)
    finally:
        proc.stop()


async def test_mutual_tls_requires_a_client_certificate(
    pki: dict[str, CertificateAuthority], tmp_path: Path
) -> None:
    server_leaf = pki["good"].issue("toy", dest=tmp_path)
    client_leaf = pki["good"].issue("client", client=True, dest=tmp_path)
    stranger = pki["other"].issue("stranger", client=True, dest=tmp_path)
    tls = ServerTLS(str(server_leaf.cert), str(server_leaf.key), str(pki["good"].cert))
    settings = CommonSettings(readiness_interval_s=0.05, metrics_enabled=False)
    running = await start_server(ToyService(), 0, settings, tls=tls)
    addr = f"127.0.0.1:{running.port}"
    ca = pki["good"].cert.read_bytes()

    async def chunk(creds: grpc.ChannelCredentials) -> grpc.StatusCode:
        async with grpc.aio.secure_channel(addr, creds) as channel:
            stub = chunking_pb2_grpc.ChunkingServiceStub(channel)
            try:
                await stub.ChunkDocument(chunking_pb2.ChunkDocumentRequest(text="hi"), timeout=5)
            except grpc.aio.AioRpcError as err:
                return err.code()
            return grpc.StatusCode.OK

    try:
        with_cert = grpc.ssl_channel_credentials(
            ca, client_leaf.key.read_bytes(), client_leaf.cert.read_bytes()
        )
        assert await chunk(with_cert) == grpc.StatusCode.OK
        assert await chunk(grpc.ssl_channel_credentials(ca)) == grpc.StatusCode.UNAVAILABLE
        foreign = grpc.ssl_channel_credentials(
            ca, stranger.key.read_bytes(), stranger.cert.read_bytes()
        )
        assert await chunk(foreign) == grpc.StatusCode.UNAVAILABLE
    finally:
        await running.stop()


# ---- API keys reloaded, failed authentications limited --------------------------------------


@pytest.fixture
def keyed_gateway(
    redis_url: str, log_dir: Path, tmp_path: Path
) -> Iterator[tuple[str, Path, ManagedProcess]]:
    keys = tmp_path / "keys"
    keys.write_text("reload-key-0001:alpha\n")
    proc, addr = start_gateway(
        redis_url,
        {
            "RAGMESH_GATEWAY_API_KEYS_FILE": str(keys),
            "RAGMESH_GATEWAY_API_KEYS_RELOAD_INTERVAL_S": "0.2",
            "RAGMESH_GATEWAY_AUTH_FAILURE_LIMIT": "3",
            "RAGMESH_GATEWAY_AUTH_FAILURE_WINDOW_S": "4",
        },
        log_dir,
    )
    yield addr, keys, proc
    proc.stop()


def rewrite(path: Path, text: str) -> None:
    """As a mounted Secret is updated: a new file renamed over the old one."""
    tmp = path.with_name(path.name + ".new")
    tmp.write_text(text)
    tmp.replace(path)


def test_keys_reload_and_failures_lock_the_source_out(
    keyed_gateway: tuple[str, Path, ManagedProcess],
) -> None:
    addr, keys, proc = keyed_gateway

    def kbs(key: str) -> list[str]:
        with RagmeshClient(addr, key, timeout=10) as rag:
            return [kb.knowledge_base_id for kb in rag.list_knowledge_bases().knowledge_bases]

    assert kbs("reload-key-0001") == []
    rewrite(keys, "# rotated\nreload-key-0002:alpha\n")
    time.sleep(0.5)  # > the reload interval: the next call looks at the file
    assert kbs("reload-key-0002") == []  # the new key, without a restart
    with pytest.raises(UnauthenticatedError) as exc:
        kbs("reload-key-0001")  # removed: refused (failure 1)
    assert exc.value.reason == "INVALID_API_KEY"

    rewrite(keys, "this line has no tenant\n")
    time.sleep(0.5)
    assert kbs("reload-key-0002") == []  # a broken file keeps the previous keys
    proc.wait_until(
        lambda: "API key file not reloaded" in proc.log_tail(200), 10, "the reload error logged"
    )

    for guess in ("guess-key-0001", "guess-key-0002"):  # failures 2 and 3
        with pytest.raises(UnauthenticatedError):
            kbs(guess)
    started = time.monotonic()
    with pytest.raises(ResourceExhaustedError) as locked:
        kbs("reload-key-0002")  # locked out, even with the right key
    err = locked.value
    assert err.reason == "AUTH_RATE_LIMITED"
    assert err.retry_after_s is not None and 0 < err.retry_after_s <= 4
    assert time.monotonic() - started < 2  # the SDK did not sit out the lockout itself
    assert health_status(addr) == "SERVING"  # health is never limited
    time.sleep(err.retry_after_s + 0.2)
    assert kbs("reload-key-0002") == []  # the window passed
