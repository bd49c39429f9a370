"""Deletes never leave searchable chunks, and outages reach callers as
UNAVAILABLE without details — against real services, with a retrieval service
whose Milvus deletes fail on demand (RAGMESH_RETRIEVAL_FAULTS) and then for real
(the retrieval service, which holds Milvus Lite, SIGKILLed mid-delete), and a
Redis of this module's own that is stopped and started."""

from __future__ import annotations

import contextlib
import re
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import grpc
import pytest
import redis

from devstack.procs import ManagedProcess, health_status, port_open
from ragmesh.common.v1 import common_pb2
from ragmesh.gateway.v1 import gateway_pb2 as pb
from ragmesh.retrieval.v1 import retrieval_pb2
from services.common.status import error_info_of, retry_delay_of
from services.jobs.keys import Keys
from tests.e2e.conftest import ALPHA_KEY, BETA_KEY, Stack, build_stack

# The gateway's channel retries an idempotent call on UNAVAILABLE (4 attempts in
# all): 4 failures make one failed call, more are left for the sweeper.
FAULTS = "delete_document_chunks=6,delete_collection=4"
# Whatever a caller sees of an outage must not name a host, a port, a URL, a
# path or a Python exception.
LEAKS = re.compile(r"127\.0\.0\.1|localhost|:\d{4,5}\b|https?://|/tmp/|Error\b|Exception\b")
BUFFER = 1024 * 1024  # the gateway's in-flight upload bytes, over every stream
DOC = "\n\n".join(
    f"Section {i}. The zebra finch number {i} sings a song of {i * 7} notes at dawn."
    for i in range(12)
)


@pytest.fixture(scope="module")
def stack(
    redis_proc: ManagedProcess,
    start_ragmesh_service: Any,
    tmp_path_factory: pytest.TempPathFactory,
    log_dir: Path,
) -> Iterator[Stack]:
    s = build_stack(
        start_ragmesh_service,
        f"redis://127.0.0.1:{redis_proc.port}/0",  # type: ignore[attr-defined]
        tmp_path_factory.mktemp("milvus-deletes"),
        log_dir,
        retrieval_env={"RAGMESH_RETRIEVAL_FAULTS": FAULTS},
        gateway_env={
            "RAGMESH_GATEWAY_UPLOAD_IDLE_TIMEOUT_S": "2",
            "RAGMESH_GATEWAY_SWEEP_AFTER_S": "3",
            "RAGMESH_GATEWAY_UPLOAD_BUFFER_BYTES": str(BUFFER),
        },
    )
    try:
        yield s
    finally:
        for proc in s.workers:
            proc.stop()


def expect(code: grpc.StatusCode, reason: str, call: Callable[..., Any], *args: Any) -> Any:
    with pytest.raises(grpc.RpcError) as exc:
        call(*args)
    err = exc.value
    info = error_info_of(err)  # type: ignore[arg-type]
    assert err.code() == code and info is not None and info.reason == reason, (  # type: ignore[attr-defined]
        err.code(),  # type: ignore[attr-defined]
        err.details(),  # type: ignore[attr-defined]
    )
    return err


def ingest(stack: Stack, kb: str, name: str) -> None:
    stack.call("CreateKnowledgeBase", pb.CreateKnowledgeBaseRequest(knowledge_base_id=kb))
    job = stack.wait(stack.upload(kb, name, DOC.encode()).job.job_id)
    assert job.state == pb.JOB_STATE_SUCCEEDED, job


def hits_of(stack: Stack, kb: str, document_id: str) -> list[common_pb2.Citation]:
    hits = stack.search(kb, "zebra finch song at dawn", top_k=10)
    return [h for h in hits if h.document_id == document_id]


def searchable(stack: Stack, kb: str, document_id: str) -> list[common_pb2.Citation] | None:
    """The document's hits, or None while the stack answers UNAVAILABLE."""
    try:
        return hits_of(stack, kb, document_id)
    except grpc.RpcError as err:
        assert err.code() == grpc.StatusCode.UNAVAILABLE, err  # type: ignore[attr-defined]
        return None


def pending(stack: Stack) -> tuple[set[bytes], set[bytes]]:
    client = redis.Redis.from_url(stack.worker_env["RAGMESH_REDIS_URL"])
    try:
        keys = Keys()
        return (
            set(client.zrange(keys.deleting_docs, 0, -1)),
            set(client.zrange(keys.deleting_kbs, 0, -1)),
        )
    finally:
        client.close()


