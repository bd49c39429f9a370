"""What must hold once the faults stop and the queue drains, read from the
records (Redis), the index (the retrieval service over Milvus) and the public
API:

- every accepted job ended SUCCEEDED, or FAILED with the permanent reason its
  file deserves, or CANCELLED because a newer upload replaced it or its
  document was deleted; none is still QUEUED or RUNNING;
- every document the uploader left in place is INDEXED with the bytes it last
  sent, and Milvus holds exactly its recorded chunk count, of its recorded
  version only, with no duplicate chunk id or index;
- a deleted document has no record and no chunk anywhere;
- no chunk in Milvus belongs to a document without a record, and the chunk
  totals agree;
- `kb check` (CheckKnowledgeBase) finds nothing;
- Search and Ask answer.
"""

from __future__ import annotations

import hashlib
import time
from collections import Counter
from dataclasses import dataclass, field

import grpc
import redis

from benchmarks.chaos.corpus import EN_KB, ZH_KB, Doc
from benchmarks.chaos.load import AUTH, Clients, Gateways, Uploads, status_of
from benchmarks.chaos.stack import TENANT, ChaosStack
from ragmesh.gateway.v1 import gateway_pb2 as pb
from ragmesh.retrieval.v1 import retrieval_pb2, retrieval_pb2_grpc
from services.jobs.keys import Keys
from services.jobs.records import DocumentRecord, DocumentState

KBS = (EN_KB, ZH_KB)
FINAL = (pb.JOB_STATE_SUCCEEDED, pb.JOB_STATE_FAILED, pb.JOB_STATE_CANCELLED)


@dataclass
class Verdict:
    violations: list[str] = field(default_factory=list)
    jobs: Counter[str] = field(default_factory=Counter)  # final state (FAILED:reason, …)
    rerun: int = 0  # accepted jobs that ran more than once (attempt > 1)
    documents: int = 0
    deleted: int = 0
    chunks: int = 0
    check_findings: int = -1
    check_documents: int = 0

    @property
    def ok(self) -> bool:
        return not self.violations

    def fail(self, message: str) -> None:
        if len(self.violations) < 200:
            self.violations.append(message)


def all_jobs(gw: Gateways) -> dict[str, pb.IngestionJob]:
    jobs: dict[str, pb.IngestionJob] = {}
    for kb in KBS:
        token = ""
        while True:
            resp = gw.pick().ListIngestionJobs(
                pb.ListIngestionJobsRequest(knowledge_base_id=kb, page_size=1000, page_token=token),
                metadata=AUTH,
                timeout=60,
            )
            jobs.update({j.job_id: j for j in resp.jobs})
            token = resp.next_page_token
            if not token:
                break
    return jobs


def wait_drained(gw: Gateways, uploads: Uploads, timeout_s: float) -> float:
    """Waits until every accepted job is in a final state; returns the seconds."""
    began = time.monotonic()
    waiting: list[str] = []
    while True:
        try:
            jobs = all_jobs(gw)
            waiting = [j for j in uploads.accepted if j in jobs and jobs[j].state not in FINAL]
            if not waiting:
                return time.monotonic() - began
        except grpc.RpcError:
            pass  # a gateway still reconnecting
        if time.monotonic() - began > timeout_s:
            raise TimeoutError(f"jobs still active after {timeout_s:.0f} s: {waiting[:10]}")
        time.sleep(1)


def verify(stack: ChaosStack, gw: Gateways, uploads: Uploads, clients: Clients) -> Verdict:
    v = Verdict()
    _jobs(gw, uploads, v)
    r = redis.Redis.from_url(stack.redis_url)
    channel = grpc.insecure_channel(stack.nodes["retrieval"].addr)
    retrieval = retrieval_pb2_grpc.RetrievalServiceStub(channel)
    try:
        for kb in KBS:
            _index(r, retrieval, kb, uploads, v)
    finally:
        r.close()
        channel.close()
    report = gw.pick().CheckKnowledgeBase(
        pb.CheckKnowledgeBaseRequest(), metadata=AUTH, timeout=120
    )
    v.check_findings = len(report.findings)
    v.check_documents = report.documents_checked
    for f in report.findings:
        v.fail(
            f"kb check: {pb.Inconsistency.Name(f.kind)} {f.knowledge_base_id}/{f.document_id} "
            f"recorded {f.recorded_chunks}, indexed {f.indexed_chunks}"
        )
    _answers(clients, v)
    return v


def _jobs(gw: Gateways, uploads: Uploads, v: Verdict) -> None:
    jobs = all_jobs(gw)
    newest: dict[tuple[str, str], float] = {}
    for job in jobs.values():
        key = (job.knowledge_base_id, job.document_id)
        newest[key] = max(newest.get(key, 0.0), job.create_time.ToMicroseconds() / 1e6)
    for job_id, doc in uploads.accepted.items():
        key = (doc.knowledge_base_id, doc.document_id)
        deleted = uploads.latest.get(key) is None
        job = jobs.get(job_id)
        if job is None:
            # A deleted document's jobs go with it; any other job must stay listed.
            v.jobs["gone (document deleted)" if deleted else "MISSING"] += 1
            if not deleted:
                v.fail(f"job {job_id} of {key} is not listed")
            continue
        v.rerun += job.attempt > 1
        state = pb.JobState.Name(job.state).removeprefix("JOB_STATE_")
        reason = job.error.reason
        v.jobs[f"{state}:{reason}" if reason else state] += 1
        if job.state == pb.JOB_STATE_SUCCEEDED:
            if doc.expect_failure:
                v.fail(f"{doc.document_id} succeeded but deserves {doc.expect_failure}")
        elif job.state == pb.JOB_STATE_FAILED:
            if reason != doc.expect_failure:
                v.fail(f"job {job_id} of {key} FAILED with {reason}: {job.error.message}")
        elif job.state == pb.JOB_STATE_CANCELLED:
            replaced = newest[key] > job.create_time.ToMicroseconds() / 1e6
            if not (deleted or replaced):
                v.fail(
                    f"job {job_id} of {key} CANCELLED ({reason}) but neither replaced nor deleted"
                )
        else:
            v.fail(f"job {job_id} of {key} still {state}")


