"""Counts every message that enters an ingestion queue, per job, by watching
the broker itself: Redis MONITOR streams every command the server executes,
so each LPUSH/RPUSH onto the queue's lists (a send by the gateway or by its
reaper, a Celery retry, a kombu restore from `unacked`) is seen, whoever
issued it. Nothing in ragmesh's code is instrumented for this.

A push's payload is the kombu envelope: its base64 body holds the task's
arguments (the job id first) and its `id` header the Celery task id, which
tells a new message (a send) from the same message put back (a restore).
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import socket
import threading
from collections import defaultdict
from dataclasses import dataclass, field
from types import TracebackType

import redis

from services.jobs.queue import priority_lists

_PUSH = re.compile(rb'^\S+ \[\d+ [^\]]*\] "(LPUSH|RPUSH)" "((?:[^"\\]|\\.)*)" "(.*)"$')
_BODY = re.compile(rb'^\{\\"body\\": \\"([A-Za-z0-9+/=]*)\\"')
_TASK_ID = re.compile(rb'\\"id\\": \\"([0-9a-f-]{36})\\"')


def _unescape_key(raw: bytes) -> str:
    """A key as MONITOR prints it (`\\x06` for control bytes) → the key."""
    return raw.decode("unicode_escape")


@dataclass
class Pushes:
    #: job id → pushes onto the queue (sends, retries, restores)
    pushes: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    #: job id → distinct Celery task ids among them (distinct messages)
    messages: dict[str, set[str]] = field(default_factory=lambda: defaultdict(set))
    unreadable: int = 0


class QueueMonitor:
    """MONITOR in a thread while the `with` block runs; `pushes` when it ends."""

    def __init__(self, redis_url: str, queue: str) -> None:
        self.client = redis.Redis.from_url(redis_url)
        self.lists = set(priority_lists(queue))
        self.result = Pushes()
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="queue-monitor", daemon=True)

    def __enter__(self) -> QueueMonitor:
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("MONITOR did not start")
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def stop(self) -> Pushes:
        self._stop.set()
        self._thread.join(15)
        self.client.close()
        if self._error is not None:
            raise RuntimeError("the queue monitor failed") from self._error
        return self.result

    def _run(self) -> None:
        # A plain socket: MONITOR replies are RESP simple strings, one a line.
        kwargs = self.client.connection_pool.connection_kwargs
        try:
            with socket.create_connection((kwargs["host"], kwargs["port"]), timeout=5) as sock:
                if kwargs.get("password"):
                    sock.sendall(f"AUTH {kwargs['password']}\r\n".encode())
                sock.sendall(b"MONITOR\r\n")
                sock.settimeout(0.2)
                buffer = b""
                while not self._stop.is_set():
                    try:
                        data = sock.recv(1 << 20)
                    except TimeoutError:
                        continue
                    if not data:
                        raise ConnectionError("Redis closed the MONITOR connection")
                    buffer += data
                    *lines, buffer = buffer.split(b"\r\n")
                    for line in lines:
                        if line == b"+OK":
                            self._ready.set()
                        elif line.startswith(b"-"):
                            raise RuntimeError(line.decode(errors="replace"))
                        elif b'PUSH" "' in line:
                            self._count(line[1:])
        except BaseException as exc:  # surfaced by stop()
            self._error = exc
            self._ready.set()

    def _count(self, line: bytes) -> None:
        push = _PUSH.match(line)
        if push is None or _unescape_key(push.group(2)) not in self.lists:
            return
        body, task = _BODY.match(push.group(3)), _TASK_ID.search(push.group(3))
        try:
            assert body is not None and task is not None
            args = json.loads(base64.b64decode(body.group(1)))[0]
            job_id = str(args[0])
        except (AssertionError, ValueError, IndexError, TypeError, binascii.Error):
            self.result.unreadable += 1
            return
        self.result.pushes[job_id] += 1
        self.result.messages[job_id].add(task.group(1).decode())
