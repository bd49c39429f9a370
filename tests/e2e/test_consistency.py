"""Records and index that agree with each other, and originals that are kept —
against real services with a Redis of this module's own (AOF):

(a) the index lost (every collection dropped) while Redis is intact: `kb check`
    reports the missing collections, `--repair` rebuilds them from the kept
    originals and searches answer as before;
(b) Redis restored from an older AOF copy while Milvus is newer: the check
    reports the chunks of documents that have no record, and --repair deletes them;
(d) a re-index while a client keeps searching: no search fails, and the
    knowledge base ends on its new collection with the same answers.
Also: originals download byte for byte, the normalised text pages, and both
count in the tenant's stored bytes.
"""

from __future__ import annotations

import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
import redis

from devstack.procs import ManagedProcess, port_open
from ragmesh.gateway.v1 import gateway_pb2 as pb
from ragmesh.retrieval.v1 import retrieval_pb2
from services.jobs.keys import Keys
from services.jobs.quotas import Usage
from tests.e2e.conftest import Stack, build_stack

TOPICS = {
    "otters.md": "# Sea otters\n\nSea otters hold hands while they sleep so that they do not "
    "drift apart. They use rocks to crack open clams and urchins.",
    "volcano.txt": "Mount Etna on Sicily is one of the most active volcanoes in the world; "
    "its eruptions have been recorded for about 2,700 years.",
    "bread.md": "# Sourdough\n\nA sourdough starter is flour and water fermented by wild "
    "yeast and lactobacilli; it leavens bread without baker's yeast.",
}
LATER = {
    "comet.txt": "Halley's comet returns every 75 to 79 years and was last seen from Earth in "
    "1986; it will come back in 2061.",
}
QUESTIONS = {
    "Why do sea otters hold hands?": "otters.md",
    "Which volcano on Sicily erupts often?": "volcano.txt",
    "What leavens sourdough bread?": "bread.md",
}


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
        tmp_path_factory.mktemp("milvus-consistency"),
        log_dir,
        gateway_env={"RAGMESH_GATEWAY_SWEEP_AFTER_S": "1"},
    )
    try:
        yield s
    finally:
        for proc in s.workers:
            proc.stop()


def ingest(stack: Stack, kb: str, docs: dict[str, str]) -> None:
    for name, text in docs.items():
        job = stack.wait(stack.upload(kb, name, text.encode()).job.job_id)
        assert job.state == pb.JOB_STATE_SUCCEEDED, job


def answers(stack: Stack, kb: str) -> dict[str, list[str]]:
    """The top three documents for each question."""
    return {q: [h.document_id for h in stack.search(kb, q, top_k=3)] for q in QUESTIONS}


def check(stack: Stack, kb: str, repair: bool = False) -> pb.CheckKnowledgeBaseResponse:
    return stack.call(
        "CheckKnowledgeBase", pb.CheckKnowledgeBaseRequest(knowledge_base_id=kb, repair=repair)
    )


def wait_jobs(stack: Stack, report: pb.CheckKnowledgeBaseResponse) -> None:
    for finding in report.findings:
        if finding.job_id:
            assert stack.wait(finding.job_id).state == pb.JOB_STATE_SUCCEEDED


