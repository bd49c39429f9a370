"""Ordering of the calls to one Milvus Lite collection: a flush runs alone.

Milvus Lite 3.2 (pure Python, a thread per gRPC call, no lock between them) is
unsafe around a flush:

- the flush swaps in a fresh MemTable before it takes its lock, and a query
  takes its segment snapshot and the *current* MemTable at different moments:
  a query or search running while a flush is under way can miss every row of
  the MemTable being flushed — rows whose writes were acknowledged. Measured
  (scripts/lite_flush_race.py, a writer flushing every 40 rows, two readers
  counting): 5-13 short counts in each of 4 runs of 100 batches; with this gate
  none. This is what a
  clean-clone CI run saw as a SUCCEEDED document's chunks missing from
  ListChunks once flushes were deferred into the moments users read;
- an insert writes its WAL and then its MemTable without a lock: one that
  runs while a flush swaps them can land in the pair being flushed and closed,
  and two inserts can draw the same sequence numbers.

The retrieval service is Milvus Lite's only client (Lite is one process's
database file), so it orders the calls itself: reads run together, with each
other and with one write; writes to a collection run one at a time; a flush
waits for the reads and the write under way, and holds back new ones while it
waits (it is short, and a stream of searches must not starve it). Milvus
servers need none of this (MilvusStore uses the gate on Lite only).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass


class GateTimeout(TimeoutError):
    pass


@dataclass
class _State:
    active: int = 0  # reads and writes under way
    flushing: bool = False
    flushes_waiting: int = 0
    writing: bool = False


class LiteGate:
    """Per collection: shared reads, one write at a time, exclusive flushes."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._states: dict[str, _State] = {}

    def _state(self, name: str) -> _State:
        # Kept for good (a few bytes per collection): forgetting an idle one would
        # split the callers that are waiting on it from those that come next.
        return self._states.setdefault(name, _State())

    def _wait(self, ready: Callable[[], bool], timeout: float | None) -> None:
        if not self._cond.wait_for(ready, timeout):
            raise GateTimeout("a flush of the collection did not end in time")

    @contextmanager
    def read(self, name: str, timeout: float | None = None) -> Iterator[None]:
        with self._cond:
            state = self._state(name)
            self._wait(lambda: not (state.flushing or state.flushes_waiting), timeout)
            state.active += 1
        try:
            yield
        finally:
            with self._cond:
                state.active -= 1
                self._cond.notify_all()

    @contextmanager
    def write(self, name: str, timeout: float | None = None) -> Iterator[None]:
        with self._cond:
            state = self._state(name)
            self._wait(
                lambda: not (state.flushing or state.flushes_waiting or state.writing), timeout
            )
            state.active += 1
            state.writing = True
        try:
            yield
        finally:
            with self._cond:
                state.active -= 1
                state.writing = False
                self._cond.notify_all()

    @contextmanager
    def exclusive(self, name: str, timeout: float | None = None) -> Iterator[None]:
        """A flush (or a drop): nothing else on the collection meanwhile."""
        with self._cond:
            state = self._state(name)
            state.flushes_waiting += 1
            try:
                self._wait(lambda: not (state.active or state.flushing), timeout)
            finally:
                state.flushes_waiting -= 1
                self._cond.notify_all()  # a flush given up on holds no one back
            state.flushing = True
        try:
            yield
        finally:
            with self._cond:
                state.flushing = False
                self._cond.notify_all()
