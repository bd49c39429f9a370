"""The ingestion state in Redis: records, atomic job transitions, the reaper —
against a real redis-server (the `redis_url` fixture)."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from devstack.deps import start_redis
from devstack.procs import free_port
from services.common.errors import (
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    ResourceExhausted,
    Unavailable,
)
from services.jobs.blobs import FileBlobStore, original_key, text_key
from services.jobs.locks import DocumentLocks
from services.jobs.queue import IngestionQueue, QueueSnapshot
from services.jobs.quotas import Quotas, Usage
from services.jobs.reaper import Reaper, ReaperPolicy
from services.jobs.records import (
    DocumentRecord,
    ErrorRecord,
    JobKind,
    JobState,
    KnowledgeBaseRecord,
)
from services.jobs.settings import JobsSettings
from services.jobs.state import JobsState as Store


@pytest.fixture
def store(redis_url: str) -> Iterator[Store]:
    s = Store.from_settings(JobsSettings(redis_url=redis_url))
    yield s
    s.close()


@pytest.fixture
def tenant() -> str:
    return f"t{uuid.uuid4().hex[:8]}"


def make_kb(store: Store, tenant: str, kb: str = "kb1") -> KnowledgeBaseRecord:
    return store.catalogue.create_kb(
        KnowledgeBaseRecord(
            tenant=tenant, knowledge_base_id=kb, collection=f"c_{tenant}_{kb}", dimension=384
        )
    )


def doc(tenant: str, doc_id: str = "a.md", version: str = "v1") -> DocumentRecord:
    return DocumentRecord(
        tenant=tenant,
        knowledge_base_id="kb1",
        document_id=doc_id,
        file_name=doc_id,
        version=version,
        content_sha256=version,
    )


class SentJobs(IngestionQueue):
    """Records what the reaper sends; its broker holds nothing. (The reaper's
    handling of QUEUED jobs against the real broker: test_reaper_broker.py.)"""

    def __init__(self) -> None:
        self.sent: list[str] = []

    def send(self, job_id: str) -> None:
        self.sent.append(job_id)

    def snapshot(self) -> QueueSnapshot:
        return QueueSnapshot()

    def close(self) -> None:
        pass


def make_reaper(store: Store, **policy: float) -> Reaper:
    return Reaper(store.book, SentJobs(), ReaperPolicy(**policy))  # type: ignore[arg-type]


def run_to_success(store: Store, job_id: str, chunks: int) -> None:
    assert store.runs.claim_job(job_id, "tok", 30) == "ok"
    assert store.runs.finish_job(job_id, "tok", chunks, "Title", media_type="text/plain")


def test_kb_create_get_list_delete(store: Store, tenant: str) -> None:
    make_kb(store, tenant, "kb1")
    with pytest.raises(AlreadyExists) as exc:
        make_kb(store, tenant, "kb1")
    assert exc.value.reason == "KNOWLEDGE_BASE_EXISTS"
    for name in ("kb3", "kb2"):
        make_kb(store, tenant, name)
    page, token = store.catalogue.list_kbs(tenant, 2, "")
    assert [k.knowledge_base_id for k in page] == ["kb1", "kb2"]
    page2, token2 = store.catalogue.list_kbs(tenant, 2, token)
    assert [k.knowledge_base_id for k in page2] == ["kb3"] and token2 == ""
    # Another tenant sees none of them.
    assert store.catalogue.list_kbs(tenant + "x", 10, "") == ([], "")
    with pytest.raises(NotFound):
        store.catalogue.get_kb(tenant + "x", "kb1")
    store.deletes.begin_kb_delete(tenant, "kb1")
    with pytest.raises(NotFound):
        store.catalogue.get_kb(tenant, "kb1")
    with pytest.raises(InvalidArgument):
        store.catalogue.list_kbs(tenant, 2, "%%%not-a-token")
    # A token is good for the list that issued it only.
    for kb_id in ("kb2", "kb3"):
        for name in ("a.md", "b.md"):
            store.book.register_upload(tenant, kb_id, doc(tenant, name), b"x")
    _, docs_token = store.catalogue.list_docs(tenant, "kb2", 1, "")
    assert docs_token
    for other in (
        lambda: store.catalogue.list_docs(tenant, "kb3", 1, docs_token),
        lambda: store.catalogue.list_kbs(tenant, 1, docs_token),
        lambda: store.book.list_jobs(tenant, "kb2", None, 1, docs_token),
    ):
        with pytest.raises(InvalidArgument) as exc:
            other()
        assert exc.value.reason == "INVALID_PAGE_TOKEN"
    assert [d.document_id for d in store.catalogue.list_docs(tenant, "kb2", 1, docs_token)[0]] == [
        "b.md"
    ]


def test_upload_queues_a_job_and_success_indexes_the_document(store: Store, tenant: str) -> None:
    make_kb(store, tenant)
    up = store.book.register_upload(tenant, "kb1", doc(tenant), b"hello")
    assert up.enqueue and up.job.state == "QUEUED"
    assert store.blobs.get(up.job.job_id) == b"hello"
    assert store.db.r.zscore(store.db.keys.active_jobs, up.job.job_id) is not None
    run_to_success(store, up.job.job_id, 7)
    job = store.book.get_job(up.job.job_id, tenant)
    assert (job.state, job.chunks_done, job.chunks_total, job.attempt) == ("SUCCEEDED", 7, 7, 1)
    assert job.end_time >= job.start_time > 0
    d = store.catalogue.get_doc(tenant, "kb1", "a.md")
    # Uploaded without a media type: the record gets the one the parse detected.
    assert (d.state, d.chunk_count, d.title, d.media_type) == ("INDEXED", 7, "Title", "text/plain")
    assert store.catalogue.get_kb(tenant, "kb1").chunk_count == 7
    assert store.blobs.get(up.job.job_id) is None  # bytes dropped once indexed
    assert store.db.r.zscore(store.db.keys.active_jobs, up.job.job_id) is None


def test_identical_upload_is_deduplicated_and_changed_one_supersedes(
    store: Store, tenant: str
) -> None:
    make_kb(store, tenant)
    first = store.book.register_upload(tenant, "kb1", doc(tenant), b"x")
    # Same version while the first is still queued: the same job comes back.
    again = store.book.register_upload(tenant, "kb1", doc(tenant), b"x")
    assert not again.enqueue and again.job.job_id == first.job.job_id
    run_to_success(store, first.job.job_id, 3)
    dup = store.book.register_upload(tenant, "kb1", doc(tenant), b"x")
    assert not dup.enqueue and dup.job.deduplicated and dup.job.state == "SUCCEEDED"
    assert dup.job.chunks_total == 3
    assert store.catalogue.get_doc(tenant, "kb1", "a.md").last_job_id == dup.job.job_id
    # Changed content: a new job; while it is queued, a third version cancels it.
    v2 = store.book.register_upload(tenant, "kb1", doc(tenant, version="v2"), b"y")
    assert v2.enqueue
    v3 = store.book.register_upload(tenant, "kb1", doc(tenant, version="v3"), b"z")
    assert v3.superseded_job_id == v2.job.job_id
    old = store.book.get_job(v2.job.job_id, tenant)
    assert old.state == "CANCELLED" and old.error is not None
    assert old.error.reason == "SUPERSEDED"
    assert store.blobs.get(v2.job.job_id) is None
    run_to_success(store, v3.job.job_id, 5)
    assert store.catalogue.get_kb(tenant, "kb1").chunk_count == 5  # replaced, not added


def test_upload_into_missing_kb_is_not_found_and_leaves_no_bytes(store: Store, tenant: str) -> None:
    before = set(store.db.r.keys("rm:blob:*"))
    with pytest.raises(NotFound) as exc:
        store.book.register_upload(tenant, "nope", doc(tenant), b"x")
    assert exc.value.reason == "KNOWLEDGE_BASE_NOT_FOUND"
    assert set(store.db.r.keys("rm:blob:*")) == before


def test_claim_heartbeat_and_ownership(store: Store, tenant: str) -> None:
    make_kb(store, tenant)
    job_id = store.book.register_upload(tenant, "kb1", doc(tenant), b"x").job.job_id
    assert store.runs.claim_job(job_id, "w1", 30) == "ok"
    assert store.runs.claim_job(job_id, "w2", 30) == "busy"  # w1 is alive
    assert store.runs.heartbeat(job_id, "w1", stage="EMBEDDING", chunks_done=2) == "ok"
    job = store.book.get_job(job_id)
    assert (job.stage, job.chunks_done) == ("EMBEDDING", 2)
    assert store.runs.heartbeat(job_id, "w2") == "token"
    # w1 stops beating: after the timeout another worker may take over.
    assert store.runs.claim_job(job_id, "w2", 30, now=time.time() + 31) == "ok"
    assert store.runs.heartbeat(job_id, "w1") == "token"
    assert store.book.get_job(job_id).attempt == 2
    store.book.cancel_job(tenant, job_id)
    assert store.runs.heartbeat(job_id, "w2") == "CANCELLED"
    assert store.runs.claim_job(job_id, "w3", 30) == "CANCELLED"
    assert store.runs.claim_job("missing", "w3", 30) == "missing"


def test_concurrent_claims_have_one_winner(store: Store, tenant: str) -> None:
    make_kb(store, tenant)
    job_id = store.book.register_upload(tenant, "kb1", doc(tenant), b"x").job.job_id
    results: list[str] = []
    threads = [
        threading.Thread(
            target=lambda i=i: results.append(store.runs.claim_job(job_id, f"w{i}", 30))
        )
        for i in range(8)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == ["busy"] * 7 + ["ok"]


def test_fail_cancel_retry(store: Store, tenant: str) -> None:
    make_kb(store, tenant)
    job_id = store.book.register_upload(tenant, "kb1", doc(tenant), b"x").job.job_id
    store.runs.claim_job(job_id, "w", 30)
    err = ErrorRecord("INVALID_ARGUMENT", "CORRUPT_DOCUMENT", "bad pdf", domain="chunking")
    assert store.runs.fail_job(job_id, err, token="other") is None  # not the owner
    assert store.runs.fail_job(job_id, err, token="w") is not None
    job = store.book.get_job(job_id, tenant)
    assert job.state == "FAILED" and job.error == err
    assert store.catalogue.get_doc(tenant, "kb1", "a.md").state == "FAILED"
    with pytest.raises(FailedPrecondition) as exc:
        store.book.cancel_job(tenant, job_id)
    assert exc.value.reason == "JOB_ALREADY_ENDED"
    retried = store.book.retry_job(tenant, job_id)
    assert retried.state == "QUEUED" and retried.error is None
    assert store.catalogue.get_doc(tenant, "kb1", "a.md").state == "PENDING"
    with pytest.raises(FailedPrecondition) as exc:
        store.book.retry_job(tenant, job_id)
    assert exc.value.reason == "JOB_NOT_RETRYABLE"
    # Another tenant cannot see, cancel or retry it.
    for action in (store.book.cancel_job, store.book.retry_job):
        with pytest.raises(NotFound):
            action(tenant + "x", job_id)
    # A superseded job cannot be retried.
    store.book.cancel_job(tenant, job_id)
    store.book.register_upload(tenant, "kb1", doc(tenant, version="v2"), b"y")
    with pytest.raises(FailedPrecondition) as exc:
        store.book.retry_job(tenant, job_id)
    assert exc.value.reason == "JOB_SUPERSEDED"


def test_release_for_retry_requeues(store: Store, tenant: str) -> None:
    make_kb(store, tenant)
    job_id = store.book.register_upload(tenant, "kb1", doc(tenant), b"x").job.job_id
    store.runs.claim_job(job_id, "w", 30)
    err = ErrorRecord("UNAVAILABLE", "DEPENDENCY_UNAVAILABLE", "down")
    assert store.runs.release_for_retry(job_id, "w", err)
    assert store.book.get_job(job_id).state == "QUEUED"
    assert not store.runs.release_for_retry(job_id, "w", err)
    assert store.runs.claim_job(job_id, "w2", 30) == "ok"


def test_delete_document_cancels_its_job(store: Store, tenant: str) -> None:
    make_kb(store, tenant)
    run = store.book.register_upload(tenant, "kb1", doc(tenant, "done.md"), b"x").job.job_id
    run_to_success(store, run, 4)
    job_id = store.book.register_upload(tenant, "kb1", doc(tenant, "b.md"), b"y").job.job_id
    store.runs.claim_job(job_id, "w", 30)
    marked, collections = store.deletes.mark_doc_deleting(tenant, "kb1", "b.md")
    assert collections == [f"c_{tenant}_kb1"] and marked.document_id == "b.md"
    job = store.book.get_job(job_id, tenant)
    assert job.state == "CANCELLED" and job.error and job.error.reason == "DOCUMENT_DELETED"
    assert store.blobs.get(job_id) is None
    # Hidden at once, while its chunks are being deleted; listed for the sweeper.
    with pytest.raises(NotFound) as exc:
        store.catalogue.get_doc(tenant, "kb1", "b.md")
    assert exc.value.reason == "DOCUMENT_NOT_FOUND"
    assert [d.document_id for d in store.catalogue.list_docs(tenant, "kb1", 10, "")[0]] == [
        "done.md"
    ]
    assert store.catalogue.document_count(tenant, "kb1") == 1
    pending = [p for p in store.deletes.pending_docs() if p.tenant == tenant]
    assert [(p.knowledge_base_id, p.document_id) for p in pending] == [("kb1", "b.md")]
    # Just attempted: the sweeper leaves it alone for a while.
    assert not [p for p in store.deletes.pending_docs(idle_s=60) if p.tenant == tenant]
    # Marking again is harmless (a repeated delete), a new upload waits.
    store.deletes.mark_doc_deleting(tenant, "kb1", "b.md")
    with pytest.raises(Unavailable) as busy:
        store.book.register_upload(tenant, "kb1", doc(tenant, "b.md", version="v9"), b"z")
    assert busy.value.reason == "DOCUMENT_BEING_DELETED" and busy.value.retry_after_s
    store.deletes.finish_doc_delete(tenant, "kb1", "b.md")
    assert not [p for p in store.deletes.pending_docs() if p.tenant == tenant]
    store.deletes.mark_doc_deleting(tenant, "kb1", "done.md")
    store.deletes.finish_doc_delete(tenant, "kb1", "done.md")
    assert store.catalogue.get_kb(tenant, "kb1").chunk_count == 0
    docs, _ = store.catalogue.list_docs(tenant, "kb1", 10, "")
    assert docs == []
    assert Usage.read(store.db.r, store.db.keys, tenant) == Usage(documents=0, stored_bytes=0)


def test_list_jobs_pages_and_filters(store: Store, tenant: str) -> None:
    make_kb(store, tenant)
    make_kb(store, tenant, "kb2")
    ids = []
    for i in range(5):
        up = store.book.register_upload(
            tenant, "kb1", doc(tenant, f"d{i}.md"), b"x", now=1000.0 + i
        )
        ids.append(up.job.job_id)
    run_to_success(store, ids[1], 1)
    run_to_success(store, ids[3], 1)
    page, token = store.book.list_jobs(tenant, None, None, 2, "")
    assert [j.job_id for j in page] == ids[:2]
    page, token = store.book.list_jobs(tenant, None, None, 2, token)
    assert [j.job_id for j in page] == ids[2:4]
    page, token = store.book.list_jobs(tenant, None, None, 2, token)
    assert [j.job_id for j in page] == ids[4:] and token == ""
    done, token = store.book.list_jobs(tenant, "kb1", "SUCCEEDED", 1, "")
    assert [j.job_id for j in done] == [ids[1]] and token
    done, token = store.book.list_jobs(tenant, "kb1", "SUCCEEDED", 1, token)
    assert [j.job_id for j in done] == [ids[3]]
    assert store.book.list_jobs(tenant, "kb2", None, 10, "") == ([], "")
    # Newest first: what a person looking at recent uploads wants (`ragmesh jobs`, the
    # page's Jobs view); before, the first page held the oldest jobs only.
    page, token = store.book.list_jobs(tenant, None, None, 2, "", newest_first=True)
    assert [j.job_id for j in page] == [ids[4], ids[3]]
    page, token = store.book.list_jobs(tenant, None, None, 2, token, newest_first=True)
    assert [j.job_id for j in page] == [ids[2], ids[1]]
    with pytest.raises(InvalidArgument):  # a token keeps the order it was made with
        store.book.list_jobs(tenant, None, None, 2, token)
    page, token = store.book.list_jobs(tenant, None, None, 2, token, newest_first=True)
    assert [j.job_id for j in page] == [ids[0]] and token == ""
    done, token = store.book.list_jobs(tenant, "kb1", "SUCCEEDED", 1, "", newest_first=True)
    assert [j.job_id for j in done] == [ids[3]] and token
    done, token = store.book.list_jobs(tenant, "kb1", "SUCCEEDED", 1, token, newest_first=True)
    assert [j.job_id for j in done] == [ids[1]]


def test_reaper_requeues_lost_jobs_then_fails_them(store: Store, tenant: str) -> None:
    make_kb(store, tenant)
    job_id = store.book.register_upload(tenant, "kb1", doc(tenant), b"x").job.job_id
    store.runs.claim_job(job_id, "w", 30)
    now = time.time()
    reaper = make_reaper(store, stale_after_s=10, max_attempts=2)
    assert job_id not in reaper.reap(now=now + 5).requeue  # heartbeat is fresh
    result = reaper.reap(now=now + 11)
    assert job_id in result.requeue
    job = store.book.get_job(job_id)
    assert (job.state, job.lost_count) == ("QUEUED", 1)
    assert store.runs.claim_job(job_id, "w2", 10, now=now + 12) == "ok"
    result = reaper.reap(now=now + 30)
    assert job_id in result.failed
    job = store.book.get_job(job_id)
    assert job.state == "FAILED" and job.error and job.error.reason == "WORKER_LOST"
    assert store.catalogue.get_doc(tenant, "kb1", "a.md").state == "FAILED"


def test_kb_delete_tombstone_purge_and_recreate(store: Store, tenant: str) -> None:
    make_kb(store, tenant)
    job_id = store.book.register_upload(tenant, "kb1", doc(tenant), b"x").job.job_id
    store.deletes.begin_kb_delete(tenant, "kb1")
    with pytest.raises(NotFound):
        store.catalogue.get_kb(tenant, "kb1")
    (pending,) = store.deletes.pending_kbs_of(tenant, "kb1")
    assert pending.collection == f"c_{tenant}_kb1"
    # Its records are not purged yet: the id cannot be taken again.
    with pytest.raises(FailedPrecondition) as exc:
        store.deletes.check_recreate(tenant, "kb1")
    assert exc.value.reason == "KNOWLEDGE_BASE_BEING_DELETED"
    store.deletes.purge_kb(pending)
    store.deletes.purge_kb(pending)  # again: harmless
    store.deletes.check_recreate(tenant, "kb1")  # purged: the id is free again
    with pytest.raises(NotFound):
        store.book.get_job(job_id)
    assert store.db.r.exists(f"rm:job:{job_id}", f"rm:blob:{job_id}") == 0
    assert store.db.r.zscore(store.db.keys.active_jobs, job_id) is None
    assert Usage.read(store.db.r, store.db.keys, tenant) == Usage(documents=0, stored_bytes=0)
    store.deletes.finish_kb_delete(pending)
    assert store.deletes.pending_kbs_of(tenant, "kb1") == []
    assert store.db.r.keys(f"rm:{tenant}:*") == [f"rm:{tenant}:usage".encode()]


def test_document_lock(store: Store, tenant: str) -> None:
    token = store.locks.acquire(tenant, "kb1", "a.md")
    assert token is not None
    assert store.locks.acquire(tenant, "kb1", "a.md") is None
    store.locks.release(tenant, "kb1", "a.md", "not-the-token")
    assert store.locks.acquire(tenant, "kb1", "a.md") is None
    store.locks.release(tenant, "kb1", "a.md", token)
    assert store.locks.acquire(tenant, "kb1", "a.md") is not None


def test_records_survive_a_redis_restart(tmp_path: Path) -> None:
    """With AOF (as the launcher runs Redis), jobs, documents and uploads survive."""
    port = free_port()
    proc, url = start_redis(tmp_path / "data", port=port, log_dir=tmp_path)
    try:
        store = Store.from_settings(JobsSettings(redis_url=url))
        make_kb(store, "t1")
        up = store.book.register_upload("t1", "kb1", doc("t1"), b"bytes")
        store.runs.claim_job(up.job.job_id, "w", 30)
        store.runs.heartbeat(up.job.job_id, "w", stage="EMBEDDING", chunks_done=3)
        store.close()
        proc.stop()
        proc, url = start_redis(tmp_path / "data", port=port, log_dir=tmp_path)
        store = Store.from_settings(JobsSettings(redis_url=url))
        job = store.book.get_job(up.job.job_id, "t1")
        assert (job.state, job.stage, job.chunks_done) == ("RUNNING", "EMBEDDING", 3)
        assert store.catalogue.get_doc("t1", "kb1", "a.md").last_job_id == up.job.job_id
        assert store.blobs.get(up.job.job_id) == b"bytes"
        store.close()
    finally:
        proc.stop()


def test_reaper_pass_sends_what_it_requeues_and_one_replica_reaps(
    store: Store, tenant: str
) -> None:
    make_kb(store, tenant)
    job_id = store.book.register_upload(tenant, "kb1", doc(tenant), b"x").job.job_id
    store.runs.claim_job(job_id, "w", 30, now=time.time() - 100)  # its worker went silent
    first = make_reaper(store, stale_after_s=10, interval_s=30)
    second = make_reaper(store, stale_after_s=10, interval_s=30)
    store.db.r.delete(store.db.keys.reaper_lease)
    assert first.run_once().requeue == [job_id]
    assert first.queue.sent == [job_id]  # type: ignore[attr-defined]
    assert second.run_once().requeue == [] and second.queue.sent == []  # type: ignore[attr-defined]
    assert store.book.get_job(job_id).state == JobState.QUEUED
    store.db.r.delete(store.db.keys.reaper_lease)


def test_quotas_count_documents_and_stored_bytes(redis_url: str, tenant: str) -> None:
    quotas = Quotas(max_knowledge_bases=1, max_documents=2, max_stored_bytes=10)
    store = Store.open(Store.from_settings(JobsSettings(redis_url=redis_url)).db, quotas=quotas)
    make_kb(store, tenant)
    with pytest.raises(ResourceExhausted) as exc:
        make_kb(store, tenant, "kb2")
    assert exc.value.reason == "KNOWLEDGE_BASE_QUOTA_EXCEEDED"
    a = store.book.register_upload(tenant, "kb1", doc(tenant, "a.md"), b"123456").job
    with pytest.raises(ResourceExhausted) as exc:
        store.book.register_upload(tenant, "kb1", doc(tenant, "b.md"), b"123456")
    assert exc.value.reason == "STORAGE_QUOTA_EXCEEDED"
    assert exc.value.retry_after_s is None  # a limit, not a moment
    # Replacing a.md frees its queued bytes first.
    store.book.register_upload(tenant, "kb1", doc(tenant, "a.md", version="v2"), b"12345678")
    assert Usage.read(store.db.r, store.db.keys, tenant) == Usage(documents=1, stored_bytes=8)
    assert store.book.get_job(a.job_id).blob_bytes == 0
    b = store.book.register_upload(tenant, "kb1", doc(tenant, "b.md"), b"12").job
    with pytest.raises(ResourceExhausted) as exc:
        store.book.register_upload(tenant, "kb1", doc(tenant, "c.md"), b"1")
    assert exc.value.reason == "DOCUMENT_QUOTA_EXCEEDED"
    run_to_success(store, b.job_id, 1)  # indexed: its bytes are dropped
    assert Usage.read(store.db.r, store.db.keys, tenant) == Usage(documents=2, stored_bytes=8)


def kept_store(redis_url: str, tmp_path: Path) -> Store:
    """A store that keeps originals (in files), as the launcher's and the chart's do."""
    db = Store.from_settings(JobsSettings(redis_url=redis_url)).db
    return Store.open(db, originals=FileBlobStore(tmp_path / "originals"))


def index_keeping_original(store: Store, tenant: str, job_id: str, version: str) -> None:
    """What the worker does for an upload: keeps the original and its text, then
    finishes the job with the original's size."""
    assert store.originals is not None
    assert store.runs.claim_job(job_id, "tok", 30) == "ok"
    store.originals.put(original_key(tenant, "kb1", "a.md", version), b"orig-" + version.encode())
    store.originals.put(text_key(tenant, "kb1", "a.md", version), b"text-" + version.encode())
    assert store.runs.finish_job(job_id, "tok", 2, "Title", original_bytes=7) is not None


