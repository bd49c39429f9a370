"""The life of a chunking worker process (the child side of services/chunking/pool.py).

A child hardens itself (dies with its parent, ignores SIGINT/SIGTERM, caps its
memory with RLIMIT_DATA), runs `init` once, then runs one task at a time as the
parent sends them over the pipe, replying with the result or the error. It
exits when the pipe closes, or after a reply when it should be replaced.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import resource
import signal
import sys
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import Any

from services.common.errors import Internal, InvalidArgument, ServiceError
from services.common.logs import request_id_var

log = logging.getLogger("ragmesh.chunking.pool")

#: A task run in a child: (the child's state from `init`, request bytes) → (summary, result bytes).
Task = Callable[[Any, bytes], tuple[dict[str, Any], bytes]]

#: A child whose resident memory passed this share of its cap is replaced after its reply.
RECYCLE_RSS_SHARE = 0.5
_PR_SET_PDEATHSIG = 1


def _die_with_parent(parent_pid: int) -> None:
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent_pid:  # the parent died before prctl
        os._exit(0)


def _limit_memory(memory_mb: int) -> None:
    if memory_mb <= 0:
        return
    limit = memory_mb * 1024 * 1024
    _, hard = resource.getrlimit(resource.RLIMIT_DATA)
    if hard != resource.RLIM_INFINITY:
        limit = min(limit, hard)
    resource.setrlimit(resource.RLIMIT_DATA, (limit, hard))


def _resident_bytes() -> int:
    try:
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


def _too_complex_memory(memory_mb: int) -> InvalidArgument:
    return InvalidArgument(
        f"the document needs more memory than a chunking worker may use ({memory_mb} MiB, "
        "RAGMESH_CHUNKING_WORKER_MEMORY_MB)",
        reason="DOCUMENT_TOO_COMPLEX",
        metadata={"limit": "worker_memory_mb", "worker_memory_mb": memory_mb},
    )


def _run_task(state: Any, task: Task, payload: bytes, memory_mb: int) -> tuple[Any, ...]:
    """The reply to one task: ("ok", summary, recycle) + result, or ("error", exc, recycle)."""
    try:
        summary, result = task(state, payload)
    except MemoryError:
        return ("error", _too_complex_memory(memory_mb), True)
    except RecursionError as exc:
        error: ServiceError = InvalidArgument(
            f"the document is nested too deeply to process: {exc}",
            reason="DOCUMENT_TOO_COMPLEX",
            metadata={"limit": "recursion"},
        )
        return ("error", error, False)
    except ServiceError as exc:
        return ("error", exc, False)
    except Exception as exc:
        log.exception("unexpected error in a chunking worker")
        error = Internal(
            f"unexpected error while chunking: {type(exc).__name__} (see the chunking log)",
            reason="INTERNAL_ERROR",
        )
        return ("error", error, False)
    recycle = memory_mb > 0 and _resident_bytes() > RECYCLE_RSS_SHARE * memory_mb * 1024 * 1024
    return ("ok", summary, recycle, result)


def child_main(
    conn: Connection,
    init: Callable[..., Any],
    init_args: tuple[Any, ...],
    memory_mb: int,
    parent_pid: int,
) -> None:
    """A child's life: harden, `init` once, then tasks until the pipe closes."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    _die_with_parent(parent_pid)
    _limit_memory(memory_mb)
    try:
        state = init(*init_args)
    except BaseException as exc:
        conn.send(("failed", f"{type(exc).__name__}: {exc}"))
        return
    conn.send(("ready", os.getpid()))
    while True:
        try:
            task, request_id = conn.recv()
            payload = conn.recv_bytes()
        except (EOFError, OSError):
            return
        request_id_var.set(request_id)
        reply = _run_task(state, task, payload, memory_mb)
        del payload
        try:
            conn.send(reply[:3])
            if reply[0] == "ok":
                conn.send_bytes(reply[3])
        except MemoryError:
            conn.send(("error", _too_complex_memory(memory_mb), True))
        except (EOFError, OSError):
            return
        if reply[2]:
            return  # recycled: the parent replaces this child
