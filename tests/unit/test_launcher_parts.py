"""Parts of the local launcher that need no stack: supervision of real child
processes (restart with backoff, prefixed logs, group stop), settings, keys."""

from __future__ import annotations

import io
import os
import sys
import time
from pathlib import Path

import pytest

from devstack.launcher import stack as stack_module
from devstack.launcher.settings import LauncherSettings
from devstack.launcher.stack import (
    LaunchError,
    Stack,
    dev_api_key,
    ensure_redis_server,
    redis_answers,
)
from devstack.launcher.supervisor import ProcessSpec, Supervised
from devstack.procs import free_port


def _wait(cond: object, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():  # type: ignore[operator]
            return
        time.sleep(0.05)
    raise AssertionError("condition not met")


def test_a_dying_process_is_restarted_with_growing_backoff(tmp_path: Path) -> None:
    out = io.StringIO()
    spec = ProcessSpec(
        "flaky", [sys.executable, "-c", "print('hello from flaky'); raise SystemExit(3)"]
    )
    proc = Supervised(spec, 0, tmp_path, backoff_max_s=30, out=out)
    proc.start()
    _wait(lambda: not proc.alive())
    now = time.monotonic()
    proc.check(now)
    assert proc.restart_at == pytest.approx(now + 1)
    proc.check(now + 0.5)  # not yet
    assert proc.restarts == 0
    proc.check(now + 1.01)
    assert proc.restarts == 1
    _wait(lambda: not proc.alive())
    later = time.monotonic()
    proc.check(later)
    assert proc.restart_at == pytest.approx(later + 2)  # the second failure in a row waits longer
    proc.stop()
    text = out.getvalue()
    assert "flaky      | hello from flaky" in text
    assert "launcher   | flaky exited with code 3; restarting in 1s" in text
    assert "launcher   | restarting flaky (restart #1)" in text
    assert "flaky exited with code 3; restarting in 2s" in text
    # The child's output is also kept in its log file.
    assert "hello from flaky" in (tmp_path / "flaky.log").read_text()


def test_ready_line_and_group_stop(tmp_path: Path) -> None:
    # A child that starts a grandchild: stopping must take both.
    script = (
        "import subprocess, sys, time\n"
        "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(300)'])\n"
        "print('grandchild', child.pid, flush=True)\n"
        "print('service ready.', flush=True)\n"
        "time.sleep(300)\n"
    )
    out = io.StringIO()
    proc = Supervised(
        ProcessSpec(
            "svc", [sys.executable, "-c", script], ready_line=r"ready\.$", stop_timeout_s=5
        ),
        1,
        tmp_path,
        out=out,
    )
    proc.start()
    _wait(proc.healthy)
    grandchild = int(
        next(line for line in out.getvalue().splitlines() if "grandchild" in line).split()[-1]
    )
    assert proc.stop() is not None
    assert not proc.alive()
    _wait(lambda: not _alive(grandchild))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    return stat.exists() and stat.read_text().split(")")[-1].split()[0] != "Z"


def test_quiet_lines_go_to_the_log_file_only(tmp_path: Path) -> None:
    # The lines as llama-cpp-python's server (uvicorn) writes them.
    script = (
        "print('INFO:     127.0.0.1:47642 - \"GET /v1/models HTTP/1.1\" 200 OK')\n"
        "print('INFO:     127.0.0.1:47650 - \"POST /v1/chat/completions HTTP/1.1\" 200 OK')\n"
        "print('INFO:     127.0.0.1:47642 - \"GET /v1/models HTTP/1.1\" 503 Service Unavailable')\n"
    )
    out = io.StringIO()
    proc = Supervised(
        ProcessSpec(
            "llm",
            [sys.executable, "-c", script],
            quiet_line=stack_module.LLM_PROBE_LINE,
        ),
        2,
        tmp_path,
        out=out,
    )
    proc.start()
    _wait(lambda: not proc.alive() and "503" in out.getvalue())
    proc.stop()
    shown = out.getvalue()
    assert "POST /v1/chat/completions" in shown
    assert "503 Service Unavailable" in shown  # a failing probe still shows
    assert '/v1/models HTTP/1.1" 200' not in shown
    assert '/v1/models HTTP/1.1" 200' in (tmp_path / "llm.log").read_text()


def test_dev_api_key_is_generated_once_and_kept(tmp_path: Path) -> None:
    settings = LauncherSettings(data_dir=tmp_path)  # type: ignore[call-arg]
    first = dev_api_key(settings)
    assert first.startswith("rm-dev-") and len(first) > 20
    assert dev_api_key(settings) == first
    assert oct((tmp_path / "dev-api-key").stat().st_mode & 0o777) == "0o600"
    chosen = LauncherSettings(data_dir=tmp_path, dev_api_key="my-own-key-123")  # type: ignore[call-arg]
    assert dev_api_key(chosen) == "my-own-key-123"


def test_settings_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RAGMESH_GATEWAY_PORT", "6001")
    monkeypatch.setenv("RAGMESH_MILVUS", "server")
    monkeypatch.setenv("RAGMESH_METRICS_PORT_BASE", "7000")
    settings = LauncherSettings()  # type: ignore[call-arg]
    assert settings.port_of("gateway") == 6001
    assert settings.port_of("chunking") == 50052
    assert settings.milvus == "server"
    assert settings.metrics_port_of("gateway") == 7001
    assert settings.metrics_port_of("generation") == 7005
    monkeypatch.setenv("RAGMESH_MILVUS", "cloud")
    with pytest.raises(ValueError, match="lite"):
        LauncherSettings()  # type: ignore[call-arg]


def test_service_env_keeps_configured_keys(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RAGMESH_GATEWAY_API_KEYS", "team-key-000:team")
    stack = Stack(
        LauncherSettings(data_dir=tmp_path, dev_api_key="dev-key-0001"),  # type: ignore[call-arg]
        out=io.StringIO(),
    )
    env = stack.service_env()
    assert env["RAGMESH_GATEWAY_API_KEYS"] == "team-key-000:team,dev-key-0001:dev"
    assert env["RAGMESH_GATEWAY_ADDR"] == "127.0.0.1:50051"
    assert env["RAGMESH_RETRIEVAL_ADDR"] == "127.0.0.1:50054"
    assert stack.client_config()["api_key"] == "dev-key-0001"


def test_redis_answers_is_false_without_redis() -> None:
    assert redis_answers(f"redis://127.0.0.1:{free_port()}/0") is False


def test_missing_redis_server_without_root_says_what_to_do(monkeypatch: pytest.MonkeyPatch) -> None:
    # Whether redis-server is installed and who we are cannot be changed for real in a test.
    monkeypatch.setattr(stack_module.shutil, "which", lambda _name: None)
    monkeypatch.setattr(stack_module.os, "geteuid", lambda: 1000)
    with pytest.raises(LaunchError, match=r"apt-get install redis-server.*RAGMESH_REDIS_URL"):
        ensure_redis_server(io.StringIO())


def test_a_remote_redis_that_does_not_answer_is_an_error(tmp_path: Path) -> None:
    stack = Stack(
        LauncherSettings(
            data_dir=tmp_path,  # type: ignore[call-arg]
            redis_url="redis://redis.invalid:6379/0",
        ),
        out=io.StringIO(),
    )
    with pytest.raises(LaunchError, match=r"no Redis answers at redis://redis\.invalid"):
        stack._redis_spec()


def test_the_stack_never_uses_a_redis_it_did_not_start(tmp_path: Path, redis_url: str) -> None:
    """Another Redis (here the test session's) on the stack's port is refused; the
    stack's own Redis (same data dir), still running, is used again."""
    port = int(redis_url.rsplit(":", 1)[1].split("/", maxsplit=1)[0])
    stack = Stack(
        LauncherSettings(data_dir=tmp_path, redis_port=port),  # type: ignore[call-arg]
        out=io.StringIO(),
    )
    with pytest.raises(LaunchError, match=r"taken by something other than this stack's Redis"):
        stack._redis_spec()
    own = Stack(
        LauncherSettings(data_dir=tmp_path, redis_port=free_port()),  # type: ignore[call-arg]
        out=io.StringIO(),
    )
    spec = own._redis_spec()
    assert spec is not None and str(tmp_path / "redis") in " ".join(spec.argv)