@pytest.mark.parametrize("outcome", ["failed", "cancelled", "succeeded"])
def test_a_replacement_keeps_the_indexed_versions_original_until_it_succeeds(
    redis_url: str, tmp_path: Path, tenant: str, outcome: str
) -> None:
    store = kept_store(redis_url, tmp_path)
    originals = store.originals
    assert originals is not None
    make_kb(store, tenant)
    first = store.book.register_upload(tenant, "kb1", doc(tenant), b"one").job
    index_keeping_original(store, tenant, first.job_id, "v1")
    assert Usage.read(store.db.r, store.db.keys, tenant).stored_bytes == 7
    second = store.book.register_upload(tenant, "kb1", doc(tenant, version="v2"), b"two").job
    # While v2 is under way, search finds v1's chunks: v1's text stays readable.
    pending = store.catalogue.get_doc(tenant, "kb1", "a.md")
    assert (pending.state, pending.original_version, pending.original_bytes) == (
        "PENDING",
        "v1",
        7,
    )
    if outcome == "succeeded":
        index_keeping_original(store, tenant, second.job_id, "v2")
        indexed = store.catalogue.get_doc(tenant, "kb1", "a.md")
        assert (indexed.state, indexed.original_version) == ("INDEXED", "v2")
        # v1's original and text are dropped, and no longer counted.
        assert originals.get(original_key(tenant, "kb1", "a.md", "v1")) is None
        assert originals.get(text_key(tenant, "kb1", "a.md", "v1")) is None
        assert Usage.read(store.db.r, store.db.keys, tenant).stored_bytes == 7
        return
    if outcome == "failed":
        assert store.runs.claim_job(second.job_id, "tok", 30) == "ok"
        err = ErrorRecord("INVALID_ARGUMENT", "NO_TEXT_CONTENT", "no text")
        store.runs.fail_job(second.job_id, err, token="tok")
    else:
        store.book.cancel_job(tenant, second.job_id)
    # The record says the last upload did not get through; what search finds (v1) is
    # still the version whose original and text are kept.
    ended = store.catalogue.get_doc(tenant, "kb1", "a.md")
    assert (ended.state, ended.original_version, ended.original_bytes) == ("FAILED", "v1", 7)
    assert originals.get(text_key(tenant, "kb1", "a.md", "v1")) == b"text-v1"


