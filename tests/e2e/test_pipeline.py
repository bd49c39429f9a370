"""The whole system through real processes: Redis, Milvus Lite (in the
retrieval service), the llama.cpp server, all five services and Celery
workers. Upload → job → worker → searchable; Search, Ask, delete, dedup,
replacement, concurrency, failures, tenants, and a worker killed mid-job.
"""

from __future__ import annotations

from typing import Any

import grpc
import pytest

from benchmarks.chunking_data import english_text, make_pdf
from devstack.procs import ManagedProcess
from ragmesh.client import RagmeshClient
from ragmesh.client.bulk import Upload
from ragmesh.gateway.v1 import gateway_pb2 as pb
from ragmesh.retrieval.v1 import retrieval_pb2
from services.common.status import error_info_of
from tests.e2e.conftest import ALPHA_KEY, BETA_KEY, MAX_UPLOAD, Stack

pytestmark = [pytest.mark.slow, pytest.mark.llm]


MARKDOWN = b"""# Aurora station

The Aurora research station stands on the Kessler glacier. It was founded in 1987
by the polar survey and houses twelve scientists through the winter.

## Power

The station's power comes from three wind turbines and a backup diesel generator.
"""
HTML = b"""<html><head><title>Violin care</title></head><body>
<h1>Violin care</h1><p>Rosin the bow before every practice session. Loosen the bow hair
after playing so the stick keeps its camber.</p>
<h2>Strings</h2><p>Replace steel violin strings every six months.</p></body></html>"""
TEXT = (
    b"Quince jam recipe. Cook two kilograms of quince with one kilogram of sugar and "
    b"the juice of a lemon for ninety minutes until the jam turns deep orange.\n"
)
PDF = make_pdf(
    [
        "Saturn has 146 known moons. Titan, the largest moon of Saturn, has a thick "
        "nitrogen atmosphere and lakes of liquid methane."
    ],
    title="Saturn facts",
)
FILES = {"aurora.md": MARKDOWN, "violin.html": HTML, "saturn.pdf": PDF, "quince.txt": TEXT}


def code_and_reason(exc: grpc.RpcError) -> tuple[grpc.StatusCode, str]:
    info = error_info_of(exc)
    return exc.code(), info.reason if info else ""  # type: ignore[attr-defined]


def expect_error(code: grpc.StatusCode, reason: str, fn: Any, *args: Any, **kw: Any) -> None:
    with pytest.raises(grpc.RpcError) as exc:
        result = fn(*args, **kw)
        if hasattr(result, "__iter__") and not isinstance(result, bytes | str):
            list(result)
    assert code_and_reason(exc.value) == (code, reason), exc.value


def test_four_formats_are_ingested_and_found_at_the_right_offsets(stack: Stack) -> None:
    kb = stack.call(
        "CreateKnowledgeBase",
        pb.CreateKnowledgeBaseRequest(knowledge_base_id="library", description="four formats"),
    ).knowledge_base
    assert kb.dimension == 384 and kb.embedding_model
    files = FILES
    jobs = {name: stack.upload("library", name, data).job for name, data in files.items()}
    for name, job in jobs.items():
        assert job.state == pb.JOB_STATE_QUEUED and job.document_id == name
        done = stack.wait(job.job_id)
        assert done.state == pb.JOB_STATE_SUCCEEDED, done.error
        expected = stack.chunk_count(files[name], name)
        assert done.chunks_total == done.chunks_done == expected
        assert stack.stored_chunks("alpha", "library", name) == list(range(expected))
    docs = stack.call("ListDocuments", pb.ListDocumentsRequest(knowledge_base_id="library"))
    assert sorted(d.document_id for d in docs.documents) == sorted(files)
    assert all(d.state == pb.DOCUMENT_STATE_INDEXED for d in docs.documents)
    got = stack.call("GetKnowledgeBase", pb.GetKnowledgeBaseRequest(knowledge_base_id="library"))
    assert got.knowledge_base.document_count == 4
    assert got.knowledge_base.chunk_count == sum(d.chunk_count for d in docs.documents)

    for query, name in [
        ("How many moons does Saturn have?", "saturn.pdf"),
        ("When should violin strings be replaced?", "violin.html"),
        ("Where does the research station get its power?", "aurora.md"),
        ("how long to cook quince jam", "quince.txt"),
    ]:
        hits = stack.search("library", query)
        top = hits[0]
        assert top.document_id == name and top.file_name == name, (query, hits)
        # Offsets point into the normalised text of that document.
        text = stack.normalized_text(files[name], name)
        assert text[top.start_offset : top.end_offset] == top.text


