"""The health checks the chart and the compose file run, run here for real.

Kubernetes' gRPC probes are the kubelet's own client of grpc.health.v1 and
cannot run here; what can: the compose file's health-check one-liner against a
real `ragmesh serve` process, and the workers' `celery inspect ping` probe from
the rendered Deployment against a real Celery worker on a real Redis.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from devstack.procs import ManagedProcess, free_port
from tests.helm import test_chart

BIN = Path(sys.executable).parent


def run(argv: list[str], env: dict[str, str] | None = None, timeout: float = 60) -> int:
    return subprocess.run(
        argv, env={**os.environ, **(env or {})}, capture_output=True, timeout=timeout, check=False
    ).returncode


def test_compose_grpc_healthcheck_reports_a_real_service(
    start_ragmesh_service: Callable[..., tuple[ManagedProcess, str]],
) -> None:
    _, addr = start_ragmesh_service("chunking")
    check = test_chart.compose()["services"]["chunking"]["healthcheck"]["test"]
    assert check[:2] == ["CMD", "python"]
    code = check[3].replace("localhost:50052", addr)
    assert code != check[3]
    assert run([sys.executable, "-c", code]) == 0  # SERVING
    nobody = f"127.0.0.1:{free_port()}"
    assert run([sys.executable, "-c", code.replace(addr, nobody)]) != 0


@pytest.mark.timeout(240)
def test_worker_probe_pings_a_real_worker(redis_url: str, log_dir: Path) -> None:
    rendered = test_chart.Rendered(test_chart.CHART, "external-values.yaml")
    worker = test_chart.container(rendered.component("Deployment", "worker"))
    probe = worker["livenessProbe"]["exec"]["command"]
    assert probe[:2] == ["sh", "-c"] and probe == worker["readinessProbe"]["exec"]["command"]
    # the same command with a shorter reply timeout: a missing worker costs the whole wait
    assert "--timeout 15" in probe[2]
    probe = [*probe[:2], probe[2].replace("--timeout 15", "--timeout 3")]
    command = worker["command"]
    # a queue of its own: the session's Redis is shared with other tests' workers
    queue = f"probe-test-{free_port()}"
    env = {
        "RAGMESH_REDIS_URL": redis_url,
        "RAGMESH_WORKER_QUEUE": queue,
        "HOSTNAME": socket.gethostname(),  # the kubelet sets it to the pod name
        "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
    }
    proc = ManagedProcess(
        "celery-probe",
        # the Deployment's command, with one process so that the test stays light
        [
            str(BIN / "celery"),
            *command[1:4],
            "--concurrency=1",
            "--pool=solo",
            f"--queues={queue}",
            *[a for a in command[4:] if not a.startswith(("--concurrency", "--queues"))],
        ],
        env=env,
        log_dir=log_dir,
    ).start()
    try:
        deadline = time.monotonic() + 120
        while run(probe, env) != 0:
            assert proc.alive(), proc.log_tail()
            assert time.monotonic() < deadline, f"worker never answered:\n{proc.log_tail()}"
    finally:
        proc.stop(timeout=30)
    assert run(probe, env) != 0  # no worker: the probe fails
