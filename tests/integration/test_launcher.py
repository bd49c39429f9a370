"""The local launcher (`make run`) brings the whole stack up, restarts what dies,
and leaves nothing behind when stopped: no process, no bound port."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from devstack.launched import (
    REPO,
    SERVICES,
    STARTUP_WAIT_S,
    LaunchedStack,
    group_alive,
    pid_alive,
)
from devstack.procs import free_port, health_status, port_open
from devstack.tether import below

pytestmark = [pytest.mark.slow, pytest.mark.llm]


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LaunchedStack]:
    launched = LaunchedStack(tmp_path_factory.mktemp("launcher"), demo=False).start()
    try:
        launched.wait_for_line(r"^ragmesh is up\.$", timeout=STARTUP_WAIT_S)
        yield launched
    finally:
        launched.stop()
        launched.kill_leftovers()


def test_every_service_is_serving_and_the_client_config_is_written(stack: LaunchedStack) -> None:
    for service in SERVICES:
        assert health_status(f"127.0.0.1:{stack.ports[service]}") == "SERVING", service
    config = stack.client_config()
    assert config["gateway_addr"] == f"127.0.0.1:{stack.ports['gateway']}"
    key = str(config["api_key"])
    assert key.startswith("rm-dev-")
    # The banner shows the key and the next commands; the key survives restarts.
    log = stack.log()
    assert f"development API key        {key}" in log
    assert 'ragmesh ask "' in log
    assert (stack.data_dir / "dev-api-key").read_text().strip() == key
    assert oct(stack.config.stat().st_mode & 0o777) == "0o600"
    # Redis runs with AOF under the data folder.
    assert (stack.data_dir / "redis" / "appendonlydir").is_dir()
    # Every process's lines carry its name.
    for name in ("redis", "llm", *SERVICES, "web", "worker"):
        assert f"\n{name:<10} | " in log, name
    assert set(stack.processes()) == {"redis", "llm", *SERVICES, "web", "worker"}
    # The web service (HTTP) is recorded beside the gRPC services, and ready.
    web = f"127.0.0.1:{stack.ports['web']}"
    assert config["services"]["web"] == web  # type: ignore[index]
    with urllib.request.urlopen(f"http://{web}/readyz", timeout=5) as resp:
        assert json.loads(resp.read())["gateway"] == "SERVING"


def test_the_cli_finds_the_stack_without_flags(stack: LaunchedStack) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "ragmesh.cli", "status", "--json"],
        cwd=REPO,
        env=stack.cli_env(),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert '"healthy": true' in done.stdout


def test_a_killed_service_is_restarted(stack: LaunchedStack) -> None:
    before = stack.processes()["chunking"]
    os.killpg(before, signal.SIGKILL)
    stack.wait_for_line(r"chunking exited with code -9; restarting in \d+s", timeout=30)
    stack.wait_for_line(r"chunking is up again", timeout=180)
    after = stack.processes()["chunking"]
    assert after != before
    assert health_status(f"127.0.0.1:{stack.ports['chunking']}") == "SERVING"


@pytest.fixture(scope="module")
def other(tmp_path_factory: pytest.TempPathFactory, llm_base_url: str) -> Iterator[LaunchedStack]:
    """A second clone's `make run` (other ports and data dir), up."""
    launched = LaunchedStack(
        tmp_path_factory.mktemp("other"),
        demo=False,
        extra_env={"RAGMESH_GENERATION_LLM_BASE_URL": llm_base_url},
    ).start()
    try:
        launched.wait_for_line(r"^ragmesh is up\.$", timeout=STARTUP_WAIT_S)
        yield launched
    finally:
        if launched.proc is not None and launched.proc.poll() is None:
            launched.stop()
        launched.kill_leftovers()


def test_two_stacks_on_one_machine_keep_their_own_state(
    stack: LaunchedStack, other: LaunchedStack
) -> None:
    """A second clone's `make run` starts its own Redis and never sees the first
    one's knowledge bases."""
    assert other.ports["redis"] != stack.ports["redis"]
    assert (other.data_dir / "redis" / "appendonlydir").is_dir()

    def cli(which: LaunchedStack, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "ragmesh.cli", *args],
            cwd=REPO, env=which.cli_env(), capture_output=True, text=True, timeout=120,
            check=False,
        )  # fmt: skip

    made = cli(stack, "kb", "create", "only-in-first")
    assert made.returncode == 0, made.stdout + made.stderr
    listed = cli(other, "kb", "list", "--json")
    assert listed.returncode == 0, listed.stdout + listed.stderr
    assert "only-in-first" not in listed.stdout
    assert "only-in-first" in cli(stack, "kb", "list", "--json").stdout


def test_a_sigkilled_launcher_leaves_no_process_and_no_port(other: LaunchedStack) -> None:
    """SIGKILL gives the launcher no chance to stop anything: its children (each
    under a tether) and everything they started die with it all the same."""
    assert other.proc is not None
    everything = below(other.proc.pid)
    pids = other.processes()
    assert set(pids) == {"redis", *SERVICES, "web", "worker"}
    # The children and what they started (Celery's pool, the chunking service's
    # workers; and each child's tether).
    assert len(everything) > len(pids), everything
    assert all(port_open("127.0.0.1", other.ports[s]) for s in (*SERVICES, "redis"))
    start = time.monotonic()
    os.kill(other.proc.pid, signal.SIGKILL)
    other.proc.wait(10)
    while any(pid_alive(p) for p in everything) or other.open_ports():
        assert time.monotonic() - start < 10, (
            [p for p in everything if pid_alive(p)],
            other.open_ports(),
        )
        time.sleep(0.1)
    assert not [pgid for pgid in pids.values() if group_alive(pgid)]
    for port in (other.ports["gateway"], other.ports["redis"]):
        with socket.socket() as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(("127.0.0.1", port))


def test_stop_leaves_no_process_and_no_port(stack: LaunchedStack) -> None:
    groups = set(stack.processes().values()) | stack.pids_seen
    code = stack.stop()
    assert code == 0, stack.log()[-3000:]
    assert "launcher   | stopped" in stack.log()
    left = [pgid for pgid in groups if group_alive(pgid)]
    assert not left, f"process groups still alive: {left}"
    assert stack.open_ports() == []
    # The ports can be bound again at once.
    for port in (stack.ports["gateway"], stack.ports["redis"]):
        with socket.socket() as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(("127.0.0.1", port))


def test_a_taken_port_is_refused_before_anything_starts(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        launched = LaunchedStack(
            tmp_path,
            demo=False,
            extra_env={
                "RAGMESH_GATEWAY_PORT": str(port),
                "RAGMESH_REDIS_URL": f"redis://127.0.0.1:{free_port()}/0",
            },
        ).start()
        assert launched.proc is not None
        code = launched.proc.wait(60)
    assert code == 1
    log = launched.log()
    assert f"ports already in use: gateway {port}" in log
    assert "redis is up" not in log
