"""Worker processes that run one document at a time under a time and memory budget.

Parsing is CPU-bound, runs in C libraries (lexbor, zlib, the tokenizer) that
Python cannot interrupt, and holds the GIL for long stretches: in the server's
own process a pathological document would stall health checks and every other
call. So each document runs in a child process of a small pool, which the
server can kill:

- **time**: the server waits for the result without blocking its event loop;
  past the budget (`timeout_s`, a wall-clock limit measured by the server) the
  child is killed with SIGKILL and replaced, and the call fails
  INVALID_ARGUMENT / PARSE_TIMEOUT. Wall clock rather than RLIMIT_CPU: a child
  serves many documents, so a CPU limit would have to be re-armed for each,
  has a granularity of a second, and does not see a child that waits; the
  server must be able to kill a child anyway (a caller that goes away), and
  the wall clock is what holds up the caller and the ingestion queue.
- **memory**: each child runs under RLIMIT_DATA (heap and other private
  writable memory, not the address space that shared libraries and thread
  reservations take), so an allocation past the cap fails inside the child:
  Python raises MemoryError, lexbor gives up, and the document fails
  DOCUMENT_TOO_COMPLEX instead of the service being OOM-killed. A child that
  held a lot of memory is replaced after its reply.
- **cancellation**: a call whose caller went away (the task is cancelled) kills
  its child, which stops the CPU work at once.
- **crashes**: a child that dies on its own is replaced; the call fails with a
  reason that says how it died.

Children are started with multiprocessing's "spawn" (a fresh interpreter:
forking a process that holds gRPC and tokenizer threads is unsafe), each runs
`init(*init_args)` once (the tokenizer loads once per child), die with their
parent (PR_SET_PDEATHSIG) and ignore SIGINT/SIGTERM (the server stops them
once its calls have drained). Requests and results cross a pipe as bytes.
The child's side is services/chunking/pool_child.py. No grpc here.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing
import os
import signal
import sys
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from typing import Any

from services.chunking.pool_child import Task, child_main
from services.common.errors import (
    DeadlineExceeded,
    Internal,
    InvalidArgument,
    ServiceError,
    Unavailable,
)

log = logging.getLogger("ragmesh.chunking.pool")

_RESTART_BACKOFF_S = (0.5, 1.0, 2.0, 5.0, 10.0)


class WorkerStartError(RuntimeError):
    """A child could not start (its `init` failed, or it died or hung while starting)."""


# ------------------------------------------------------------------ the parent


class _Died(Exception):
    def __init__(self, exitcode: int | None) -> None:
        super().__init__(exitcode)
        self.exitcode = exitcode


class _Failed(Exception):
    def __init__(self, error: ServiceError, recycle: bool) -> None:
        super().__init__(error)
        self.error = error
        self.recycle = recycle


@dataclass(eq=False)
class _Worker:
    process: BaseProcess
    conn: Connection
    #: the pool's set of processes not yet reaped
    processes: set[BaseProcess]
    #: the round trip in flight (a thread reading `conn`), if any
    inflight: Future[tuple[dict[str, Any], bytes, bool]] | None = None

    def call(
        self, task: Task, payload: bytes, request_id: str
    ) -> tuple[dict[str, Any], bytes, bool]:
        """One blocking round trip (run in a thread of the pool)."""
        try:
            self.conn.send((task, request_id))
            self.conn.send_bytes(payload)
            reply = self.conn.recv()
            if reply[0] == "ok":
                return reply[1], self.conn.recv_bytes(), reply[2]
        except (EOFError, OSError):
            raise _Died(self.wait()) from None
        raise _Failed(reply[1], reply[2])

    def wait(self) -> int | None:
        """Wait for the (dying) process; its exit code."""
        self.process.join(timeout=10)
        if self.process.exitcode is None:
            self.process.kill()
            self.process.join(timeout=10)
        return self.process.exitcode

    def reap(self) -> int | None:
        """Wait for the process and close the pipe (no round trip may be in flight)."""
        exitcode = self.wait()
        self.conn.close()
        self.processes.discard(self.process)
        return exitcode


@dataclass
class PoolStats:
    started: int = 0
    timeouts: int = 0
    cancelled: int = 0
    crashed: int = 0
    recycled: int = 0


class WorkerPool:
    """`size` child processes, each running one task at a time (see the module's docstring)."""

    def __init__(
        self,
        size: int,
        init: Callable[..., Any],
        init_args: tuple[Any, ...] = (),
        *,
        memory_mb: int = 0,
        start_timeout_s: float = 120.0,
        name: str = "chunking",
    ) -> None:
        if size < 1:
            raise ValueError("a pool needs at least one worker")
        self.size = size
        self.name = name
        self.stats = PoolStats()
        self._init = init
        self._init_args = init_args
        self._memory_mb = memory_mb
        self._start_timeout_s = start_timeout_s
        self._context = multiprocessing.get_context("spawn")
        # One thread per round trip in flight and one per replacement being started.
        self._threads = ThreadPoolExecutor(2 * size + 1, thread_name_prefix=f"{name}-pool")
        self._idle: asyncio.Queue[_Worker] = asyncio.Queue()
        self._alive: set[_Worker] = set()
        self._replacing: set[asyncio.Task[None]] = set()
        self._processes: set[BaseProcess] = set()  # started and not yet reaped
        self._closed = False
        self.last_start_error = ""

    # -- lifecycle

    async def start(self) -> None:
        """Start every child and wait until each has run `init` (raises WorkerStartError)."""
        results = await asyncio.gather(
            *(self._start_worker() for _ in range(self.size)), return_exceptions=True
        )
        errors = [r for r in results if isinstance(r, BaseException)]
        for result in results:
            if isinstance(result, _Worker):
                self._idle.put_nowait(result)
        if errors:
            await self.close()
            raise WorkerStartError(f"{len(errors)} of {self.size} workers failed: {errors[0]}")

    def ready(self) -> bool:
        """A child is alive (idle or busy), or one is being started and the last start
        did not fail: calls wait for a replacement rather than fail."""
        if self._closed:
            return False
        return bool(self._alive) or (bool(self._replacing) and not self.last_start_error)

    def pids(self) -> list[int]:
        return sorted(w.process.pid for w in self._alive if w.process.pid is not None)

    async def close(self) -> None:
        """Kill every child (calls in flight fail) and wait for them."""
        self._closed = True
        for pending in list(self._replacing):
            pending.cancel()
        workers = list(self._alive)
        self._alive.clear()
        for process in list(self._processes):  # includes children still starting
            process.kill()
        for worker in workers:
            if worker.inflight is not None:
                with contextlib.suppress(Exception):
                    await asyncio.wrap_future(worker.inflight)
        loop = asyncio.get_running_loop()
        await asyncio.gather(
            *(loop.run_in_executor(self._threads, w.reap) for w in workers),
            return_exceptions=True,
        )
        self._threads.shutdown(wait=False, cancel_futures=True)

    # -- running tasks

    async def run(
        self,
        task: Task,
        payload: bytes,
        timeout_s: float,
        *,
        deadline: float | None = None,
        request_id: str = "",
    ) -> tuple[dict[str, Any], bytes]:
        """`task(state, payload)` in an idle child, waiting for one if all are busy.

        `timeout_s` is the budget once a child has the task; `deadline` (a
        time.monotonic() value, the caller's) bounds waiting and running both.
        """
        if self._closed:
            raise Unavailable("the chunking service is shutting down", reason="NOT_READY")
        worker = await self._idle.get()
        while not worker.process.is_alive():  # died while idle: not this document's fault
            self.stats.crashed += 1
            self._replace(
                worker, kill=False, why=f"it died while idle ({_describe(worker.process.exitcode)})"
            )
            worker = await self._idle.get()
        try:
            limit = timeout_s
            if deadline is not None:
                limit = min(limit, deadline - time.monotonic())
                if limit <= 0:
                    self._idle.put_nowait(worker)
                    raise DeadlineExceeded(
                        "the call's deadline passed while waiting for a chunking worker",
                        reason="DEADLINE_EXCEEDED",
                    )
            worker.inflight = self._threads.submit(worker.call, task, payload, request_id)
            call = asyncio.wrap_future(worker.inflight)
            summary, result, recycle = await asyncio.wait_for(call, limit)
        except TimeoutError:
            self.stats.timeouts += 1
            self._replace(worker, kill=True, why="over its time budget")
            if limit < timeout_s:
                raise DeadlineExceeded(
                    "the call's deadline passed while chunking", reason="DEADLINE_EXCEEDED"
                ) from None
            raise InvalidArgument(
                f"parsing and splitting the document took longer than {timeout_s:g} s "
                "(RAGMESH_CHUNKING_PARSE_TIMEOUT_S); the work was stopped",
                reason="PARSE_TIMEOUT",
                metadata={"timeout_s": f"{timeout_s:g}"},
            ) from None
        except asyncio.CancelledError:
            self.stats.cancelled += 1
            self._replace(worker, kill=True, why="its caller went away")
            raise
        except _Failed as failed:
            self._release(worker, failed.recycle)
            raise failed.error from None
        except _Died as died:
            if self._closed:  # killed by close(): the service is stopping
                raise Unavailable(
                    "the chunking service stopped while chunking", reason="NOT_READY"
                ) from None
            self.stats.crashed += 1
            self._replace(worker, kill=False, why=f"it died ({_describe(died.exitcode)})")
            raise _death_error(died.exitcode, self._memory_mb) from None
        self._release(worker, recycle)
        return summary, result

    def _release(self, worker: _Worker, recycle: bool) -> None:
        if recycle:
            self.stats.recycled += 1
            self._replace(worker, kill=False, why="it used much of its memory cap")
        else:
            self._idle.put_nowait(worker)

    def _replace(self, worker: _Worker, *, kill: bool, why: str) -> None:
        """Retire `worker` (killing it if asked) and start a replacement in the background."""
        self._alive.discard(worker)
        if kill:
            worker.process.kill()
        log.warning("%s worker %s replaced: %s", self.name, worker.process.pid, why)
        if self._closed:
            return
        task = asyncio.get_running_loop().create_task(self._replacement(worker))
        self._replacing.add(task)
        task.add_done_callback(self._replacing.discard)

    async def _replacement(self, old: _Worker) -> None:
        loop = asyncio.get_running_loop()
        if old.inflight is not None:  # its thread ends once the dead child's pipe says EOF
            with contextlib.suppress(Exception):
                await asyncio.wrap_future(old.inflight)
        await loop.run_in_executor(self._threads, old.reap)
        for attempt in range(sys.maxsize):
            if self._closed:
                return
            try:
                worker = await self._start_worker()
            except WorkerStartError as exc:  # last_start_error is set: not ready meanwhile
                delay = _RESTART_BACKOFF_S[min(attempt, len(_RESTART_BACKOFF_S) - 1)]
                log.error("%s worker failed to start (retrying in %gs): %s", self.name, delay, exc)
                await asyncio.sleep(delay)
                continue
            if self._closed:
                worker.process.kill()
                await loop.run_in_executor(self._threads, worker.reap)
                return
            log.info(
                "%s worker %s ready (replacing %s)", self.name, worker.process.pid, old.process.pid
            )
            self.last_start_error = ""
            self._idle.put_nowait(worker)
            return

    async def _start_worker(self) -> _Worker:
        loop = asyncio.get_running_loop()
        worker = await loop.run_in_executor(self._threads, self._spawn)
        self._alive.add(worker)
        self.stats.started += 1
        return worker

    def _spawn(self) -> _Worker:
        ours, theirs = self._context.Pipe(duplex=True)
        process = self._context.Process(
            target=child_main,
            args=(theirs, self._init, self._init_args, self._memory_mb, os.getpid()),
            name=f"{self.name}-worker",
            daemon=True,
        )
        process.start()
        self._processes.add(process)
        theirs.close()  # the child's end lives in the child only: its death is our EOF
        worker = _Worker(process, ours, self._processes)
        try:
            if not ours.poll(self._start_timeout_s):
                raise WorkerStartError(f"no answer after {self._start_timeout_s:g} s")
            reply = ours.recv()
        except (EOFError, OSError):
            reply = ("failed", f"exited while starting ({_describe(worker.reap())})")
        except WorkerStartError as exc:
            reply = ("failed", str(exc))
        if reply[0] != "ready":
            process.kill()
            worker.reap()
            self.last_start_error = str(reply[1])
            raise WorkerStartError(str(reply[1]))
        return worker


def _describe(exitcode: int | None) -> str:
    if exitcode is None:
        return "exit status unknown"
    if exitcode < 0:
        try:
            return f"killed by {signal.Signals(-exitcode).name}"
        except ValueError:
            return f"killed by signal {-exitcode}"
    return f"exit code {exitcode}"


def _death_error(exitcode: int | None, memory_mb: int) -> ServiceError:
    """What a child's unexpected death says about the document it was working on.

    SIGKILL that we did not send is the kernel's OOM killer; SIGABRT is how the
    tokenizer (Rust) and C libraries fail an allocation under the memory cap.
    Anything else is a crash of a parser on this document.
    """
    how = _describe(exitcode)
    if exitcode in (-signal.SIGKILL, -signal.SIGABRT):
        return InvalidArgument(
            f"the worker process chunking the document was {how}, most likely out of "
            f"memory ({memory_mb} MiB per worker, RAGMESH_CHUNKING_WORKER_MEMORY_MB)",
            reason="DOCUMENT_TOO_COMPLEX",
            metadata={"limit": "worker_memory_mb", "worker_exit": how},
        )
    return Internal(
        f"the worker process chunking the document crashed ({how}); it was replaced",
        reason="PARSER_CRASHED",
        metadata={"worker_exit": how},
    )
