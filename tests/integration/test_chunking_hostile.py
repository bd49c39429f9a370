"""Hostile documents against `ragmesh serve chunking` as a real process: every
shape ends in chunks or a precise reason within its budget, and the service
keeps answering health checks and other calls within 1 s meanwhile.

Two services: one with the default budgets (the corpus), one with a tight
time budget (PARSE_TIMEOUT, cancellation, crashes, latency under load).
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import grpc
import pytest

from benchmarks.chunking_data import english_pdf
from benchmarks.hostile_data import Shape, corpus
from devstack.procs import ManagedProcess, health_status
from ragmesh.chunking.v1 import chunking_pb2, chunking_pb2_grpc
from services.common.status import error_info_of

Request = chunking_pb2.ChunkDocumentRequest
MESSAGE_BYTES = 64 * 1024 * 1024
TIGHT_BUDGET_S = 4.0
DEFAULT_BUDGET_S = 60.0
SHAPES = list(corpus())
TIMINGS: dict[str, tuple[float, str]] = {}


def _stub(addr: str) -> Iterator[chunking_pb2_grpc.ChunkingServiceStub]:
    options = [
        ("grpc.max_receive_message_length", MESSAGE_BYTES),
        ("grpc.max_send_message_length", MESSAGE_BYTES),
    ]
    with grpc.insecure_channel(addr, options=options) as channel:
        yield chunking_pb2_grpc.ChunkingServiceStub(channel)


@pytest.fixture(scope="module")
def default_service(start_ragmesh_service) -> tuple[ManagedProcess, str]:  # type: ignore[no-untyped-def]
    return start_ragmesh_service(  # type: ignore[no-any-return]
        "chunking", env={"RAGMESH_MAX_MESSAGE_BYTES": str(MESSAGE_BYTES)}
    )


@pytest.fixture(scope="module")
def tight_service(start_ragmesh_service) -> tuple[ManagedProcess, str]:  # type: ignore[no-untyped-def]
    return start_ragmesh_service(  # type: ignore[no-any-return]
        "chunking",
        env={
            "RAGMESH_MAX_MESSAGE_BYTES": str(MESSAGE_BYTES),
            "RAGMESH_CHUNKING_PARSE_TIMEOUT_S": str(TIGHT_BUDGET_S),
            "RAGMESH_CHUNKING_MAX_CONCURRENCY": "2",
        },
    )


@pytest.fixture(scope="module")
def stub(
    default_service: tuple[ManagedProcess, str],
) -> Iterator[chunking_pb2_grpc.ChunkingServiceStub]:
    yield from _stub(default_service[1])


@pytest.fixture(scope="module")
def tight_stub(
    tight_service: tuple[ManagedProcess, str],
) -> Iterator[chunking_pb2_grpc.ChunkingServiceStub]:
    yield from _stub(tight_service[1])


@pytest.fixture(scope="module")
def slow_pdf() -> bytes:
    """A genuine PDF that takes well over TIGHT_BUDGET_S to chunk (~23 MB, 6,000 pages:
    PDFium reads ~600 pages a second here)."""
    return english_pdf(6000, seed=3)


def _workers(proc: ManagedProcess) -> set[int]:
    """The service's worker processes (its children but multiprocessing's resource tracker)."""
    out: set[int] = set()
    for task in os.listdir(f"/proc/{proc.pid}/task"):
        with open(f"/proc/{proc.pid}/task/{task}/children") as children:
            out.update(int(pid) for pid in children.read().split())
    return {pid for pid in out if b"resource_tracker" not in _cmdline(pid)}


def _cmdline(pid: int) -> bytes:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as cmdline:
            return cmdline.read()
    except OSError:
        return b""


def _wait_for_full_pool(proc: ManagedProcess) -> None:
    """Until every worker replaced so far has a ready replacement (the service logs both)."""
    deadline = time.monotonic() + 60
    while True:
        log = proc.log_path.read_text(errors="replace")
        if log.count(" replaced: ") == log.count(" ready (replacing "):
            return
        assert time.monotonic() < deadline, "a replacement worker never became ready"
        time.sleep(0.1)


def _wait_for_new_workers(proc: ManagedProcess, old: set[int], count: int) -> set[int]:
    deadline = time.monotonic() + 60
    while True:
        now = _workers(proc)
        if len(now) == count and now != old:
            return now
        assert time.monotonic() < deadline, f"workers still {now} (were {old})"
        time.sleep(0.1)


def _outcome(stub: chunking_pb2_grpc.ChunkingServiceStub, req: Request, timeout: float) -> str:
    try:
        stub.ChunkDocument(req, timeout=timeout)
    except grpc.RpcError as err:
        info = error_info_of(err)
        assert info is not None, err.details()  # type: ignore[attr-defined]
        return info.reason
    return "OK"


@pytest.mark.parametrize("shape", SHAPES, ids=[s.name for s in SHAPES])
def test_hostile_corpus(stub: chunking_pb2_grpc.ChunkingServiceStub, shape: Shape) -> None:
    data = shape.make()
    start = time.monotonic()
    try:
        resp = stub.ChunkDocument(
            Request(content=data, media_type=shape.media_type, document_id="d"),
            timeout=DEFAULT_BUDGET_S + 30,
        )
        outcome = "OK"
        assert resp.chunks
        assert len(resp.title.encode()) <= 1024
    except grpc.RpcError as err:
        info = error_info_of(err)
        assert info is not None, err.details()  # type: ignore[attr-defined]
        outcome = info.reason
        if outcome in ("DOCUMENT_TOO_COMPLEX", "PARSE_TIMEOUT"):
            assert err.code() == grpc.StatusCode.INVALID_ARGUMENT  # type: ignore[attr-defined]
    elapsed = time.monotonic() - start
    TIMINGS[shape.name] = (elapsed, outcome)
    print(f"\n{shape.name}: {len(data):,} bytes, {elapsed:.2f} s, {outcome}")
    assert outcome == shape.outcome
    assert elapsed < DEFAULT_BUDGET_S + 5


def test_over_budget_is_parse_timeout(
    tight_stub: chunking_pb2_grpc.ChunkingServiceStub, slow_pdf: bytes
) -> None:
    start = time.monotonic()
    with pytest.raises(grpc.RpcError) as exc:
        tight_stub.ChunkDocument(
            Request(content=slow_pdf, media_type="application/pdf"), timeout=120
        )
    elapsed = time.monotonic() - start
    err = exc.value
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT  # type: ignore[attr-defined]
    info = error_info_of(err)
    assert info is not None and info.reason == "PARSE_TIMEOUT"
    assert info.metadata["timeout_s"] == f"{TIGHT_BUDGET_S:g}"
    assert TIGHT_BUDGET_S <= elapsed < TIGHT_BUDGET_S + 3
    print(f"\nPARSE_TIMEOUT after {elapsed:.2f} s (budget {TIGHT_BUDGET_S} s)")


def test_health_and_other_calls_answer_within_a_second_meanwhile(
    tight_service: tuple[ManagedProcess, str],
    tight_stub: chunking_pb2_grpc.ChunkingServiceStub,
    slow_pdf: bytes,
) -> None:
    addr = tight_service[1]
    _wait_for_full_pool(tight_service[0])
    done = threading.Event()
    health: list[float] = []
    calls: list[float] = []

    def probe() -> None:
        while not done.is_set():
            start = time.monotonic()
            assert health_status(addr) == "SERVING"
            health.append(time.monotonic() - start)
            start = time.monotonic()
            tight_stub.ChunkDocument(Request(text="A small document. Two sentences."), timeout=5)
            calls.append(time.monotonic() - start)
            time.sleep(0.1)

    with ThreadPoolExecutor(2) as threads:
        prober = threads.submit(probe)
        reason = _outcome(tight_stub, Request(content=slow_pdf, media_type="application/pdf"), 120)
        done.set()
        prober.result()
    assert reason == "PARSE_TIMEOUT"
    assert len(health) >= 5 and len(calls) >= 5
    print(
        f"\nwhile a document stalled: {len(health)} health checks, max {max(health):.3f} s; "
        f"{len(calls)} other calls, max {max(calls):.3f} s"
    )
    assert max(health) < 1.0
    assert max(calls) < 1.0


def test_a_caller_that_gives_up_stops_the_work(
    tight_service: tuple[ManagedProcess, str],
    tight_stub: chunking_pb2_grpc.ChunkingServiceStub,
    slow_pdf: bytes,
) -> None:
    proc = tight_service[0]
    _wait_for_full_pool(proc)
    before = _workers(proc)
    assert len(before) == 2
    # The deadline passes at the client: the service kills the child at once.
    with pytest.raises(grpc.RpcError) as exc:
        tight_stub.ChunkDocument(Request(content=slow_pdf, media_type="application/pdf"), timeout=1)
    assert exc.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED  # type: ignore[attr-defined]
    after = _wait_for_new_workers(proc, before, 2)
    assert len(before - after) == 1
    # A cancelled call too.
    future = tight_stub.ChunkDocument.future(
        Request(content=slow_pdf, media_type="application/pdf"), timeout=120
    )
    time.sleep(1.0)
    future.cancel()
    start = time.monotonic()
    replaced = _wait_for_new_workers(proc, after, 2)
    assert len(after - replaced) == 1
    assert time.monotonic() - start < TIGHT_BUDGET_S  # well before the budget would have
    assert health_status(tight_service[1]) == "SERVING"


def test_a_worker_that_crashes_fails_its_call_precisely(
    tight_service: tuple[ManagedProcess, str],
    tight_stub: chunking_pb2_grpc.ChunkingServiceStub,
    slow_pdf: bytes,
) -> None:
    proc = tight_service[0]
    _wait_for_full_pool(proc)
    workers = _workers(proc)
    assert len(workers) == 2
    req = Request(content=slow_pdf, media_type="application/pdf")
    with ThreadPoolExecutor(2) as threads:
        calls = [threads.submit(_outcome, tight_stub, req, 120) for _ in range(2)]
        time.sleep(1.0)  # both workers busy
        os.kill(min(workers), signal.SIGSEGV)
        reasons = sorted(c.result() for c in calls)
    assert reasons == ["PARSER_CRASHED", "PARSE_TIMEOUT"]
    _wait_for_new_workers(proc, workers, 2)
    assert health_status(tight_service[1]) == "SERVING"