def test_originals_are_kept_byte_for_byte_with_their_text(stack: Stack) -> None:
    stack.call("CreateKnowledgeBase", pb.CreateKnowledgeBaseRequest(knowledge_base_id="orig"))
    ingest(stack, "orig", {"otters.md": TOPICS["otters.md"]})
    messages = list(
        stack.rag.DownloadDocument(
            pb.DownloadDocumentRequest(knowledge_base_id="orig", document_id="otters.md"),
            metadata=[("authorization", "Bearer alpha-key-0001")],
            timeout=30,
        )
    )
    assert messages[0].header.file_name == "otters.md"
    assert b"".join(m.data for m in messages[1:]) == TOPICS["otters.md"].encode()
    text = stack.normalized_text(TOPICS["otters.md"].encode(), "otters.md")
    page = stack.call(
        "GetDocumentText",
        pb.GetDocumentTextRequest(
            knowledge_base_id="orig", document_id="otters.md", max_chars=1024
        ),
    )
    assert (page.text, page.total_chars, page.next_offset) == (text, len(text), 0)
    tail = stack.call(
        "GetDocumentText",
        pb.GetDocumentTextRequest(
            knowledge_base_id="orig", document_id="otters.md", offset=10, max_chars=1024
        ),
    )
    assert tail.text == text[10:] and tail.offset == 10
    usage = Usage.read(redis.Redis.from_url(stack.worker_env["RAGMESH_REDIS_URL"]), Keys(), "alpha")
    assert usage.stored_bytes >= len(TOPICS["otters.md"].encode())
    # Deleting the document deletes its original.
    stack.call(
        "DeleteDocument",
        pb.DeleteDocumentRequest(knowledge_base_id="orig", document_id="otters.md"),
    )
    blobs = Path(stack.worker_env["RAGMESH_BLOB_DIR"])
    assert not list(blobs.glob("originals/alpha/orig/otters.md/*"))


def test_a_lost_index_is_reported_and_rebuilt_from_the_originals(stack: Stack) -> None:
    stack.call("CreateKnowledgeBase", pb.CreateKnowledgeBaseRequest(knowledge_base_id="lost"))
    ingest(stack, "lost", TOPICS)
    before = answers(stack, "lost")
    assert [v[0] for v in before.values()] == list(QUESTIONS.values())
    assert check(stack, "lost").findings == []
    # The Milvus data of the knowledge base is lost; Redis keeps its records.
    stack.retrieval.DeleteCollection(
        retrieval_pb2.DeleteCollectionRequest(name=stack.collection("alpha", "lost")), timeout=30
    )
    report = check(stack, "lost")
    kinds = sorted(pb.Inconsistency.Name(f.kind) for f in report.findings)
    assert kinds == ["INCONSISTENCY_CHUNK_COUNT"] * 3 + ["INCONSISTENCY_COLLECTION_MISSING"]
    repaired = check(stack, "lost", repair=True)
    wait_jobs(stack, repaired)
    assert len([f for f in repaired.findings if f.job_id]) == 3
    assert check(stack, "lost").findings == []
    assert answers(stack, "lost") == before


def test_an_older_redis_leaves_orphan_chunks_that_repair_removes(
    stack: Stack, redis_proc: ManagedProcess, redis_data: Path, tmp_path: Path
) -> None:
    stack.call("CreateKnowledgeBase", pb.CreateKnowledgeBaseRequest(knowledge_base_id="older"))
    ingest(stack, "older", TOPICS)
    port = redis_proc.port  # type: ignore[attr-defined]
    redis_proc.stop()  # a consistent copy of the AOF: Redis stopped
    shutil.copytree(redis_data, tmp_path / "redis-backup")
    _start(redis_proc, port)
    _wait_answering(stack)
    ingest(stack, "older", LATER)  # Milvus moves on
    redis_proc.stop()
    shutil.rmtree(redis_data)
    shutil.copytree(tmp_path / "redis-backup", redis_data)  # Redis goes back
    _start(redis_proc, port)
    _wait_answering(stack)
    report = check(stack, "older")
    assert [(pb.Inconsistency.Name(f.kind), f.document_id) for f in report.findings] == [
        ("INCONSISTENCY_ORPHAN_CHUNKS", "comet.txt")
    ]
    assert stack.search("older", "When does Halley's comet come back?", top_k=1)[0].document_id == (
        "comet.txt"
    )
    check(stack, "older", repair=True)
    assert check(stack, "older").findings == []
    assert stack.stored_chunks("alpha", "older", "comet.txt") == []


