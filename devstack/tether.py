"""Runs one command tied to the process that started it: when that process
(the local launcher) dies, even by SIGKILL, the command and everything it
started die too, within about two seconds.

    python -I -S devstack/tether.py <parent pid> -- <command> [args...]

The launcher starts each child through this small supervisor (stdlib only,
so it starts in a few tens of milliseconds), in a session of its own. It

- asks the kernel to signal it when its parent dies (PR_SET_PDEATHSIG), and
  also checks its parent every half second (the signal is sent when the
  parent *thread* ends, and is Linux-only);
- makes itself a child subreaper (PR_SET_CHILD_SUBREAPER), so descendants
  orphaned below it — a wrapper such as `milvus-server` that exits before its
  `milvus run` child, a process that left the session with setsid — are
  re-parented to it instead of to init, and it can reap and kill them;
- runs the command as its child (in its process group), with default signal
  dispositions and mask, and PR_SET_PDEATHSIG=SIGKILL (it dies with this one);
- when the command exits, gives whatever it left behind SIGTERM, then SIGKILL
  after a grace period, and exits the way the command did (same code, or the
  same signal), so the launcher sees the command's own exit;
- when the launcher is gone, gives everything below it SIGTERM, then SIGKILL
  after the same grace period, and exits.

Signals meant for the command go to the process group (the launcher stops a
child with killpg): this process ignores SIGTERM, SIGINT, SIGQUIT and SIGHUP.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import sys
import time

PR_SET_PDEATHSIG = 1
PR_SET_CHILD_SUBREAPER = 36
#: how often the parent is checked when no signal arrives
POLL_S = 0.5
#: what the command's leftovers (or, once the launcher died, everything) get
#: between SIGTERM and SIGKILL
GRACE_S = 2.0
#: SIGHUP is the parent-death signal; the others are the command's to handle
WATCHED = {signal.SIGCHLD, signal.SIGHUP, signal.SIGTERM, signal.SIGINT, signal.SIGQUIT}


def prctl(option: int, value: int) -> bool:
    """prctl(2) through libc; False where it does not exist (not Linux)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return int(libc.prctl(option, value, 0, 0, 0)) == 0
    except (OSError, AttributeError):
        return False


def _stat(pid: str) -> tuple[int, int, str] | None:
    """(parent pid, process group, state) of a process, from /proc."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return int(fields[1]), int(fields[2]), fields[0]


def below(root: int) -> list[int]:
    """Live processes under `root` (its descendants, and the members of its
    process group), deepest first."""
    children: dict[int, list[int]] = {}
    group: list[int] = []
    pgid = os.getpgid(root)
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == root:
            continue
        stat = _stat(entry)
        if stat is None or stat[2] == "Z":
            continue
        children.setdefault(stat[0], []).append(int(entry))
        if stat[1] == pgid:
            group.append(int(entry))
    found: list[int] = []
    todo = [root]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    seen = set(found)
    return list(reversed(found)) + [p for p in group if p not in seen]


def reap() -> dict[int, int]:
    """Wait statuses of every child that has exited (the command's, and adopted
    orphans')."""
    done: dict[int, int] = {}
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return done
        if pid == 0:
            return done
        done[pid] = status


def signal_all(sig: int) -> int:
    sent = 0
    for pid in below(os.getpid()):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, sig)
            sent += 1
    return sent


def clear_below() -> None:
    """SIGTERM to everything below this process, SIGKILL to what is left after
    the grace period; everything reaped."""
    if signal_all(signal.SIGTERM):
        deadline = time.monotonic() + GRACE_S
        while time.monotonic() < deadline and below(os.getpid()):
            reap()
            time.sleep(0.05)
        signal_all(signal.SIGKILL)
    deadline = time.monotonic() + GRACE_S
    while time.monotonic() < deadline:
        reap()
        if not below(os.getpid()):
            break
        time.sleep(0.02)
    reap()


def start(command: list[str]) -> int:
    """Fork and exec the command, tied to this process."""
    me = os.getpid()
    pid = os.fork()
    if pid:
        return pid
    try:  # the child: never returns
        signal.pthread_sigmask(signal.SIG_SETMASK, set())
        # Python ignores SIGPIPE (and SIGXFSZ); ignored signals survive exec.
        for sig in (*WATCHED, signal.SIGPIPE, signal.SIGXFSZ):
            signal.signal(sig, signal.SIG_DFL)
        prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        if os.getppid() != me:
            os._exit(1)
        os.execvp(command[0], command)
    except BaseException as exc:  # exec failed: say why, like a shell would
        with contextlib.suppress(Exception):
            os.write(2, f"tether: cannot run {command[0]}: {exc}\n".encode())
    os._exit(127)


def exit_like(status: int) -> None:
    """Ends this process the way the command ended."""
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        with contextlib.suppress(OSError, ValueError):
            signal.signal(sig, signal.SIG_DFL)
            signal.pthread_sigmask(signal.SIG_UNBLOCK, {sig})
            os.kill(os.getpid(), sig)
        os._exit(128 + sig)
    os._exit(os.waitstatus_to_exitcode(status) if os.WIFEXITED(status) else 1)


def main(argv: list[str]) -> None:
    if len(argv) < 4 or argv[2] != "--":
        sys.stderr.write("usage: tether.py <parent pid> -- <command> [args...]\n")
        os._exit(2)
    parent, command = int(argv[1]), argv[3:]
    signal.pthread_sigmask(signal.SIG_BLOCK, WATCHED)
    prctl(PR_SET_CHILD_SUBREAPER, 1)
    prctl(PR_SET_PDEATHSIG, signal.SIGHUP)
    if os.getppid() != parent:  # the launcher died before we got here
        os._exit(1)
    child = start(command)
    while True:
        with contextlib.suppress(InterruptedError):
            signal.sigtimedwait(WATCHED, POLL_S)
        status = reap().get(child)
        if status is not None:
            clear_below()
            exit_like(status)
        if os.getppid() != parent:  # the launcher is gone
            clear_below()
            os._exit(1)


if __name__ == "__main__":
    main(sys.argv)