def test_bytes_of_failed_jobs_expire_and_a_late_retry_says_so(store: Store, tenant: str) -> None:
    make_kb(store, tenant)
    job_id = store.book.register_upload(tenant, "kb1", doc(tenant), b"bytes").job.job_id
    store.runs.claim_job(job_id, "w", 30)
    err = ErrorRecord("INVALID_ARGUMENT", "CORRUPT_DOCUMENT", "bad")
    store.runs.fail_job(job_id, err, token="w")
    assert store.blobs.get(job_id) == b"bytes"  # kept for a retry
    assert store.deletes.expire_retained_blobs(time.time() - 3600) == []  # not old enough
    assert job_id in store.deletes.expire_retained_blobs(time.time() + 1)
    assert store.blobs.get(job_id) is None
    assert Usage.read(store.db.r, store.db.keys, tenant).stored_bytes == 0
    with pytest.raises(FailedPrecondition) as exc:
        store.book.retry_job(tenant, job_id)
    assert exc.value.reason == "UPLOAD_GONE" and "limited time" in exc.value.message


def test_a_held_lock_is_renewed_beyond_its_ttl_and_freed_after(store: Store, tenant: str) -> None:
    locks = DocumentLocks(store.db, ttl_s=0.3)
    token = locks.acquire(tenant, "kb1", "slow.md")
    assert token is not None
    with locks.hold(tenant, "kb1", "slow.md", token):
        deadline = time.monotonic() + 1.2  # four times the ttl
        while time.monotonic() < deadline:
            assert locks.acquire(tenant, "kb1", "slow.md") is None
            time.sleep(0.05)
    assert locks.acquire(tenant, "kb1", "slow.md") is not None  # released on exit
    # Without renewal a holder that died frees it within the ttl.
    assert locks.acquire(tenant, "kb1", "dead.md") is not None
    time.sleep(0.4)
    assert locks.acquire(tenant, "kb1", "dead.md") is not None