def test_ask_streams_sources_deltas_and_a_cited_answer(stack: Stack) -> None:
    events = list(
        stack.call(
            "Ask",
            pb.AskRequest(
                knowledge_base_id="library",
                question="How many known moons does Saturn have?",
                max_tokens=48,
                temperature=0.0,
                answer_mode=pb.ANSWER_MODE_GENERATIVE,
            ),
        )
    )
    kinds = [e.WhichOneof("event") for e in events]
    assert kinds[0] == "sources" and kinds[-1] == "final"
    assert set(kinds[1:-1]) <= {"delta"}
    sources = events[0].sources.sources
    assert sources[0].document_id == "saturn.pdf"
    assert sources[0].page_start >= 1 and sources[0].page_label  # a PDF passage has its pages
    assert all(s.page_start == 0 for s in sources if not s.document_id.endswith(".pdf"))
    final = events[-1].final
    assert final.answer == "".join(e.delta.text for e in events[1:-1])
    assert final.usage.completion_tokens > 0 and final.total_ms >= final.retrieval_ms > 0
    by_chunk = {s.chunk_id: s for s in sources}
    for citation in final.citations:
        source = by_chunk[citation.chunk_id]
        assert citation.cited and citation.number == source.number
        cited = type(citation)()
        cited.CopyFrom(citation)
        cited.cited = False
        assert cited == source  # the same passage, marked cited
        text = stack.normalized_text(FILES[source.document_id], source.document_id)
        assert text[source.start_offset : source.end_offset] == source.text
    if final.grounded:
        assert "saturn.pdf" in {c.document_id for c in final.citations}


def test_deleted_document_is_gone_from_search_and_ask(stack: Stack) -> None:
    assert stack.search("library", "Saturn moons Titan")[0].document_id == "saturn.pdf"
    stack.call(
        "DeleteDocument",
        pb.DeleteDocumentRequest(knowledge_base_id="library", document_id="saturn.pdf"),
    )
    assert all(
        h.document_id != "saturn.pdf"
        for h in stack.search("library", "Saturn moons Titan", top_k=10)
    )
    events = list(
        stack.call(
            "Ask",
            pb.AskRequest(
                knowledge_base_id="library",
                question="How many moons does Saturn have?",
                max_tokens=16,
            ),
        )
    )
    assert all(s.document_id != "saturn.pdf" for s in events[0].sources.sources)
    expect_error(
        grpc.StatusCode.NOT_FOUND,
        "DOCUMENT_NOT_FOUND",
        stack.call,
        "GetDocument",
        pb.GetDocumentRequest(knowledge_base_id="library", document_id="saturn.pdf"),
    )
    assert stack.stored_chunks("alpha", "library", "saturn.pdf") == []


def test_identical_upload_is_deduplicated_and_changed_content_replaces(stack: Stack) -> None:
    stack.call("CreateKnowledgeBase", pb.CreateKnowledgeBaseRequest(knowledge_base_id="dedup"))
    first = stack.wait(stack.upload("dedup", "notes.txt", TEXT).job.job_id)
    assert first.state == pb.JOB_STATE_SUCCEEDED and not first.deduplicated
    again = stack.upload("dedup", "notes.txt", TEXT).job
    assert again.deduplicated and again.state == pb.JOB_STATE_SUCCEEDED
    assert again.chunks_total == first.chunks_total
    changed = b"Plum jam recipe. Simmer plums with cinnamon for forty minutes. " * 40
    job = stack.wait(stack.upload("dedup", "notes.txt", changed).job.job_id)
    assert job.state == pb.JOB_STATE_SUCCEEDED and not job.deduplicated
    expected = stack.chunk_count(changed, "notes.txt")
    assert expected > 1 and job.chunks_total == expected
    assert stack.stored_chunks("alpha", "dedup", "notes.txt") == list(range(expected))
    hits = stack.search("dedup", "quince jam", top_k=10)
    assert hits and all("Quince" not in h.text for h in hits)
    doc = stack.call(
        "GetDocument", pb.GetDocumentRequest(knowledge_base_id="dedup", document_id="notes.txt")
    ).document
    assert doc.chunk_count == expected and doc.last_job_id == job.job_id
    # Uploaded without a media type: the record carries the one detected.
    assert doc.media_type == "text/plain"