def wait_until(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"still not {what} after {timeout:.0f}s"
        time.sleep(0.5)


def test_a_failed_document_delete_hides_it_and_the_sweeper_finishes(stack: Stack) -> None:
    ingest(stack, "faulty", "finches.md")
    collection = stack.collection("alpha", "faulty")
    assert hits_of(stack, "faulty", "finches.md")
    err = expect(
        grpc.StatusCode.UNAVAILABLE,
        "MILVUS_UNAVAILABLE",
        stack.call,
        "DeleteDocument",
        pb.DeleteDocumentRequest(knowledge_base_id="faulty", document_id="finches.md"),
    )
    assert not LEAKS.search(err.details()), err.details()
    assert retry_delay_of(err) is not None  # a caller may simply call again
    # The chunks are still in Milvus, but nobody sees them any more.
    assert stack.stored_chunks("alpha", "faulty", "finches.md")
    assert hits_of(stack, "faulty", "finches.md") == []
    expect(
        grpc.StatusCode.NOT_FOUND,
        "DOCUMENT_NOT_FOUND",
        stack.call,
        "GetDocument",
        pb.GetDocumentRequest(knowledge_base_id="faulty", document_id="finches.md"),
    )
    listed = stack.call("ListDocuments", pb.ListDocumentsRequest(knowledge_base_id="faulty"))
    assert list(listed.documents) == []
    # The sweeper (every second here) finishes once the faults are used up.
    wait_until(lambda: not pending(stack)[0], 60, "swept")
    assert stack.stored_chunks("alpha", "faulty", "finches.md") == []
    kb = stack.call("GetKnowledgeBase", pb.GetKnowledgeBaseRequest(knowledge_base_id="faulty"))
    assert (kb.knowledge_base.document_count, kb.knowledge_base.chunk_count) == (0, 0)
    assert collection == stack.collection("alpha", "faulty")


def test_a_failed_kb_delete_is_final_for_the_tenant_and_recreate_gets_a_new_collection(
    stack: Stack,
) -> None:
    ingest(stack, "gone", "finches.md")
    old = stack.collection("alpha", "gone")
    expect(
        grpc.StatusCode.UNAVAILABLE,
        "MILVUS_UNAVAILABLE",
        stack.call,
        "DeleteKnowledgeBase",
        pb.DeleteKnowledgeBaseRequest(knowledge_base_id="gone"),
    )
    listed = stack.call("ListKnowledgeBases", pb.ListKnowledgeBasesRequest())
    assert "gone" not in [k.knowledge_base_id for k in listed.knowledge_bases]
    expect(
        grpc.StatusCode.NOT_FOUND,
        "KNOWLEDGE_BASE_NOT_FOUND",
        stack.search,
        "gone",
        "zebra finch",
    )
    # Made again at once: a new, empty collection, never the old one's chunks.
    stack.call("CreateKnowledgeBase", pb.CreateKnowledgeBaseRequest(knowledge_base_id="gone"))
    assert stack.collection("alpha", "gone") != old
    assert stack.search("gone", "zebra finch song at dawn") == []
    wait_until(lambda: not pending(stack)[1], 60, "swept")
    expect(
        grpc.StatusCode.NOT_FOUND,
        "COLLECTION_NOT_FOUND",
        stack.retrieval.GetCollection,
        retrieval_pb2.GetCollectionRequest(name=old),
    )


def test_deletes_while_milvus_is_killed_leave_no_chunk(stack: Stack) -> None:
    ingest(stack, "crash", "finches.md")
    ingest(stack, "crash2", "finches.md")
    crash2 = stack.collection("alpha", "crash2")
    retrieval = stack.retrieval_proc
    assert retrieval is not None
    retrieval.kill()  # Milvus Lite lives in the retrieval service's process
    for request, method in (
        (
            pb.DeleteDocumentRequest(knowledge_base_id="crash", document_id="finches.md"),
            "DeleteDocument",
        ),
        (pb.DeleteKnowledgeBaseRequest(knowledge_base_id="crash2"), "DeleteKnowledgeBase"),
    ):
        err = expect(
            grpc.StatusCode.UNAVAILABLE, "DOWNSTREAM_UNAVAILABLE", stack.call, method, request
        )
        assert not LEAKS.search(err.details()), err.details()
    retrieval.start()
    addr = stack.retrieval_addr
    retrieval.wait_until(lambda: health_status(addr) == "SERVING", 180, "SERVING health")
    # From now on no search may return the deleted document while the sweeper
    # works (a search may still fail while the gateway reconnects).
    deadline = time.monotonic() + 90
    while pending(stack) != (set(), set()):
        assert searchable(stack, "crash", "finches.md") in ([], None)
        assert time.monotonic() < deadline, pending(stack)
        time.sleep(0.5)
    wait_until(lambda: searchable(stack, "crash", "finches.md") == [], 60, "searching again")
    assert stack.stored_chunks("alpha", "crash", "finches.md") == []
    expect(
        grpc.StatusCode.NOT_FOUND,
        "COLLECTION_NOT_FOUND",
        stack.retrieval.GetCollection,
        retrieval_pb2.GetCollectionRequest(name=crash2),
    )


def test_redis_down_is_unavailable_without_details(
    stack: Stack, redis_proc: ManagedProcess
) -> None:
    ingest(stack, "redis", "finches.md")
    redis_proc.stop()
    try:
        err = expect(
            grpc.StatusCode.UNAVAILABLE,
            "REDIS_UNAVAILABLE",
            stack.call,
            "GetKnowledgeBase",
            pb.GetKnowledgeBaseRequest(knowledge_base_id="redis"),
        )
        assert not LEAKS.search(err.details()), err.details()
        assert "request id" in err.details()
    finally:
        redis_proc.start()
        port = redis_proc.port  # type: ignore[attr-defined]
        redis_proc.wait_until(lambda: port_open("127.0.0.1", port), 30, "Redis port")
    # Back: the records survived (AOF) and calls work again.
    wait_until(lambda: _answers(stack, "redis"), 30, "answering after Redis came back")


def _answers(stack: Stack, kb: str) -> bool:
    try:
        stack.call("GetKnowledgeBase", pb.GetKnowledgeBaseRequest(knowledge_base_id=kb))
        return True
    except grpc.RpcError:
        return False


def test_an_idle_upload_stream_is_cut(stack: Stack) -> None:
    stack.call("CreateKnowledgeBase", pb.CreateKnowledgeBaseRequest(knowledge_base_id="idle"))

    def slow() -> Iterator[pb.UploadDocumentRequest]:
        yield pb.UploadDocumentRequest(
            header=pb.UploadHeader(knowledge_base_id="idle", file_name="slow.txt")
        )
        yield pb.UploadDocumentRequest(data=b"first piece ")
        time.sleep(4)  # the gateway waits 2 s for the next piece
        yield pb.UploadDocumentRequest(data=b"too late")

    expect(
        grpc.StatusCode.DEADLINE_EXCEEDED,
        "UPLOAD_IDLE_TIMEOUT",
        lambda: stack.rag.UploadDocument(
            slow(), metadata=[("authorization", f"Bearer {ALPHA_KEY}")], timeout=30
        ),
    )


def test_upload_memory_is_bounded_and_refusals_say_retry(stack: Stack) -> None:
    """Six 280 KB uploads sent in lockstep (64 KiB pieces) need more than the
    gateway's 1 MiB buffer: some are refused with RESOURCE_EXHAUSTED and a retry
    delay, the others go through, and the gateway serves on."""
    for key in (ALPHA_KEY, BETA_KEY):
        stack.call(
            "CreateKnowledgeBase", pb.CreateKnowledgeBaseRequest(knowledge_base_id="bulk"), key
        )
    piece, pieces = 64 * 1024, 4  # 256 KiB each, 1.5 MiB in all
    barrier = threading.Barrier(6)

    def upload(n: int) -> tuple[str, str]:
        key = (ALPHA_KEY, BETA_KEY)[n % 2]

        def messages() -> Iterator[pb.UploadDocumentRequest]:
            yield pb.UploadDocumentRequest(
                header=pb.UploadHeader(knowledge_base_id="bulk", file_name=f"u{n}.txt")
            )
            for i in range(pieces):
                barrier.wait(timeout=30) if i < 2 else None
                time.sleep(0.2)
                yield pb.UploadDocumentRequest(data=((b"%d " % n) * piece)[:piece])

        try:
            resp = stack.rag.UploadDocument(
                messages(), metadata=[("authorization", f"Bearer {key}")], timeout=60
            )
            return "accepted", resp.job.job_id
        except grpc.RpcError as err:
            info = error_info_of(err)  # type: ignore[arg-type]
            assert retry_delay_of(err) is not None, err  # type: ignore[arg-type]
            return err.code().name, info.reason if info else ""  # type: ignore[attr-defined]

    with ThreadPoolExecutor(6) as pool:
        outcomes = list(pool.map(upload, range(6)))
    refused = [o for o in outcomes if o[0] != "accepted"]
    assert refused and all(o == ("RESOURCE_EXHAUSTED", "UPLOAD_BUFFER_FULL") for o in refused)
    assert len(refused) < 6, outcomes
    assert health_status(stack.gateway) == "SERVING"
    for n, (kind, job_id) in enumerate(outcomes):
        if kind == "accepted":  # stored and queued; indexing them is not the point
            key = (ALPHA_KEY, BETA_KEY)[n % 2]
            with contextlib.suppress(grpc.RpcError):  # one may have ended already
                stack.call("CancelIngestionJob", pb.CancelIngestionJobRequest(job_id=job_id), key)
