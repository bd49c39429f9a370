"""The whole ragmesh stack on one machine: what `make run` starts and supervises."""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import IO

from devstack import deps
from devstack.launcher.demo import DEMO_KB, create_demo
from devstack.launcher.settings import SERVICE_ORDER, LauncherSettings
from devstack.launcher.supervisor import (
    ProcessSpec,
    Supervised,
    become_subreaper,
    reap_orphans,
    say,
    show,
)
from devstack.procs import health_status, port_open, worker_argv

REPO = Path(__file__).resolve().parents[2]
DEV_TENANT = "dev"
#: The LLM server's log line for an answered GET /v1/models: the generation service asks
#: it every RAGMESH_READINESS_INTERVAL_S (its readiness check), a line every 2 s that
#: would bury the rest of the terminal. Kept in llm.log; a failing probe still shows.
LLM_PROBE_LINE = r'"GET /v1/models HTTP/1\.[01]" 200'


class LaunchError(RuntimeError):
    """The stack cannot start; the message says what to do."""


# -- dependencies -------------------------------------------------------------------------


def redis_answers(url: str) -> bool:
    import redis

    try:
        client = redis.Redis.from_url(url, socket_connect_timeout=1, socket_timeout=1)
        try:
            return bool(client.ping())
        finally:
            client.close()
    except (redis.RedisError, OSError, ValueError):
        return False


def redis_dir(url: str) -> Path | None:
    """The data directory of the Redis answering at `url` (None: no Redis there)."""
    import redis

    try:
        client = redis.Redis.from_url(url, socket_connect_timeout=1, socket_timeout=1)
        try:
            found = client.config_get("dir").get("dir")
        finally:
            client.close()
    except (redis.RedisError, OSError, ValueError):
        return None
    return Path(found).resolve() if found else None


def ensure_redis_server(out: IO[str] | None = None) -> str:
    """The redis-server executable; installed from the OS packages when missing and
    we are root (apt-get), otherwise a LaunchError saying how to get one."""
    exe = shutil.which("redis-server")
    if exe:
        return exe
    if os.geteuid() == 0 and shutil.which("apt-get"):
        say("redis-server is not installed: installing it with apt-get", out)
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        for argv in (["apt-get", "update"], ["apt-get", "install", "-y", "redis-server"]):
            done = subprocess.run(argv, env=env, check=False)
            if done.returncode != 0:
                raise LaunchError(f"`{' '.join(argv)}` failed with code {done.returncode}")
        exe = shutil.which("redis-server")
        if exe:
            return exe
    raise LaunchError(
        "redis-server is not on the PATH. Install it (Debian/Ubuntu: `sudo apt-get install "
        "redis-server`, macOS: `brew install redis`) or point RAGMESH_REDIS_URL at a running "
        "Redis, then run `make run` again."
    )


def dev_api_key(settings: LauncherSettings) -> str:
    """RAGMESH_DEV_API_KEY, or a random key made on first start and kept in the data dir."""
    if settings.dev_api_key:
        return settings.dev_api_key
    path = settings.data_dir / "dev-api-key"
    if path.is_file():
        key = path.read_text().strip()
        if key:
            return key
    key = f"rm-dev-{secrets.token_urlsafe(18)}"
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(key + "\n")
    return key


# -- the plan -----------------------------------------------------------------------------