def test_concurrent_uploads_and_a_corrupt_pdf(stack: Stack) -> None:
    stack.call("CreateKnowledgeBase", pb.CreateKnowledgeBaseRequest(knowledge_base_id="bulk"))
    docs = {f"doc{i:02d}.txt": english_text(1 + i % 3, seed=i).encode() for i in range(20)}
    uploads = [Upload(data, file_name=name) for name, data in docs.items()]
    seen: set[str] = set()
    with RagmeshClient(stack.gateway, ALPHA_KEY) as client:
        bad = stack.upload("bulk", "broken.pdf", b"%PDF-1.4\nthis is not a pdf at all")
        outcomes = client.ingest_many(
            "bulk", uploads, concurrency=20, on_update=lambda o: seen.add(o.upload.file_name)
        )
    assert seen == set(docs)
    finals = {o.upload.file_name: o.job for o in outcomes if o.job is not None}
    assert len(finals) == len(docs) and not [o.error for o in outcomes if o.error]
    failed = stack.wait(bad.job.job_id)
    assert failed.state == pb.JOB_STATE_FAILED
    assert failed.error.reason == "CORRUPT_DOCUMENT" and failed.error.code == "INVALID_ARGUMENT"
    assert failed.attempt == 1  # a permanent error is not retried
    for name, job in finals.items():
        assert job is not None and job.state == pb.JOB_STATE_SUCCEEDED, (name, job)
        expected = stack.chunk_count(docs[name], name)
        assert job.chunks_total == expected
        assert stack.stored_chunks("alpha", "bulk", name) == list(range(expected)), name
    listed = stack.call(
        "ListIngestionJobs",
        pb.ListIngestionJobsRequest(knowledge_base_id="bulk", state=pb.JOB_STATE_FAILED),
    )
    assert [j.job_id for j in listed.jobs] == [bad.job.job_id]
    # A failed job can be retried; it fails again for the same reason.
    retried = stack.call(
        "RetryIngestionJob", pb.RetryIngestionJobRequest(job_id=bad.job.job_id)
    ).job
    assert retried.state == pb.JOB_STATE_QUEUED
    assert stack.wait(bad.job.job_id).error.reason == "CORRUPT_DOCUMENT"


def test_tenants_are_isolated(stack: Stack) -> None:
    stack.call("CreateKnowledgeBase", pb.CreateKnowledgeBaseRequest(knowledge_base_id="private"))
    job = stack.upload("private", "secret.md", MARKDOWN).job
    expect_error(
        grpc.StatusCode.NOT_FOUND,
        "JOB_NOT_FOUND",
        stack.call,
        "GetIngestionJob",
        pb.GetIngestionJobRequest(job_id=job.job_id),
        BETA_KEY,
    )
    expect_error(
        grpc.StatusCode.NOT_FOUND,
        "JOB_NOT_FOUND",
        stack.call,
        "CancelIngestionJob",
        pb.CancelIngestionJobRequest(job_id=job.job_id),
        BETA_KEY,
    )
    stack.wait(job.job_id)
    for method, request in [
        ("GetKnowledgeBase", pb.GetKnowledgeBaseRequest(knowledge_base_id="private")),
        ("Search", pb.SearchRequest(knowledge_base_id="private", query="glacier")),
        ("DeleteKnowledgeBase", pb.DeleteKnowledgeBaseRequest(knowledge_base_id="private")),
    ]:
        expect_error(
            grpc.StatusCode.NOT_FOUND,
            "KNOWLEDGE_BASE_NOT_FOUND",
            stack.call,
            method,
            request,
            BETA_KEY,
        )
    expect_error(
        grpc.StatusCode.NOT_FOUND,
        "KNOWLEDGE_BASE_NOT_FOUND",
        stack.upload,
        "private",
        "x.txt",
        b"hello",
        key=BETA_KEY,
    )
    # Beta's own knowledge base of the same name is a different one.
    stack.call(
        "CreateKnowledgeBase", pb.CreateKnowledgeBaseRequest(knowledge_base_id="private"), BETA_KEY
    )
    assert stack.search("private", "glacier", key=BETA_KEY) == []
    assert stack.search("private", "glacier")[0].document_id == "secret.md"
    listed = stack.call("ListKnowledgeBases", pb.ListKnowledgeBasesRequest(), BETA_KEY)
    assert [k.knowledge_base_id for k in listed.knowledge_bases] == ["private"]


