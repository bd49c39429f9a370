"""The order LiteGate imposes on one Milvus Lite collection's calls (threads, no Milvus):
reads together, writes one at a time, a flush alone and ahead of new arrivals."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import pytest

from services.retrieval.lite_gate import GateTimeout, LiteGate


class Probe:
    """Runs `enter` in a thread and records when it got in; `leave` lets it out."""

    def __init__(self, enter: Callable[[], object]) -> None:
        self.entered = threading.Event()
        self.left = threading.Event()
        self._release = threading.Event()

        def run() -> None:
            with enter():  # type: ignore[attr-defined]
                self.entered.set()
                self._release.wait(10)
            self.left.set()

        self.thread = threading.Thread(target=run, daemon=True)
        self.thread.start()

    def leave(self) -> None:
        self._release.set()
        assert self.left.wait(5)


SHORT = 0.2  # how long "does not get in" is watched


def test_reads_run_together_and_alongside_one_write() -> None:
    gate = LiteGate()
    a, b = Probe(lambda: gate.read("kb")), Probe(lambda: gate.read("kb"))
    w = Probe(lambda: gate.write("kb"))
    assert a.entered.wait(5) and b.entered.wait(5) and w.entered.wait(5)
    for p in (a, b, w):
        p.leave()


@pytest.mark.parametrize("kind", ["write", "exclusive"])
def test_writes_and_flushes_to_one_collection_run_one_at_a_time(kind: str) -> None:
    gate = LiteGate()
    enter = getattr(gate, kind)
    first = Probe(lambda: enter("kb"))
    assert first.entered.wait(5)
    second = Probe(lambda: enter("kb"))
    other = Probe(lambda: enter("other_kb"))  # another collection is not held up
    assert other.entered.wait(5)
    assert not second.entered.wait(SHORT)
    first.leave()
    assert second.entered.wait(5)
    second.leave()
    other.leave()


def test_a_flush_waits_for_reads_and_writes_and_holds_new_ones_back() -> None:
    gate = LiteGate()
    reading, writing = Probe(lambda: gate.read("kb")), Probe(lambda: gate.write("kb"))
    assert reading.entered.wait(5) and writing.entered.wait(5)
    flush = Probe(lambda: gate.exclusive("kb"))
    assert not flush.entered.wait(SHORT)
    late_read = Probe(lambda: gate.read("kb"))  # arrives while the flush waits
    assert not late_read.entered.wait(SHORT)
    reading.leave()
    assert not flush.entered.wait(SHORT)  # the write is still under way
    writing.leave()
    assert flush.entered.wait(5)
    assert not late_read.entered.wait(SHORT)
    flush.leave()
    assert late_read.entered.wait(5)
    # The read let in after the flush still holds the next flush back.
    next_flush = Probe(lambda: gate.exclusive("kb"))
    assert not next_flush.entered.wait(SHORT)
    late_read.leave()
    assert next_flush.entered.wait(5)
    next_flush.leave()


def test_waits_end_at_the_timeout_and_a_flush_given_up_on_holds_no_one_back() -> None:
    gate = LiteGate()
    reading = Probe(lambda: gate.read("kb"))
    assert reading.entered.wait(5)
    started = time.monotonic()
    with pytest.raises(GateTimeout), gate.exclusive("kb", timeout=0.1):
        pass
    assert 0.1 <= time.monotonic() - started < 2
    with gate.read("kb", timeout=1):  # no flush waiting any more
        pass
    flushing = Probe(lambda: gate.exclusive("kb", timeout=5))
    reading.leave()
    assert flushing.entered.wait(5)
    with pytest.raises(GateTimeout), gate.read("kb", timeout=0.1):
        pass
    with pytest.raises(GateTimeout), gate.write("kb", timeout=0.1):
        pass
    flushing.leave()
    with gate.write("kb", timeout=1):
        pass
