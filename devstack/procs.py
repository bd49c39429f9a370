"""Start, watch and stop ragmesh processes: used by the local launcher, the
integration tests and the benchmarks alike."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from ragmesh.rpc import health_status

__all__ = [
    "ManagedProcess",
    "free_port",
    "health_status",
    "port_open",
    "service_process",
    "start_service",
    "worker_argv",
    "worker_process",
]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def port_open(host: str, port: int, timeout: float = 0.2) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


class ManagedProcess:
    """A child process with its output in a log file, stopped gracefully."""

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        log_dir: Path | None = None,
        cwd: Path | None = None,
        stop_signal: int = signal.SIGTERM,
    ) -> None:
        self.name = name
        self.argv = list(argv)
        self.env = {**os.environ, **(env or {})}
        self.cwd = cwd
        self.stop_signal = stop_signal
        self.log_path = (log_dir or Path("/tmp")) / f"ragmesh-{name}-{os.getpid()}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> ManagedProcess:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "ab")  # noqa: SIM115 - owned by the child
        self.proc = subprocess.Popen(
            self.argv,
            env=self.env,
            cwd=self.cwd,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self, timeout: float = 15.0) -> int | None:
        """Signal the process group, wait, then SIGKILL what is left."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, self.stop_signal)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGTERM)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    self.proc.wait(5)
        # Children that outlived the leader (e.g. milvus-server's `milvus run`).
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(5)
        return self.proc.returncode

    def kill(self) -> None:
        """SIGKILL the whole process group (fault injection)."""
        if self.proc is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def wait_until(self, check: object, timeout: float, what: str) -> None:
        """Waits for `check()`; a process that never gets there is stopped (with
        its children) before the error is raised, so that no caller leaks it."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.alive():
                raise RuntimeError(
                    f"{self.name} exited with {self.proc.returncode if self.proc else '?'} "
                    f"before {what}:\n{self.log_tail()}"
                )
            if check():  # type: ignore[operator]
                return
            time.sleep(0.1)
        tail = self.log_tail()
        self.stop()
        raise TimeoutError(f"{self.name}: no {what} after {timeout:.0f}s:\n{tail}")


def service_process(
    service: str,
    port: int,
    *,
    env: Mapping[str, str] | None = None,
    log_dir: Path | None = None,
    metrics_port: int | None = None,
) -> ManagedProcess:
    """`ragmesh serve <service>` as a child process (not started)."""
    argv = [sys.executable, "-m", "ragmesh.cli", "serve", service, "--port", str(port)]
    if metrics_port is not None:
        argv += ["--metrics-port", str(metrics_port)]
    return ManagedProcess(service, argv, env=env, log_dir=log_dir)


def worker_argv(node: str, concurrency: int = 1) -> list[str]:
    """`celery worker` for the ingestion app, prefork, `-n node` (unique per worker)."""
    return [
        sys.executable,
        "-m",
        "celery",
        "-A",
        "services.worker.app",
        "worker",
        "--concurrency",
        str(concurrency),
        "--pool",
        "prefork",
        "--loglevel",
        "INFO",
        "-n",
        node,
    ]


def worker_process(
    name: str,
    node: str,
    *,
    env: Mapping[str, str] | None = None,
    log_dir: Path | None = None,
    concurrency: int = 1,
) -> ManagedProcess:
    """A Celery ingestion worker as a child process (not started)."""
    return ManagedProcess(name, worker_argv(node, concurrency), env=env, log_dir=log_dir)


def start_service(
    service: str,
    *,
    port: int | None = None,
    env: Mapping[str, str] | None = None,
    log_dir: Path | None = None,
    timeout: float = 120.0,
) -> tuple[ManagedProcess, str]:
    """Start a service on a free port and wait until its health says SERVING."""
    port = port or free_port()
    addr = f"127.0.0.1:{port}"
    proc = service_process(service, port, env=env, log_dir=log_dir, metrics_port=free_port())
    proc.start()
    try:
        proc.wait_until(lambda: health_status(addr) == "SERVING", timeout, "SERVING health")
    except BaseException:
        proc.stop()
        raise
    return proc, addr