def _chunks(
    retrieval: retrieval_pb2_grpc.RetrievalServiceStub, collection: str, doc_id: str
) -> list[tuple[str, int, str]]:
    """(id, index, version) of every chunk of a document in Milvus."""
    out: list[tuple[str, int, str]] = []
    token = ""
    while True:
        resp = retrieval.ListChunks(
            retrieval_pb2.ListChunksRequest(
                collection=collection,
                document_id=doc_id,
                page_size=500,
                page_token=token,
                omit_text=True,
            ),
            timeout=60,
        )
        out += [(c.id, c.chunk_index, c.document_version) for c in resp.chunks]
        token = resp.next_page_token
        if not token:
            return out


def _index(
    r: redis.Redis,
    retrieval: retrieval_pb2_grpc.RetrievalServiceStub,
    kb: str,
    uploads: Uploads,
    v: Verdict,
) -> None:
    keys = Keys()
    collection = bytes(r.hget(keys.kb(TENANT, kb), "collection") or b"").decode()
    if not collection:
        v.fail(f"no knowledge base {kb}")
        return
    recorded_total = 0
    for (kb_id, doc_id), doc in sorted(uploads.latest.items()):
        if kb_id == kb:
            raw = r.hgetall(keys.doc(TENANT, kb, doc_id))
            chunks = _chunks(retrieval, collection, doc_id)
            failed = doc is not None and (doc.expect_failure or (kb, doc_id) in uploads.rejected)
            recorded_total += check_document(f"{kb}/{doc_id}", doc, failed, raw, chunks, v)
    indexed = _indexed_documents(retrieval, collection)
    known = {d for (k, d), doc in uploads.latest.items() if k == kb and doc is not None}
    for doc_id in sorted(set(indexed) - known):
        v.fail(f"{kb}: Milvus holds {indexed[doc_id]} chunks of {doc_id}, which has no document")
    total = sum(indexed.values())
    v.chunks += total
    if total != recorded_total:
        v.fail(f"{kb}: {total} chunks in Milvus, {recorded_total} recorded")


def check_document(
    name: str,
    doc: Doc | None,
    failed: bool,
    raw: dict[bytes, bytes],
    chunks: list[tuple[str, int, str]],
    v: Verdict,
) -> int:
    """Checks one document's record against its chunks; returns its recorded
    chunk count."""
    if doc is None:
        v.deleted += 1
        if raw:
            v.fail(f"deleted {name} still has a record")
        if chunks:
            v.fail(f"deleted {name} still has {len(chunks)} chunks in Milvus")
        return 0
    if failed:
        if chunks:
            v.fail(f"{name}, which failed, has {len(chunks)} chunks")
        return 0
    if not raw:
        v.fail(f"{name} has no record")
        return 0
    record = DocumentRecord.from_hash(raw)
    v.documents += 1
    if record.state != DocumentState.INDEXED:
        v.fail(f"{name} is {record.state.value}, not INDEXED")
    if record.content_sha256 != hashlib.sha256(doc.data).hexdigest():
        v.fail(f"{name}: the record is not of the last upload")
    ids, indexes = [c[0] for c in chunks], [c[1] for c in chunks]
    if len(chunks) != record.chunk_count or not chunks:
        v.fail(f"{name}: {len(chunks)} chunks in Milvus, {record.chunk_count} recorded")
    if len(set(ids)) != len(ids) or len(set(indexes)) != len(indexes):
        v.fail(f"{name}: duplicate chunk ids or indexes {sorted(indexes)}")
    others = {c[2] for c in chunks} - {record.version}
    if others:
        v.fail(f"{name}: chunks of another version {others}")
    return record.chunk_count


def _indexed_documents(
    retrieval: retrieval_pb2_grpc.RetrievalServiceStub, collection: str
) -> dict[str, int]:
    found: dict[str, int] = {}
    token = ""
    while True:
        resp = retrieval.ListDocuments(
            retrieval_pb2.ListDocumentsRequest(
                collection=collection, page_size=1000, page_token=token
            ),
            timeout=60,
        )
        found.update({d.document_id: d.chunk_count for d in resp.documents})
        token = resp.next_page_token
        if not token:
            return found


def _answers(clients: Clients, v: Verdict) -> None:
    """Search finds passages in both knowledge bases and Ask answers."""
    for kb, query in ((EN_KB, "wing lift in a slipstream"), (ZH_KB, "游戏")):
        try:
            if not clients.search(kb, query).hits:
                v.fail(f"Search in {kb} found nothing")
        except grpc.RpcError as err:
            v.fail(f"Search in {kb}: {status_of(err)} {err.details()}")  # type: ignore[attr-defined]
    # The LLM may still be working through the clients' last questions: three tries.
    for attempt in range(3):
        try:
            final = clients.ask(EN_KB, "What happens to the lift of a wing in a slipstream?", 120)
            if not (final.answer or final.abstained):
                v.fail("Ask gave an empty answer")
            return
        except grpc.RpcError as err:
            if attempt == 2:
                v.fail(f"Ask: {status_of(err)} {err.details()}")  # type: ignore[attr-defined]
            time.sleep(5)