def test_a_reindex_switch_drops_the_old_collection_only_after_the_grace(
    store: Store, tenant: str
) -> None:
    """A search that read the knowledge base just before the switch still reaches the old
    collection: it is dropped once unused for the sweeper's delay, not at the next sweep
    (a clean-clone CI run saw such a search answer NOT_FOUND)."""
    kb = make_kb(store, tenant, "kb1")
    store.rebuilds.start_reindex(tenant, "kb1", f"{kb.collection}_g2", "m", 384)
    assert store.rebuilds.switch_if_done(tenant, "kb1") == kb.collection  # no documents
    assert store.catalogue.get_kb(tenant, "kb1").collection == f"{kb.collection}_g2"
    assert kb.collection not in store.rebuilds.collections_to_drop(idle_s=30)
    time.sleep(0.2)
    assert kb.collection in store.rebuilds.collections_to_drop(idle_s=0.1)
    store.rebuilds.dropped(kb.collection)
    assert kb.collection not in store.rebuilds.collections_to_drop(idle_s=0)


def test_deleting_a_document_cancels_its_reindex_job(
    redis_url: str, tmp_path: Path, tenant: str
) -> None:
    """A re-index job of a deleted document used to stay active: the worker found the
    document gone and left it to the reaper, which sent it again until it FAILED as
    WORKER_LOST ("the workers running the job vanished") ~90 s later."""
    store = kept_store(redis_url, tmp_path)
    kb = make_kb(store, tenant)
    up = store.book.register_upload(tenant, "kb1", doc(tenant), b"one").job
    index_keeping_original(store, tenant, up.job_id, "v1")
    assert store.rebuilds.start_reindex(tenant, "kb1", f"{kb.collection}_g2", "m", 384) == ["a.md"]
    reindex = store.rebuilds.register_from_original(tenant, "kb1", "a.md", JobKind.REINDEX)
    assert reindex is not None and reindex.state == JobState.QUEUED
    store.deletes.mark_doc_deleting(tenant, "kb1", "a.md")
    ended = store.book.get_job(reindex.job_id)
    assert ended.state == JobState.CANCELLED and ended.error is not None
    assert ended.error.reason == "DOCUMENT_DELETED"
    assert store.runs.claim_job(reindex.job_id, "w", 30) == JobState.CANCELLED
    assert store.db.r.zscore(store.db.keys.active_jobs, reindex.job_id) is None
    # Nothing holds the switch back.
    assert store.rebuilds.switch_if_done(tenant, "kb1") == kb.collection


