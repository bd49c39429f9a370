"""The reranking client (services/gateway/rerank.py) against a stand-in that speaks
each protocol exactly and scores with the real MiniLM model
(tests/support/embedding_api_standin.py): the order it returns, batching, and the
fallback to retrieval's order when the reranker is slow, down or answers nonsense.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import numpy as np
import pytest

from devstack.procs import free_port
from services.gateway.config import RerankSettings
from services.gateway.rerank import Reranker, RerankFailed, _scores_by_index, rerank
from tests.support.embedding_api_standin import EmbeddingAPIStandin

QUERY = "Which river is the longest in Africa?"
TEXTS = [
    "Redis is an in-memory key-value store.",
    "The Sahara is the largest hot desert.",
    "The Nile is the longest river in Africa; it flows north into the Mediterranean.",
    "Milvus is a vector database.",
    "Mount Kilimanjaro is the highest mountain in Africa.",
    "Celery is a distributed task queue.",
    "Water boils at 100 degrees Celsius at sea level.",
]


@pytest.fixture(scope="module")
def standin() -> Iterator[EmbeddingAPIStandin]:
    server = EmbeddingAPIStandin().start()
    yield server
    server.stop()


def expected_scores(standin: EmbeddingAPIStandin) -> list[float]:
    vectors = np.asarray(standin.model.embed([QUERY, *TEXTS]), dtype=np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    return [float(s) for s in vectors[1:] @ vectors[0]]


def reranker(standin: EmbeddingAPIStandin, **settings: object) -> Reranker:
    return Reranker(RerankSettings(url=standin.url, **settings))  # type: ignore[arg-type]


@pytest.mark.parametrize("protocol", ["tei", "cohere"])
def test_each_protocol_reorders_by_the_model_s_scores_in_batches(
    standin: EmbeddingAPIStandin, protocol: str
) -> None:
    async def run() -> tuple[list[int], list[float] | None, object]:
        client = reranker(standin, protocol=protocol, batch_size=3, model="minilm")
        try:
            return await rerank(client, QUERY, TEXTS, top_k=3, timeout_s=30)
        finally:
            await client.close()

    before = len(standin.requests)
    order, scores, outcome = asyncio.run(run())
    path = "/rerank" if protocol == "tei" else "/v1/rerank"
    assert standin.requests[before:] == [("POST", path)] * 3  # 7 texts in batches of 3
    truth = expected_scores(standin)
    assert order == sorted(range(len(TEXTS)), key=lambda i: -truth[i])[:3]
    assert order[0] == 2  # the Nile
    assert scores is not None and scores == pytest.approx(truth, abs=1e-5)
    assert outcome.applied and not outcome.fallback and outcome.candidates == len(TEXTS)  # type: ignore[attr-defined]


def test_a_slow_reranker_times_out_and_keeps_retrieval_s_order(
    standin: EmbeddingAPIStandin,
) -> None:
    async def run() -> tuple[list[int], list[float] | None, object]:
        client = reranker(standin)
        try:
            return await rerank(client, QUERY, TEXTS, top_k=4, timeout_s=0.3)
        finally:
            await client.close()

    standin.rerank_delay_s = 2.0
    try:
        order, scores, outcome = asyncio.run(run())
    finally:
        standin.rerank_delay_s = 0.0
    assert order == [0, 1, 2, 3] and scores is None
    assert not outcome.applied and outcome.fallback == "TIMEOUT"  # type: ignore[attr-defined]
    assert outcome.ms < 1500  # type: ignore[attr-defined]


def test_a_reranker_that_is_down_or_answers_nonsense_falls_back(
    standin: EmbeddingAPIStandin,
) -> None:
    async def run(url: str, protocol: str) -> object:
        client = Reranker(RerankSettings(url=url, protocol=protocol))
        try:
            return (await rerank(client, QUERY, TEXTS, top_k=2, timeout_s=5))[2]
        finally:
            await client.close()

    # an endpoint the server does not have: HTTP 404
    assert asyncio.run(run(f"{standin.url}/nothing", "cohere")).fallback == "BAD_RESPONSE"  # type: ignore[attr-defined]
    # nothing listening
    url = f"http://127.0.0.1:{free_port()}"
    assert asyncio.run(run(url, "tei")).fallback == "UNAVAILABLE"  # type: ignore[attr-defined]


def test_no_reranker_configured_is_reported() -> None:
    order, scores, outcome = asyncio.run(rerank(None, QUERY, TEXTS, top_k=2, timeout_s=1))
    assert order == [0, 1] and scores is None
    assert outcome.requested and outcome.fallback == "NOT_CONFIGURED"


@pytest.mark.parametrize(
    "answer",
    [
        {"results": []},  # an object where TEI answers a list
        [{"index": 0, "score": 0.5}],  # a text missing
        [{"index": 0, "score": 0.5}, {"index": 5, "score": 0.1}],  # index out of range
        [{"index": 0, "score": "high"}, {"index": 1, "score": 0.1}],  # not a number
        [{"index": 0, "score": True}, {"index": 1, "score": 0.1}],  # bool is no score
    ],
)
def test_malformed_answers_are_bad_responses(answer: object) -> None:
    with pytest.raises(RerankFailed) as err:
        _scores_by_index(answer, "score", 2)
    assert err.value.reason == "BAD_RESPONSE"