def test_auth_and_bad_inputs(stack: Stack) -> None:
    request = pb.ListKnowledgeBasesRequest()
    expect_error(
        grpc.StatusCode.UNAUTHENTICATED,
        "MISSING_API_KEY",
        stack.call,
        "ListKnowledgeBases",
        request,
        None,
    )
    expect_error(
        grpc.StatusCode.UNAUTHENTICATED,
        "INVALID_API_KEY",
        stack.call,
        "ListKnowledgeBases",
        request,
        "wrong-key-123",
    )
    expect_error(
        grpc.StatusCode.INVALID_ARGUMENT,
        "INVALID_KNOWLEDGE_BASE_ID",
        stack.call,
        "CreateKnowledgeBase",
        pb.CreateKnowledgeBaseRequest(knowledge_base_id="Bad!"),
    )
    stack.call("CreateKnowledgeBase", pb.CreateKnowledgeBaseRequest(knowledge_base_id="limits"))
    expect_error(
        grpc.StatusCode.ALREADY_EXISTS,
        "KNOWLEDGE_BASE_EXISTS",
        stack.call,
        "CreateKnowledgeBase",
        pb.CreateKnowledgeBaseRequest(knowledge_base_id="limits"),
    )
    expect_error(
        grpc.StatusCode.INVALID_ARGUMENT,
        "TOP_K_OUT_OF_RANGE",
        stack.call,
        "Search",
        pb.SearchRequest(knowledge_base_id="limits", query="q", top_k=1000),
    )
    expect_error(
        grpc.StatusCode.INVALID_ARGUMENT,
        "EMPTY_QUERY",
        stack.call,
        "Search",
        pb.SearchRequest(knowledge_base_id="limits", query="  "),
    )
    expect_error(
        grpc.StatusCode.INVALID_ARGUMENT,
        "QUESTION_TOO_LONG",
        stack.call,
        "Ask",
        pb.AskRequest(knowledge_base_id="limits", question="why " * 1000),
    )
    expect_error(
        grpc.StatusCode.NOT_FOUND,
        "KNOWLEDGE_BASE_NOT_FOUND",
        stack.call,
        "Search",
        pb.SearchRequest(knowledge_base_id="nope", query="q"),
    )
    expect_error(
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        "DOCUMENT_TOO_LARGE",
        stack.upload,
        "limits",
        "big.txt",
        b"a" * (MAX_UPLOAD + 1),
    )
    expect_error(
        grpc.StatusCode.INVALID_ARGUMENT,
        "UNSUPPORTED_MEDIA_TYPE",
        stack.upload,
        "limits",
        "x.doc",
        b"abc",
        media_type="application/msword",
    )
    expect_error(
        grpc.StatusCode.INVALID_ARGUMENT, "EMPTY_DOCUMENT", stack.upload, "limits", "empty.txt", b""
    )
    expect_error(
        grpc.StatusCode.INVALID_ARGUMENT,
        "INVALID_DOCUMENT_ID",
        stack.upload,
        "limits",
        "a.txt",
        b"abc",
        document_id="../etc",
    )
    expect_error(
        grpc.StatusCode.INVALID_ARGUMENT,
        "MISSING_UPLOAD_HEADER",
        stack.rag.UploadDocument,
        iter([pb.UploadDocumentRequest(data=b"abc")]),
        metadata=[("authorization", f"Bearer {ALPHA_KEY}")],
        timeout=30,
    )
    expect_error(
        grpc.StatusCode.NOT_FOUND,
        "JOB_NOT_FOUND",
        stack.call,
        "GetIngestionJob",
        pb.GetIngestionJobRequest(job_id="0" * 32),
    )
    expect_error(
        grpc.StatusCode.INVALID_ARGUMENT,
        "INVALID_PAGE_TOKEN",
        stack.call,
        "ListKnowledgeBases",
        pb.ListKnowledgeBasesRequest(page_token="%%%"),
    )


