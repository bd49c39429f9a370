"""`python -m devstack.launcher` (what `make run` runs) as a test fixture: the whole
stack on free ports, with its data and client config in a temporary folder."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

from devstack.procs import free_port, port_open

REPO = Path(__file__).resolve().parents[1]
SERVICES = ("gateway", "chunking", "embedding", "retrieval", "generation")
#: how long a test waits for "ragmesh is up." (the launcher gives up at 420 s)
STARTUP_WAIT_S = 480


class LaunchedStack:
    def __init__(self, base: Path, *, demo: bool, extra_env: dict[str, str] | None = None) -> None:
        self.base = base
        self.data_dir = base / "data"
        self.config = base / "client-config.json"
        self.output = base / "launcher.log"
        self.ports = {name: free_port() for name in (*SERVICES, "redis", "llm", "web")}
        self.env = {
            **os.environ,
            "RAGMESH_DATA_DIR": str(self.data_dir),
            "RAGMESH_CONFIG": str(self.config),
            # Its own Redis, started by the launcher (as `make run` does by default).
            "RAGMESH_REDIS_PORT": str(self.ports["redis"]),
            "RAGMESH_LLM_PORT": str(self.ports["llm"]),
            "RAGMESH_WEB_PORT": str(self.ports["web"]),
            "RAGMESH_METRICS_PORT_BASE": str(free_port()),
            "RAGMESH_DEMO": "true" if demo else "false",
            # Below the tests' waits (STARTUP_WAIT_S), themselves below pytest's timeout
            # (600 s): a stack that does not come up fails with the launcher's own
            # "not healthy after ...: <service>" line and the log, not a bare timeout.
            "RAGMESH_HEALTH_TIMEOUT_S": "420",
            **{f"RAGMESH_{s.upper()}_PORT": str(self.ports[s]) for s in SERVICES},
        }
        # Settings a developer's shell may carry must not leak into the stack under test.
        for name in (
            "RAGMESH_REDIS_URL",
            "RAGMESH_BLOB_DIR",
            "RAGMESH_RETRIEVAL_MILVUS_URI",
            "RAGMESH_GENERATION_LLM_BASE_URL",
            "RAGMESH_GATEWAY_ADDR",
            "RAGMESH_API_KEY",
            "RAGMESH_GATEWAY_API_KEYS",
            "RAGMESH_MILVUS",
        ):
            self.env.pop(name, None)
        self.env.update(extra_env or {})
        self.proc: subprocess.Popen[bytes] | None = None
        self.pids_seen: set[int] = set()

    def start(self) -> LaunchedStack:
        self.base.mkdir(parents=True, exist_ok=True)
        with open(self.output, "wb") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "devstack.launcher"],
                cwd=REPO,
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        return self

    def log(self) -> str:
        return self.output.read_text(errors="replace")

    def wait_for_line(self, pattern: str, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        regex = re.compile(pattern, re.MULTILINE)
        while time.monotonic() < deadline:
            text = self.log()
            match = regex.search(text)
            if match:
                return match.group(0)
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise AssertionError(
                    f"launcher exited with {self.proc.returncode} before /{pattern}/:\n"
                    + text[-6000:]
                )
            time.sleep(0.5)
        raise AssertionError(f"no /{pattern}/ after {timeout:.0f}s:\n" + self.log()[-6000:])

    def processes(self) -> dict[str, int]:
        state = json.loads((self.data_dir / "run" / "processes.json").read_text())
        pids = {k: int(v) for k, v in state["processes"].items()}
        self.pids_seen.update(pids.values())
        return pids

    def client_config(self) -> dict[str, object]:
        return dict(json.loads(self.config.read_text()))

    def cli_env(self) -> dict[str, str]:
        """The environment of a user's shell: only the config file tells where the stack is."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("RAGMESH_")}
        env["RAGMESH_CONFIG"] = str(self.config)
        env["COLUMNS"] = "200"
        return env

    def stop(self, timeout: float = 120) -> int:
        """SIGTERM the launcher (as Ctrl-C would) and wait for it."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
                raise
        return int(self.proc.returncode)

    def kill_leftovers(self) -> list[int]:
        """Safety net for a failed test: SIGKILL any child process group still alive."""
        alive = []
        for pid in self.pids_seen:
            try:
                os.killpg(pid, signal.SIGKILL)
                alive.append(pid)
            except (ProcessLookupError, PermissionError):
                pass
        return alive

    def open_ports(self) -> list[str]:
        return [
            f"{name}:{port}" for name, port in self.ports.items() if port_open("127.0.0.1", port)
        ]


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie is dead for our purposes (its parent, the launcher, may be gone already).
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


def group_alive(pgid: int) -> bool:
    """Whether any process of the group (session) started for `pgid` is left."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().split(")")[-1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            return True
    return False