def test_ended_jobs_expire_but_a_documents_last_job_stays(redis_url: str, tenant: str) -> None:
    """Every upload made a job record that was kept forever: Redis grew with each one
    (a re-upload of unchanged content too). Ended jobs now expire after the retention,
    except a document's last job (its state and error are the document's)."""
    # A key prefix of its own: expiry looks at every ended job under the prefix.
    store = Store.from_settings(JobsSettings(redis_url=redis_url, redis_key_prefix=tenant))
    make_kb(store, tenant)
    first = store.book.register_upload(tenant, "kb1", doc(tenant), b"x").job.job_id
    run_to_success(store, first, 1)
    second = store.book.register_upload(tenant, "kb1", doc(tenant, version="v2"), b"y").job.job_id
    run_to_success(store, second, 1)
    dedup = store.book.register_upload(tenant, "kb1", doc(tenant, version="v2"), b"y").job
    assert dedup.deduplicated  # now a.md's last job; `second` is not any more
    failed = store.book.register_upload(tenant, "kb1", doc(tenant, "c.md"), b"bytes").job.job_id
    assert store.runs.claim_job(failed, "w", 30) == "ok"
    store.runs.fail_job(
        failed, ErrorRecord("INVALID_ARGUMENT", "CORRUPT_DOCUMENT", "bad"), token="w"
    )
    retried = store.book.register_upload(tenant, "kb1", doc(tenant, "d.md"), b"d").job.job_id
    assert store.runs.claim_job(retried, "w", 30) == "ok"
    store.runs.fail_job(retried, ErrorRecord("UNAVAILABLE", "DOWN", "down"), token="w")
    store.book.retry_job(tenant, retried)  # QUEUED again: not ended any more

    def expire(ended_before: float, at: float) -> set[str]:
        return set(store.deletes.expire_ended_jobs(ended_before, at))

    now = time.time() + 10
    assert expire(now - 20, now) == set()  # none old enough
    assert expire(now, now) == {first, second}
    for gone in (first, second):
        with pytest.raises(NotFound):
            store.book.get_job(gone, tenant)
    listed = {j.job_id for j in store.book.list_jobs(tenant, "kb1", None, 100, "")[0]}
    assert listed == {dedup.job_id, failed, retried}
    assert {j.job_id for j in store.book.list_jobs(tenant, None, None, 100, "")[0]} == listed
    assert store.book.get_job(retried, tenant).state == JobState.QUEUED
    # The documents' last jobs are looked at again a retention period later; once c.md is
    # deleted, its failed job goes too.
    assert Usage.read(store.db.r, store.db.keys, tenant).stored_bytes == len(b"bytes") + 1
    store.deletes.mark_doc_deleting(tenant, "kb1", "c.md")
    store.deletes.finish_doc_delete(tenant, "kb1", "c.md")
    assert expire(now - 1, now + 1) == set()  # re-checked from `now`
    assert expire(now, now + 1) == {failed}
    assert store.book.get_job(dedup.job_id, tenant).deduplicated  # still a.md's last
    assert store.db.r.zscore(store.db.keys.ended_jobs, dedup.job_id) == now + 1
    # The retried job's upload is the only bytes left counted.
    assert Usage.read(store.db.r, store.db.keys, tenant).stored_bytes == 1
    store.close()