def test_worker_killed_mid_ingestion_recovers_without_duplicates(stack: Stack) -> None:
    stack.call("CreateKnowledgeBase", pb.CreateKnowledgeBaseRequest(knowledge_base_id="crash"))
    data = english_text(40, seed=99).encode()
    total = stack.chunk_count(data, "long.txt")
    assert total >= 12  # several batches of 4
    job_id = stack.upload("crash", "long.txt", data).job.job_id
    stream = stack.rag.WatchIngestionJob(
        pb.WatchIngestionJobRequest(job_id=job_id),
        metadata=[("authorization", f"Bearer {ALPHA_KEY}")],
        timeout=240,
    )
    for event in stream:
        if 0 < event.job.chunks_done < total:
            break
        assert event.job.state in (pb.JOB_STATE_QUEUED, pb.JOB_STATE_RUNNING), event.job
    stream.cancel()
    for worker in stack.workers:
        worker.kill()
    partial = stack.stored_chunks("alpha", "crash", "long.txt")
    assert 0 < len(partial) < total
    restarted = stack.start_worker()
    final = stack.wait(job_id)
    assert final.state == pb.JOB_STATE_SUCCEEDED, final.error
    assert final.attempt >= 2
    assert stack.stored_chunks("alpha", "crash", "long.txt") == list(range(total))
    # The resumed run embedded only what the killed one had not stored.
    resumed = f"job {job_id}: {total} chunks ({total - len(partial)} embedded now)"
    assert resumed in restarted.log_path.read_text(), restarted.log_tail()


def _watch_until_progress(stack: Stack, job_id: str, total: int) -> None:
    """Returns once the job has stored some but not all of its chunks."""
    stream = stack.rag.WatchIngestionJob(
        pb.WatchIngestionJobRequest(job_id=job_id),
        metadata=[("authorization", f"Bearer {ALPHA_KEY}")],
        timeout=240,
    )
    for event in stream:
        assert event.job.state in (pb.JOB_STATE_QUEUED, pb.JOB_STATE_RUNNING), event.job
        if 0 < event.job.chunks_done < total:
            stream.cancel()
            return
    raise AssertionError("the job ended before it made progress")


def _wait_for_log(proc: ManagedProcess, text: str, timeout: float = 60) -> None:
    proc.wait_until(lambda: text in proc.log_path.read_text(errors="replace"), timeout, text)


