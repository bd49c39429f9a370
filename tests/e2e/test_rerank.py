"""Reranking through the gateway: Search asks for it per request or gets it from its
knowledge base's default; the hits come back in the reranker's order with its
scores; a reranker that is down leaves retrieval's order, and the response says so.
The reranker is the stand-in that speaks TEI's `/rerank` with the real MiniLM model.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from devstack.procs import ManagedProcess
from ragmesh.gateway.v1 import gateway_pb2 as pb
from tests.e2e.conftest import Stack, build_stack
from tests.support.embedding_api_standin import EmbeddingAPIStandin

pytestmark = [pytest.mark.slow]

DOCUMENTS = {
    "nile.txt": b"The Nile is the longest river in Africa. It flows north through eleven "
    b"countries and empties into the Mediterranean Sea.\n",
    "sahara.txt": b"The Sahara is the largest hot desert in the world, covering most of "
    b"North Africa.\n",
    "redis.txt": b"Redis is an in-memory key-value store, often used as a cache.\n",
    "milvus.txt": b"Milvus is an open-source vector database for similarity search.\n",
    "water.txt": b"At sea level, pure water boils at 100 degrees Celsius.\n",
}
QUESTION = "Which river is the longest in Africa?"


@pytest.fixture(scope="module")
def reranker() -> Iterator[EmbeddingAPIStandin]:
    server = EmbeddingAPIStandin().start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def stack(
    redis_proc: ManagedProcess,
    start_ragmesh_service: Any,
    tmp_path_factory: pytest.TempPathFactory,
    log_dir: Path,
    reranker: EmbeddingAPIStandin,
) -> Iterator[Stack]:
    s = build_stack(
        start_ragmesh_service,
        # A Redis of its own: its tenants' knowledge bases stay out of other modules' lists.
        f"redis://127.0.0.1:{redis_proc.port}/0",  # type: ignore[attr-defined]
        tmp_path_factory.mktemp("milvus"),
        log_dir,
        gateway_env={"RAGMESH_RERANK_URL": reranker.url, "RAGMESH_RERANK_TIMEOUT_S": "10"},
    )
    try:
        for kb, rerank in (("plain", False), ("reranked", True)):
            s.call(
                "CreateKnowledgeBase",
                pb.CreateKnowledgeBaseRequest(knowledge_base_id=kb, rerank=rerank),
            )
            for name, data in DOCUMENTS.items():
                job = s.wait(s.upload(kb, name, data).job.job_id)
                assert job.state == pb.JOB_STATE_SUCCEEDED, job.error
        yield s
    finally:
        for proc in s.workers:
            proc.stop()


def search(stack: Stack, kb: str, rerank: bool | None = None) -> pb.SearchResponse:
    request = pb.SearchRequest(knowledge_base_id=kb, query=QUESTION, top_k=3)
    if rerank is not None:
        request.rerank = rerank
    response: pb.SearchResponse = stack.call("Search", request)
    return response


def test_reranking_per_request_and_by_the_knowledge_base_s_default(stack: Stack) -> None:
    plain = search(stack, "plain")
    assert not plain.rerank.requested
    assert not any(h.HasField("rerank_score") for h in plain.hits)

    for kb, flag in (("plain", True), ("reranked", None)):
        response = search(stack, kb, flag)
        outcome = response.rerank
        assert outcome.requested and outcome.applied and not outcome.fallback, outcome
        assert outcome.model == "tei" and outcome.candidates == len(DOCUMENTS)
        scores = [h.rerank_score for h in response.hits]
        assert len(scores) == 3 and scores == sorted(scores, reverse=True)
        assert response.hits[0].document_id == "nile.txt"

    # the knowledge base reranks by default; a request may say no
    assert not search(stack, "reranked", False).rerank.requested
    kb = stack.call("GetKnowledgeBase", pb.GetKnowledgeBaseRequest(knowledge_base_id="reranked"))
    assert kb.knowledge_base.rerank


def test_a_reranker_that_is_down_leaves_retrieval_s_order(
    stack: Stack, reranker: EmbeddingAPIStandin
) -> None:
    expected = [h.chunk_id for h in search(stack, "plain", False).hits]
    reranker.stop()
    try:
        response = search(stack, "plain", True)
    finally:
        reranker.start()
    assert response.rerank.requested and not response.rerank.applied
    assert response.rerank.fallback == "UNAVAILABLE"
    assert [h.chunk_id for h in response.hits] == expected
    assert not any(h.HasField("rerank_score") for h in response.hits)
    # back up: reranked again
    assert search(stack, "plain", True).rerank.applied
