"""Fixtures shared by every test: real servers on free loopback ports.

Each starter is session-scoped: Redis, the llama.cpp server and the Milvus
server start once per run and stop at the end; services start per module.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

import pytest

from devstack.deps import start_llm, start_milvus_server, start_redis
from devstack.procs import ManagedProcess, start_service

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("RAGMESH_SHARED_DATA", REPO.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """../shared/data; tests that need it skip where it is absent (a user's clone)."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"evaluation data not found at {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture(scope="session")
def log_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("logs")


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory, log_dir: Path) -> Iterator[str]:
    """A private redis-server with AOF, on a free port."""
    proc, url = start_redis(tmp_path_factory.mktemp("redis"), log_dir=log_dir)
    yield url
    proc.stop()


@pytest.fixture(scope="session")
def llm_base_url(log_dir: Path) -> Iterator[str]:
    """llama.cpp's OpenAI-compatible server with SmolLM2-135M-Instruct."""
    proc, base = start_llm(log_dir=log_dir)
    yield base
    proc.stop()


@pytest.fixture(scope="session")
def milvus_server_uri(tmp_path_factory: pytest.TempPathFactory, log_dir: Path) -> Iterator[str]:
    """The Milvus 2.3 standalone server of the `milvus` package (~30-45 s to start)."""
    proc, uri = start_milvus_server(tmp_path_factory.mktemp("milvus"), log_dir=log_dir)
    yield uri
    proc.stop(timeout=30)


ServiceStarter = Callable[..., tuple[ManagedProcess, str]]


@pytest.fixture(scope="module")
def start_ragmesh_service(log_dir: Path) -> Iterator[ServiceStarter]:
    """Start `ragmesh serve <name>` processes; all stopped when the module ends."""
    started: list[ManagedProcess] = []

    def _start(
        name: str, env: Mapping[str, str] | None = None, timeout: float = 180.0
    ) -> tuple[ManagedProcess, str]:
        proc, addr = start_service(name, env=env, log_dir=log_dir, timeout=timeout)
        started.append(proc)
        return proc, addr

    yield _start
    for proc in reversed(started):
        proc.stop()
