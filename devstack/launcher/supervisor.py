"""Child processes with prefixed logs, health checks and restart with backoff.

Each child runs in its own session (process group): Ctrl-C in the terminal
reaches only the launcher, which then stops the children in order, and a
stop signals the whole group so grandchildren (Celery's pool, the Milvus
server's `milvus run`) go too; what has not exited after the child's grace
period (`stop_timeout_s`) is SIGKILLed.

No child outlives the launcher, however it ends: each runs under
devstack/tether.py (its group leader, the pid the launcher reports), which
kills the child and everything below it when the launcher dies, even by
SIGKILL. The launcher is itself a child subreaper: a descendant orphaned when
its tether was killed comes back to it, and `reap_orphans` kills it.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from devstack.tether import below

TETHER = Path(__file__).resolve().parents[1] / "tether.py"
PR_SET_CHILD_SUBREAPER = 36
_COLORS = ("36", "32", "33", "35", "34", "96", "92", "93", "95", "94")
_print_lock = threading.Lock()


def say(message: str, out: IO[str] | None = None) -> None:
    """A launcher line on the terminal."""
    show(f"{'launcher':<10} | {message}\n", out)


def show(text: str, out: IO[str] | None = None) -> None:
    """Lines as they are (the banner) on the terminal, never interleaved with child output:
    the output pumps write from their own threads."""
    stream = out or sys.stdout
    with _print_lock:
        stream.write(text)
        stream.flush()


def tethered(argv: Sequence[str]) -> list[str]:
    """`argv` run under devstack/tether.py, tied to this process."""
    return [sys.executable, "-I", "-S", str(TETHER), str(os.getpid()), "--", *argv]


def become_subreaper() -> bool:
    """Orphaned descendants are re-parented to this process (Linux only)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return int(libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)) == 0
    except (OSError, AttributeError):
        return False


def reap_orphans(known: set[int]) -> list[int]:
    """SIGKILLs and reaps this process's children that it did not start (orphans
    a subreaper adopted); returns their pids. `known`: the children it started."""
    me = str(os.getpid())
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) in known:
            continue
        try:
            with open(f"/proc/{entry}/stat") as fh:
                ppid = fh.read().rsplit(")", 1)[1].split()[1]
        except (OSError, IndexError):
            continue
        if ppid == me:
            found.append(int(entry))
    for pid in found:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, 0)
    return found


@dataclass
class ProcessSpec:
    name: str
    argv: Sequence[str]
    env: Mapping[str, str] = field(default_factory=dict)
    #: returns True once the process is healthy (None: healthy when `ready_line` is seen)
    health: Callable[[], bool] | None = None
    #: a regular expression: the process is healthy once a log line matches it
    ready_line: str | None = None
    #: a regular expression: matching lines go to the log file only, not the terminal
    #: (routine lines that would bury the rest, such as the answers to health probes)
    quiet_line: str | None = None
    stop_signal: int = signal.SIGTERM
    stop_timeout_s: float = 20.0
    cwd: Path | None = None


class Supervised:
    """One child: started, watched, restarted with exponential backoff, stopped."""

    #: a run this long without dying resets the backoff
    STABLE_AFTER_S = 60.0

    def __init__(
        self,
        spec: ProcessSpec,
        index: int,
        log_dir: Path,
        backoff_max_s: float = 30.0,
        out: IO[str] | None = None,
    ) -> None:
        self.spec = spec
        self.color = _COLORS[index % len(_COLORS)]
        self.log_path = log_dir / f"{spec.name}.log"
        self.backoff_max_s = backoff_max_s
        self.out = out or sys.stdout
        self.tty = bool(getattr(self.out, "isatty", lambda: False)())
        self.proc: subprocess.Popen[bytes] | None = None
        self.started_at = 0.0
        self.restarts = 0
        self.failures_in_row = 0
        self.restart_at: float | None = None
        self.ready_seen = threading.Event()
        self._reader: threading.Thread | None = None
        self._ready_re = re.compile(spec.ready_line) if spec.ready_line else None
        self._quiet_re = re.compile(spec.quiet_line) if spec.quiet_line else None

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self) -> None:
        self.ready_seen.clear()
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, **self.spec.env, "PYTHONUNBUFFERED": "1"}
        self.proc = subprocess.Popen(
            tethered(self.spec.argv),
            env=env,
            cwd=self.spec.cwd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.started_at = time.monotonic()
        self.restart_at = None
        self._reader = threading.Thread(
            target=self._pump, args=(self.proc,), name=f"log-{self.name}", daemon=True
        )
        self._reader.start()

    def _pump(self, proc: subprocess.Popen[bytes]) -> None:
        """Copy the child's output to the terminal (prefixed) and to its log file."""
        assert proc.stdout is not None
        prefix = f"{self.name:<10} | "
        if self.tty:
            prefix = f"\033[{self.color}m{self.name:<10}\033[0m | "
        with open(self.log_path, "ab") as log:
            for raw in iter(proc.stdout.readline, b""):
                log.write(raw)
                log.flush()
                line = raw.decode(errors="replace").rstrip("\n")
                if self._ready_re is not None and self._ready_re.search(line):
                    self.ready_seen.set()
                if self._quiet_re is not None and self._quiet_re.search(line):
                    continue
                with _print_lock:
                    self.out.write(prefix + line + "\n")
                    self.out.flush()

    def healthy(self) -> bool:
        if not self.alive():
            return False
        if self.spec.health is not None:
            try:
                return bool(self.spec.health())
            except Exception:  # a probe failing is "not healthy yet", never a crash
                return False
        return self.ready_seen.is_set()

    def check(self, now: float | None = None) -> None:
        """Called periodically while running: schedule or perform a restart."""
        now = time.monotonic() if now is None else now
        if self.proc is None:
            return
        if self.restart_at is not None:
            if now >= self.restart_at:
                self.restarts += 1
                say(f"restarting {self.name} (restart #{self.restarts})", self.out)
                self.start()
            return
        code = self.proc.poll()
        if code is None:
            return
        if now - self.started_at >= self.STABLE_AFTER_S:
            self.failures_in_row = 0
        delay = min(self.backoff_max_s, 2.0**self.failures_in_row)
        self.failures_in_row += 1
        self._kill_group(signal.SIGKILL)  # leftovers of the dead child's group
        say(f"{self.name} exited with code {code}; restarting in {delay:.0f}s", self.out)
        self.restart_at = now + delay

    def _kill_group(self, sig: int) -> None:
        if self.proc is None:
            return
        if sig == signal.SIGKILL and self.proc.poll() is None:
            # Everything under the live tether first, the processes that left
            # its group (setsid) too: killed with it, the tether could not.
            for pid in below(self.proc.pid):
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, sig)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, sig)

    def stop(self) -> int | None:
        """Signal the group, wait, SIGKILL what is left; returns the exit code."""
        self.restart_at = None
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self._kill_group(self.spec.stop_signal)
            try:
                self.proc.wait(self.spec.stop_timeout_s)
            except subprocess.TimeoutExpired:
                say(
                    f"{self.name} did not stop in {self.spec.stop_timeout_s:.0f}s: killing it",
                    self.out,
                )
        self._kill_group(signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(10)
        if self._reader is not None:
            self._reader.join(timeout=5)
        return self.proc.returncode