def test_cancel_retry_delete_of_running_jobs_and_kb_delete(stack: Stack) -> None:
    stack.call("CreateKnowledgeBase", pb.CreateKnowledgeBaseRequest(knowledge_base_id="cancel"))
    data = english_text(30, seed=7).encode()
    total = stack.chunk_count(data, "long.txt")
    worker = stack.workers[-1]

    # Cancel while running: the worker stops at its next batch; a retry resumes.
    job_id = stack.upload("cancel", "long.txt", data).job.job_id
    _watch_until_progress(stack, job_id, total)
    cancelled = stack.call("CancelIngestionJob", pb.CancelIngestionJobRequest(job_id=job_id)).job
    assert cancelled.state == pb.JOB_STATE_CANCELLED
    assert cancelled.error.reason == "CANCELLED_BY_USER"
    _wait_for_log(worker, f"job {job_id} abandoned")
    assert stack.wait(job_id).state == pb.JOB_STATE_CANCELLED
    stored = stack.stored_chunks("alpha", "cancel", "long.txt")
    assert 0 < len(stored) < total
    expect_error(
        grpc.StatusCode.FAILED_PRECONDITION,
        "JOB_ALREADY_ENDED",
        stack.call,
        "CancelIngestionJob",
        pb.CancelIngestionJobRequest(job_id=job_id),
    )
    stack.call("RetryIngestionJob", pb.RetryIngestionJobRequest(job_id=job_id))
    assert stack.wait(job_id).state == pb.JOB_STATE_SUCCEEDED
    assert stack.stored_chunks("alpha", "cancel", "long.txt") == list(range(total))
    _wait_for_log(worker, f"job {job_id}: {total} chunks ({total - len(stored)} embedded now)")

    # Delete while running: chunks gone at once, and the job writes no more.
    other = english_text(30, seed=8).encode()
    other_total = stack.chunk_count(other, "other.txt")
    job_id = stack.upload("cancel", "other.txt", other).job.job_id
    _watch_until_progress(stack, job_id, other_total)
    stack.call(
        "DeleteDocument",
        pb.DeleteDocumentRequest(knowledge_base_id="cancel", document_id="other.txt"),
    )
    job = stack.call("GetIngestionJob", pb.GetIngestionJobRequest(job_id=job_id)).job
    assert job.state == pb.JOB_STATE_CANCELLED and job.error.reason == "DOCUMENT_DELETED"
    _wait_for_log(worker, f"job {job_id} abandoned")
    assert stack.stored_chunks("alpha", "cancel", "other.txt") == []

    # Deleting the knowledge base removes its collection, documents and jobs.
    collection = stack.collection("alpha", "cancel")
    stack.call("DeleteKnowledgeBase", pb.DeleteKnowledgeBaseRequest(knowledge_base_id="cancel"))
    expect_error(
        grpc.StatusCode.NOT_FOUND,
        "JOB_NOT_FOUND",
        stack.call,
        "GetIngestionJob",
        pb.GetIngestionJobRequest(job_id=job_id),
    )
    expect_error(
        grpc.StatusCode.NOT_FOUND,
        "COLLECTION_NOT_FOUND",
        stack.retrieval.GetCollection,
        retrieval_pb2.GetCollectionRequest(name=collection),
        timeout=30,
    )
    listed = stack.call("ListKnowledgeBases", pb.ListKnowledgeBasesRequest())
    assert "cancel" not in [k.knowledge_base_id for k in listed.knowledge_bases]


def test_files_with_non_ascii_names_stay_separate_documents(stack: Stack) -> None:
    """Ids derived from names like 报告.txt and 摘要.txt were both `txt`: the second
    upload replaced the first without a word."""
    stack.call("CreateKnowledgeBase", pb.CreateKnowledgeBaseRequest(knowledge_base_id="names"))
    texts = {"报告.txt": "年度报告介绍了收入。", "摘要.txt": "摘要列出了三个发现。"}
    jobs = [stack.wait(stack.upload("names", n, t.encode()).job.job_id) for n, t in texts.items()]
    assert all(j.state == pb.JOB_STATE_SUCCEEDED for j in jobs)
    assert jobs[0].document_id != jobs[1].document_id
    # A document made under the rule before digests (given that id here) is still the one
    # its file replaces: no second copy of it.
    made = stack.upload("names", "Café menu.txt", b"Soup of the day.", document_id="Caf-menu.txt")
    assert stack.wait(made.job.job_id).state == pb.JOB_STATE_SUCCEEDED
    again = stack.wait(stack.upload("names", "Café menu.txt", b"Soup and bread.").job.job_id)
    assert again.state == pb.JOB_STATE_SUCCEEDED and again.document_id == "Caf-menu.txt"
    docs = stack.call("ListDocuments", pb.ListDocumentsRequest(knowledge_base_id="names")).documents
    assert sorted(d.file_name for d in docs) == sorted(["Café menu.txt", *texts])