class Stack:
    """Builds the process specs from the settings, then runs them."""

    def __init__(self, settings: LauncherSettings, out: IO[str] | None = None) -> None:
        self.settings = settings
        self.out = out or sys.stdout
        self.data_dir = settings.data_dir.resolve()
        self.log_dir = self.data_dir / "logs"
        self.api_key = dev_api_key(settings)
        self.addrs = {s: f"127.0.0.1:{settings.port_of(s)}" for s in SERVICE_ORDER}
        # The HTTP front, beside the gRPC services in the client config (`services.web`).
        self.web_addr = f"127.0.0.1:{settings.web_port}" if settings.web else ""
        self.processes: list[Supervised] = []
        self.stop_event = threading.Event()
        self.redis_url = settings.redis_url or f"redis://127.0.0.1:{settings.redis_port}/0"
        self.milvus_uri = os.environ.get("RAGMESH_RETRIEVAL_MILVUS_URI", "")
        self.llm_base_url = os.environ.get("RAGMESH_GENERATION_LLM_BASE_URL", "")
        self.started_deps: list[str] = []
        self.demo_thread: threading.Thread | None = None

    # -- specs --------------------------------------------------------------------------

    def _add(self, spec: ProcessSpec) -> Supervised:
        spec.stop_timeout_s = self.settings.stop_grace_s
        proc = Supervised(
            spec, len(self.processes), self.log_dir, self.settings.restart_backoff_max_s, self.out
        )
        self.processes.append(proc)
        return proc

    def _redis_spec(self) -> ProcessSpec | None:
        if self.settings.redis_url:  # named explicitly: used, never started
            if not redis_answers(self.redis_url):
                raise LaunchError(f"no Redis answers at {self.redis_url} (RAGMESH_REDIS_URL)")
            say(f"using the Redis at {self.redis_url} (RAGMESH_REDIS_URL)", self.out)
            return None
        data = self.data_dir / "redis"
        port = self.settings.redis_port
        if port_open("127.0.0.1", port):
            if redis_dir(self.redis_url) == data.resolve():
                say(f"using this stack's Redis, still running on port {port}", self.out)
                return None
            raise LaunchError(
                f"port {port} (RAGMESH_REDIS_PORT) is taken by something other than this "
                "stack's Redis (another clone's `make run`?): set RAGMESH_REDIS_PORT to a free "
                "port, or RAGMESH_REDIS_URL to use an existing Redis on purpose"
            )
        ensure_redis_server(self.out)
        argv = deps.redis_process(port, data).argv
        url = self.redis_url
        self.started_deps.append("redis")
        return ProcessSpec("redis", argv, health=lambda: redis_answers(url))

    def _milvus_spec(self) -> ProcessSpec | None:
        if self.milvus_uri:
            say(f"using Milvus at {self.milvus_uri} (RAGMESH_RETRIEVAL_MILVUS_URI)", self.out)
            return None
        if self.settings.milvus == "lite":
            db = self.data_dir / "milvus" / "ragmesh.db"
            db.parent.mkdir(parents=True, exist_ok=True)
            self.milvus_uri = str(db)
            return None
        port = self.settings.milvus_port
        if port_open("127.0.0.1", port):
            raise LaunchError(f"port {port} (RAGMESH_MILVUS_PORT) is already taken")
        proc = deps.milvus_server_process(self.data_dir / "milvus-server", port)
        self.milvus_uri = f"http://127.0.0.1:{port}"
        self.started_deps.append("milvus")
        return ProcessSpec(
            "milvus",
            proc.argv,
            health=lambda: port_open("127.0.0.1", port),
            stop_signal=signal.SIGINT,
        )

    def _llm_spec(self) -> ProcessSpec | None:
        if self.llm_base_url:
            say(f"using the LLM at {self.llm_base_url} (RAGMESH_GENERATION_LLM_BASE_URL)", self.out)
            return None
        import importlib.util

        if importlib.util.find_spec("llama_cpp") is None:
            raise LaunchError(
                "llama-cpp-python is not installed (run `make setup`), or point "
                "RAGMESH_GENERATION_LLM_BASE_URL at an OpenAI-compatible server"
            )
        port = self.settings.llm_port
        if port_open("127.0.0.1", port):
            raise LaunchError(f"port {port} (RAGMESH_LLM_PORT) is already taken")
        argv = deps.llm_process(port, threads=self.settings.llm_threads).argv
        self.llm_base_url = f"http://127.0.0.1:{port}/v1"
        models_url = f"{self.llm_base_url}/models"
        self.started_deps.append("llm")
        return ProcessSpec(
            "llm",
            argv,
            health=lambda: deps.http_ok(models_url),
            quiet_line=LLM_PROBE_LINE,
        )

    def service_env(self) -> dict[str, str]:
        env = {f"RAGMESH_{s.upper()}_ADDR": addr for s, addr in self.addrs.items()}
        keys = os.environ.get("RAGMESH_GATEWAY_API_KEYS", "")
        dev_entry = f"{self.api_key}:{DEV_TENANT}"
        env.update(
            RAGMESH_REDIS_URL=self.redis_url,
            RAGMESH_BLOB_DIR=str(self.data_dir / "blobs"),
            RAGMESH_RETRIEVAL_MILVUS_URI=self.milvus_uri,
            RAGMESH_GENERATION_LLM_BASE_URL=self.llm_base_url,
            RAGMESH_GATEWAY_API_KEYS=f"{keys},{dev_entry}" if keys else dev_entry,
            RAGMESH_LOG_FORMAT=os.environ.get("RAGMESH_LOG_FORMAT", "text"),
        )
        return env

    def plan(self) -> None:
        """Decide what to start (checks ports and dependencies first)."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        busy = [
            f"{s} {self.settings.port_of(s)}"
            for s in SERVICE_ORDER
            if port_open("127.0.0.1", self.settings.port_of(s))
        ]
        if self.web_addr and port_open("127.0.0.1", self.settings.web_port):
            busy.append(f"web {self.settings.web_port}")
        if busy:
            raise LaunchError(
                f"ports already in use: {', '.join(busy)} (another `make run`?); stop it or "
                "choose other ports with RAGMESH_<SERVICE>_PORT"
            )
        for make in (self._redis_spec, self._milvus_spec, self._llm_spec):
            spec = make()
            if spec is not None:
                self._add(spec)
        env = self.service_env()
        for service in SERVICE_ORDER:
            addr = self.addrs[service]
            argv = [
                sys.executable,
                "-m",
                "ragmesh.cli",
                "serve",
                service,
                "--port",
                str(self.settings.port_of(service)),
                "--metrics-port",
                str(self.settings.metrics_port_of(service)),
            ]
            self._add(
                ProcessSpec(
                    service,
                    argv,
                    env=env,
                    cwd=REPO,
                    health=lambda addr=addr: health_status(addr) == "SERVING",  # type: ignore[misc]
                )
            )
        if self.web_addr:
            self._add(self._web_spec(env))
        argv_worker = worker_argv(
            f"ragmesh-worker-{os.getpid()}@%h", self.settings.worker_concurrency
        )
        # Celery prints "celery@host ready." once it consumes from the broker.
        self._add(
            ProcessSpec(
                "worker",
                argv_worker,
                env=env,
                cwd=REPO,
                ready_line=r"@\S+ ready\.",
            )
        )

    def _web_spec(self, env: dict[str, str]) -> ProcessSpec:
        """`ragmesh serve web`: healthy once /readyz says the gateway serves."""
        argv = [
            sys.executable,
            "-m",
            "ragmesh.cli",
            "serve",
            "web",
            "--port",
            str(self.settings.web_port),
        ]
        ready_url = f"http://{self.web_addr}/readyz"
        return ProcessSpec("web", argv, env=env, cwd=REPO, health=lambda: deps.http_ok(ready_url))

    # -- running ------------------------------------------------------------------------

    def write_state(self) -> None:
        """data/run/processes.json: pids of the children (for tests and debugging)."""
        state = {
            "launcher_pid": os.getpid(),
            "processes": {p.name: p.pid for p in self.processes if p.alive()},
        }
        path = self.data_dir / "run" / "processes.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(state, indent=2))
        tmp.replace(path)

    def start_all(self) -> None:
        # Redis first: the gateway and the worker need it from their first second.
        for proc in self.processes:
            if proc.name == "redis":
                proc.start()
                self.wait_healthy([proc], 30)
        for proc in self.processes:
            if proc.proc is None:
                proc.start()
        self.write_state()

    def wait_healthy(self, procs: list[Supervised], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        pending = list(procs)
        last_report = time.monotonic()
        while pending:
            if self.stop_event.is_set():
                raise KeyboardInterrupt
            self.reap_orphans()
            for proc in list(pending):
                proc.check()
                if proc.healthy():
                    say(f"{proc.name} is up", self.out)
                    pending.remove(proc)
            if self._pids_changed():
                self.write_state()
            if not pending:
                break
            now = time.monotonic()
            if now > deadline:
                names = ", ".join(p.name for p in pending)
                raise LaunchError(
                    f"not healthy after {timeout:.0f}s: {names} (logs in {self.log_dir})"
                )
            if now - last_report > 30:
                say(f"waiting for {', '.join(p.name for p in pending)} ...", self.out)
                last_report = now
            self.stop_event.wait(0.5)

    _last_pids: dict[str, int | None] | None = None

    def _pids_changed(self) -> bool:
        pids = {p.name: p.pid for p in self.processes}
        changed = pids != self._last_pids
        self._last_pids = pids
        return changed

    def supervise(self) -> None:
        recovering: set[str] = set()
        while not self.stop_event.wait(0.5):
            self.reap_orphans()
            for proc in self.processes:
                restarts = proc.restarts
                proc.check()
                if proc.restarts != restarts:
                    recovering.add(proc.name)
                elif proc.name in recovering and proc.healthy():
                    recovering.discard(proc.name)
                    say(f"{proc.name} is up again", self.out)
            if self._pids_changed():
                self.write_state()

    def stop_all(self) -> None:
        """Stop in reverse dependency order: consumers first, then services, then deps."""
        say("stopping ...", self.out)
        waves = [
            ["web", "worker", "gateway"],
            ["generation", "retrieval", "embedding", "chunking"],
            ["llm", "milvus", "redis"],
        ]
        by_name = {p.name: p for p in self.processes}
        for wave in waves:
            procs = [by_name[n] for n in wave if n in by_name]
            with ThreadPoolExecutor(max_workers=max(1, len(procs))) as pool:
                list(pool.map(lambda p: p.stop(), procs))
        self.reap_orphans()
        with contextlib.suppress(OSError):
            (self.data_dir / "run" / "processes.json").unlink()
        say("stopped", self.out)

    def reap_orphans(self) -> None:
        """Kills descendants orphaned by a dead tether (re-parented to the launcher,
        a subreaper), which nothing else would stop."""
        known = {p.pid for p in self.processes if p.pid is not None}
        for pid in reap_orphans(known):
            say(f"killed orphaned process {pid}", self.out)

    # -- after start --------------------------------------------------------------------

    def client_config(self) -> dict[str, object]:
        return {
            "gateway_addr": self.addrs["gateway"],
            "api_key": self.api_key,
            "knowledge_base": DEMO_KB if self.settings.demo else "",
            "services": {**self.addrs, **({"web": self.web_addr} if self.web_addr else {})},
            "redis_url": self.redis_url,
            "milvus_uri": self.milvus_uri,
            "llm_base_url": self.llm_base_url,
            "written_by": "ragmesh launcher (make run)",
        }

    def config_paths(self) -> list[Path]:
        if self.settings.config:
            return [Path(self.settings.config)]
        from ragmesh.client.config import PROJECT_CONFIG, user_config_path

        return [Path.cwd() / PROJECT_CONFIG, user_config_path()]

    def write_client_config(self) -> list[Path]:
        from ragmesh.client.config import write_config_file

        written = []
        for path in self.config_paths():
            try:
                write_config_file(path, self.client_config())
                written.append(path)
            except OSError as exc:
                say(f"could not write {path}: {exc}", self.out)
        return written

    def banner(self, config_paths: list[Path]) -> str:
        s = self.settings
        lines = [
            "",
            "ragmesh is up.",
            "",
            f"  gateway (public gRPC API)  {self.addrs['gateway']}",
        ]
        for svc in SERVICE_ORDER[:-1]:
            lines.append(f"  {svc:<26} {self.addrs[svc]}")
        if self.web_addr:
            lines.append(
                f"  web page (and HTTP API)    http://{self.web_addr}/  "
                "(/docs, /v1/chat/completions, /mcp)"
            )
        lines += [
            f"  redis                      {self.redis_url}",
            f"  milvus                     {self.milvus_uri}",
            f"  llm (OpenAI-compatible)    {self.llm_base_url}",
            f"  metrics                    http://127.0.0.1:{s.metrics_port_base + 1}/metrics "
            f"(gateway; +1 per service)",
            f"  logs                       {self.log_dir}",
            "",
            f"  development API key        {self.api_key}   (tenant `{DEV_TENANT}`)",
            f"  client config              {', '.join(str(p) for p in config_paths) or '-'}",
            "",
            "Next, in another terminal (source .venv/bin/activate first):",
            "",
            "  ragmesh status",
            '  ragmesh ask "What is ragmesh?"            # the demo knowledge base',
            "  ragmesh kb create mydocs",
            "  ragmesh ingest ~/Documents/notes --kb mydocs --wait",
            '  ragmesh search "how do I install it" --kb mydocs',
            "",
            "Ctrl-C stops everything.",
            "",
        ]
        return "\n".join(lines)

    # -- the whole run ------------------------------------------------------------------

    def run(self) -> int:
        try:
            self.plan()
        except LaunchError as exc:
            say(f"error: {exc}", self.out)
            return 1
        code = 0
        try:
            self.start_all()
            self.wait_healthy(
                [p for p in self.processes if not p.healthy()], self.settings.health_timeout_s
            )
            paths = self.write_client_config()
            with contextlib.suppress(OSError):
                show(self.banner(paths) + "\n", self.out)
            if self.settings.demo:
                self.demo_thread = threading.Thread(
                    target=create_demo,
                    args=(self.addrs["gateway"], self.api_key, self.out),
                    name="demo",
                    daemon=True,
                )
                self.demo_thread.start()
            self.supervise()
        except LaunchError as exc:
            say(f"error: {exc}", self.out)
            code = 1
        except KeyboardInterrupt:
            pass
        finally:
            self.stop_all()
        return code

    def install_signal_handlers(self) -> None:
        def on_signal(signum: int, _frame: object) -> None:
            if self.stop_event.is_set():
                return  # already stopping: the cleanup always runs to its end
            say(f"got {signal.Signals(signum).name}: stopping everything", self.out)
            self.stop_event.set()

        signal.signal(signal.SIGINT, on_signal)
        signal.signal(signal.SIGTERM, on_signal)


def main(argv: list[str] | None = None, runner: Callable[[Stack], int] | None = None) -> int:
    settings = LauncherSettings()  # values from the environment
    # Orphans below the children come back to the launcher (see supervisor.py).
    become_subreaper()
    stack = Stack(settings)
    stack.install_signal_handlers()
    return (runner or Stack.run)(stack)