def test_a_reindex_switches_while_searches_keep_working(stack: Stack) -> None:
    stack.call("CreateKnowledgeBase", pb.CreateKnowledgeBaseRequest(knowledge_base_id="re"))
    ingest(stack, "re", TOPICS)
    before = answers(stack, "re")
    old = stack.collection("alpha", "re")
    failures: list[BaseException] = []
    done = threading.Event()

    def search_forever() -> None:
        while not done.is_set():
            try:
                assert answers(stack, "re") == before
            except BaseException as exc:
                failures.append(exc)
            time.sleep(0.05)

    searcher = threading.Thread(target=search_forever)
    searcher.start()
    try:
        started = stack.call(
            "ReindexKnowledgeBase", pb.ReindexKnowledgeBaseRequest(knowledge_base_id="re")
        )
        assert started.documents == 3 and started.collection != old
        kb = stack.call(
            "GetKnowledgeBase", pb.GetKnowledgeBaseRequest(knowledge_base_id="re")
        ).knowledge_base
        if stack.collection("alpha", "re") == old:  # not switched yet: progress is shown
            assert kb.reindex.collection == started.collection
            assert kb.reindex.documents_done + kb.reindex.documents_pending == 3
        deadline = time.monotonic() + 180
        while stack.collection("alpha", "re") != started.collection:
            assert time.monotonic() < deadline, "the re-index did not switch"
            time.sleep(0.5)
        time.sleep(1)
    finally:
        done.set()
        searcher.join()
    assert failures == [], failures[:3]
    assert answers(stack, "re") == before
    kb = stack.call("GetKnowledgeBase", pb.GetKnowledgeBaseRequest(knowledge_base_id="re"))
    assert not kb.knowledge_base.HasField("reindex")
    assert check(stack, "re").findings == []
    # The old collection is dropped once nothing uses it.
    deadline = time.monotonic() + 60
    while True:
        try:
            stack.retrieval.GetCollection(retrieval_pb2.GetCollectionRequest(name=old), timeout=30)
        except grpc.RpcError as err:
            assert err.code() == grpc.StatusCode.NOT_FOUND  # type: ignore[attr-defined]
            break
        assert time.monotonic() < deadline, "the old collection was not dropped"
        time.sleep(0.5)


def _start(proc: ManagedProcess, port: int) -> None:
    proc.start()
    proc.wait_until(lambda: port_open("127.0.0.1", port), 30, "Redis port")


def _wait_answering(stack: Stack) -> None:
    deadline = time.monotonic() + 30
    while True:
        try:
            stack.call("ListKnowledgeBases", pb.ListKnowledgeBasesRequest())
            return
        except grpc.RpcError:
            assert time.monotonic() < deadline, "the gateway did not come back"
            time.sleep(0.3)


def test_a_failed_replacement_leaves_the_indexed_version_readable_and_consistent(
    stack: Stack,
) -> None:
    stack.call("CreateKnowledgeBase", pb.CreateKnowledgeBaseRequest(knowledge_base_id="repl"))
    ingest(stack, "repl", {"volcano.txt": TOPICS["volcano.txt"]})
    blobs = Path(stack.worker_env["RAGMESH_BLOB_DIR"]) / "originals/alpha/repl/volcano.txt"
    kept = [p.name for p in blobs.iterdir()]
    assert len(kept) == 1
    # A replacement that fails (no text in it): search still finds the version indexed,
    # so its text stays readable (citations open it) and the check finds nothing to repair.
    failed = stack.wait(stack.upload("repl", "volcano.txt", b"  \n\n ").job.job_id)
    assert failed.state == pb.JOB_STATE_FAILED and failed.error.reason == "NO_TEXT_CONTENT"
    hit = stack.search("repl", "Which volcano on Sicily erupts often?", top_k=1)[0]
    page = stack.call(
        "GetDocumentText",
        pb.GetDocumentTextRequest(knowledge_base_id="repl", document_id="volcano.txt"),
    )
    assert hit.document_id == "volcano.txt"
    assert page.text[hit.start_offset : hit.end_offset] in hit.text and "Etna" in page.text
    assert page.document_version and page.document_version in kept[0]
    assert list(check(stack, "repl").findings) == []
    # A replacement that succeeds drops the earlier version's original and text.
    # The worker deletes it right after it commits the job's end (never before: a failed
    # commit must leave it), so the job can read SUCCEEDED a moment before the file goes.
    ingest(stack, "repl", {"volcano.txt": TOPICS["volcano.txt"] + " It is 3,357 m high."})
    deadline = time.monotonic() + 10
    while len(now := [p.name for p in blobs.iterdir()]) > 1 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(now) == 1 and now != kept
