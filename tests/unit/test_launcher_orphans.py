"""No child of the launcher outlives it: real processes under the launcher's
supervisor (each behind devstack/tether.py), with grandchildren that stay in
their group, grandchildren that leave it (setsid, as nothing else would find
them), children that ignore SIGTERM, and ports held by all of them.

The "launcher" here is a small script built from the launcher's own parts
(Supervised, become_subreaper, reap_orphans), so it can be SIGKILLed in a
second; tests/integration/test_launcher.py does the same to the real one."""

from __future__ import annotations

import contextlib
import io
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from devstack.launched import REPO, pid_alive
from devstack.launcher.supervisor import ProcessSpec, Supervised
from devstack.procs import free_port, port_open
from devstack.tether import below

# Holds a port until killed; ignores SIGTERM when asked to.
LISTEN = (
    "import signal, socket, sys, time\n"
    "if 'stubborn' in sys.argv: signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
    "s = socket.socket(); s.bind(('127.0.0.1', int(sys.argv[1]))); s.listen()\n"
    "print('listening', sys.argv[1], flush=True)\n"
    "time.sleep(600)\n"
)
# Like `milvus-server`: a wrapper with a child in its group and one that left the
# session (setsid), each holding a port; the wrapper ignores SIGTERM.
WRAPPER = (
    "import signal, subprocess, sys, time\n"
    "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
    "listen = sys.argv[1]\n"
    "inner = subprocess.Popen([sys.executable, '-c', listen, sys.argv[2], 'stubborn'])\n"
    "away = subprocess.Popen([sys.executable, '-c', listen, sys.argv[3]], start_new_session=True)\n"
    "print('wrapper children', inner.pid, away.pid, flush=True)\n"
    "time.sleep(600)\n"
)
# A launcher made of the launcher's parts, as devstack/launcher/stack.py uses them.
MINI_LAUNCHER = """
import sys, time
from pathlib import Path
from devstack.launcher.supervisor import ProcessSpec, Supervised, become_subreaper, reap_orphans
assert become_subreaper()
log_dir, listen, wrapper, ports = Path(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4:]
specs = [
    ProcessSpec("svc", [sys.executable, "-c", listen, ports[0]]),
    ProcessSpec("stubborn", [sys.executable, "-c", listen, ports[1], "stubborn"]),
    ProcessSpec("wrapper", [sys.executable, "-c", wrapper, listen, ports[2], ports[3]]),
]
procs = [Supervised(spec, i, log_dir) for i, spec in enumerate(specs)]
for proc in procs:
    proc.start()
    print("tether", proc.name, proc.pid, flush=True)
while True:
    for pid in reap_orphans({p.pid for p in procs}):
        print("killed orphan", pid, flush=True)
    time.sleep(0.2)
"""


def _bindable(port: int) -> bool:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _until(check: object, timeout: float) -> float:
    """Seconds until `check()` held (AssertionError after `timeout`)."""
    start = time.monotonic()
    while not check():  # type: ignore[operator]
        if time.monotonic() - start > timeout:
            raise AssertionError(f"not within {timeout} s")
        time.sleep(0.05)
    return time.monotonic() - start


class Mini:
    def __init__(self, tmp_path: Path) -> None:
        self.ports = [free_port() for _ in range(4)]
        self.proc = subprocess.Popen(
            [sys.executable, "-c", MINI_LAUNCHER, str(tmp_path), LISTEN, WRAPPER]
            + [str(p) for p in self.ports],
            cwd=REPO,
            env={**os.environ, "PYTHONPATH": str(REPO)},
            stdout=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        self.lines: list[str] = []
        self.tethers: dict[str, int] = {}
        assert self.proc.stdout is not None
        while len(self.tethers) < 3:
            line = self.proc.stdout.readline()
            assert line, "the mini launcher ended"
            if line.startswith("tether"):
                _, name, pid = line.split()
                self.tethers[name] = int(pid)
        _until(lambda: all(port_open("127.0.0.1", p) for p in self.ports), 30)
        self.descendants = below(self.proc.pid)

    def close(self) -> None:
        with_pids = [self.proc.pid, *self.descendants]
        for pid in with_pids:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        self.proc.wait(10)


@pytest.fixture
def mini(tmp_path: Path) -> Iterator[Mini]:
    launched = Mini(tmp_path)
    yield launched
    launched.close()


def test_a_sigkilled_launcher_leaves_no_process_and_no_port(mini: Mini) -> None:
    # 3 tethers, their commands, the wrapper's 2 children.
    assert len(mini.descendants) == 8, mini.descendants
    os.kill(mini.proc.pid, signal.SIGKILL)
    mini.proc.wait(10)
    # The tethers' grace period (2 s) for the SIGTERM-ignoring ones, then SIGKILL.
    took = _until(lambda: not any(pid_alive(p) for p in mini.descendants), 8)
    assert took < 6
    assert all(_bindable(port) for port in mini.ports)


def test_a_killed_tether_takes_its_command_and_the_launcher_kills_the_orphans(
    mini: Mini,
) -> None:
    """SIGKILL to the wrapper's tether alone: the wrapper dies with it
    (PR_SET_PDEATHSIG); its children, orphaned, come back to the launcher (a
    subreaper), which kills them — the one that left the group included."""
    tether = mini.tethers["wrapper"]
    under = below(tether)
    assert len(under) == 3
    os.kill(tether, signal.SIGKILL)
    _until(lambda: not any(pid_alive(p) for p in [tether, *under]), 8)
    assert _bindable(mini.ports[2]) and _bindable(mini.ports[3])
    # The others are untouched.
    assert port_open("127.0.0.1", mini.ports[0]) and port_open("127.0.0.1", mini.ports[1])


def test_a_child_that_ignores_sigterm_is_sigkilled_after_the_grace_period(
    tmp_path: Path,
) -> None:
    port, out = free_port(), io.StringIO()
    proc = Supervised(
        ProcessSpec(
            "stubborn",
            [sys.executable, "-c", WRAPPER, LISTEN, str(port), str(free_port())],
            ready_line=r"wrapper children",
            stop_timeout_s=1.0,
        ),
        0,
        tmp_path,
        out=out,
    )
    proc.start()
    _until(proc.healthy, 30)
    _until(lambda: port_open("127.0.0.1", port), 30)
    assert proc.pid is not None
    everything = [proc.pid, *below(proc.pid)]
    start = time.monotonic()
    code = proc.stop()
    took = time.monotonic() - start
    assert code == -signal.SIGKILL
    assert 1.0 <= took < 5, took
    assert "stubborn did not stop in 1s: killing it" in out.getvalue()
    _until(lambda: not any(pid_alive(p) for p in everything), 5)
    assert _bindable(port)


def test_the_command_exit_is_reported_and_its_leftovers_are_killed(tmp_path: Path) -> None:
    """A command that dies by a signal is seen so by the launcher; what it left
    behind (here a process in another session) does not outlive it."""
    leave = (
        "import os, signal, subprocess, sys\n"
        "away = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)'],"
        " start_new_session=True)\n"
        "print('left', away.pid, flush=True)\n"
        "os.kill(os.getpid(), signal.SIGUSR1)\n"
    )
    out = io.StringIO()
    proc = Supervised(ProcessSpec("leaver", [sys.executable, "-c", leave]), 0, tmp_path, out=out)
    proc.start()
    assert proc.proc is not None
    assert proc.proc.wait(30) == -signal.SIGUSR1
    _until(lambda: "left" in out.getvalue(), 10)
    left = int(next(ln for ln in out.getvalue().splitlines() if "left" in ln).split()[-1])
    assert not pid_alive(left)
    proc.stop()
