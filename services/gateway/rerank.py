"""The optional reranking stage: retrieval's candidates re-scored by a cross-encoder
behind a standard HTTP API, then cut to top_k.

Two protocols, as the servers that run cross-encoders speak them:

- `tei`: Hugging Face text-embeddings-inference, `POST {url}/rerank` with
  `{"query", "texts", "truncate": true}` → `[{"index", "score"}, …]`.
- `cohere`: the Cohere/Jina-style `POST {url}/v1/rerank` with `{"model", "query",
  "documents", "top_n"}` → `{"results": [{"index", "relevance_score"}, …]}`,
  which vLLM and Infinity serve.

A reranker that is down, slow or answers nonsense never fails a search: the
candidates keep retrieval's order and the outcome says why (`fallback`), so the
caller sees that the ranking is not the reranked one. No grpc here.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import httpx

from services.gateway.config import RerankSettings

PROTOCOLS = ("tei", "cohere")


class RerankFailed(Exception):
    """The reranker gave no usable scores; `reason` names why (the fallback reason)."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason


@dataclass
class RerankOutcome:
    """What happened to one request's ranking (reported to the caller)."""

    requested: bool = False
    applied: bool = False
    #: why the candidates kept retrieval's order: TIMEOUT, UNAVAILABLE, BAD_RESPONSE,
    #: NOT_CONFIGURED; empty when reranked (or not requested)
    fallback: str = ""
    model: str = ""
    candidates: int = 0
    ms: float = 0.0


class Reranker:
    """A client of one reranking server; `scores` is the whole protocol."""

    def __init__(self, settings: RerankSettings) -> None:
        if settings.protocol not in PROTOCOLS:
            raise ValueError(f"RAGMESH_RERANK_PROTOCOL must be one of {', '.join(PROTOCOLS)}")
        self.settings = settings
        headers = {"Authorization": f"Bearer {settings.api_key}"} if settings.api_key else {}
        # The timeout is each call's own (the setting, shortened by the deadline).
        self.client = httpx.AsyncClient(base_url=settings.url.rstrip("/"), headers=headers)

    @property
    def model(self) -> str:
        return self.settings.model or self.settings.protocol

    async def close(self) -> None:
        await self.client.aclose()

    async def scores(self, query: str, texts: Sequence[str], timeout_s: float) -> list[float]:
        """One score per text (higher: more relevant), batches sent concurrently,
        all within `timeout_s`."""
        size = self.settings.batch_size
        batches = [list(texts[i : i + size]) for i in range(0, len(texts), size)]
        try:
            parts = await asyncio.wait_for(
                asyncio.gather(*(self._batch(query, b, timeout_s) for b in batches)),
                timeout=timeout_s,
            )
        except (TimeoutError, httpx.TimeoutException) as exc:
            raise RerankFailed("TIMEOUT", f"no answer within {timeout_s:.2f}s") from exc
        except httpx.HTTPError as exc:
            raise RerankFailed("UNAVAILABLE", type(exc).__name__) from exc
        return [score for part in parts for score in part]

    async def _batch(self, query: str, texts: list[str], timeout_s: float) -> list[float]:
        timeout = httpx.Timeout(timeout_s, connect=min(timeout_s, 3.0))
        if self.settings.protocol == "tei":
            body: dict[str, Any] = {"query": query, "texts": texts, "truncate": True}
            response = await self.client.post("/rerank", json=body, timeout=timeout)
            ranked = _json(response)
            items, key = ranked, "score"
        else:
            body = {"query": query, "documents": texts, "top_n": len(texts)}
            if self.settings.model:
                body["model"] = self.settings.model
            response = await self.client.post("/v1/rerank", json=body, timeout=timeout)
            payload = _json(response)
            items = payload.get("results") if isinstance(payload, dict) else None
            key = "relevance_score"
        return _scores_by_index(items, key, len(texts))


def _json(response: httpx.Response) -> Any:
    if response.status_code >= 500 or response.status_code in (408, 429):
        raise RerankFailed("UNAVAILABLE", f"reranker answered HTTP {response.status_code}")
    if response.status_code != 200:
        raise RerankFailed("BAD_RESPONSE", f"reranker answered HTTP {response.status_code}")
    try:
        return response.json()
    except ValueError as exc:
        raise RerankFailed("BAD_RESPONSE", "reranker answered something not JSON") from exc


def _scores_by_index(items: Any, key: str, count: int) -> list[float]:
    """The scores in the order of the texts sent (servers answer best first)."""
    scores: list[float | None] = [None] * count
    if not isinstance(items, list):
        raise RerankFailed("BAD_RESPONSE", "reranker answer has no result list")
    for item in items:
        index = item.get("index") if isinstance(item, dict) else None
        score = item.get(key) if isinstance(item, dict) else None
        if not isinstance(index, int) or not 0 <= index < count:
            raise RerankFailed("BAD_RESPONSE", "reranker answer has an index out of range")
        if not isinstance(score, int | float) or isinstance(score, bool):
            raise RerankFailed("BAD_RESPONSE", "reranker answer has a score that is no number")
        scores[index] = float(score)
    if any(s is None for s in scores):
        raise RerankFailed("BAD_RESPONSE", "reranker answer misses some texts")
    return [float(s) for s in scores if s is not None]


async def rerank(
    reranker: Reranker | None,
    query: str,
    texts: Sequence[str],
    top_k: int,
    timeout_s: float,
) -> tuple[list[int], list[float] | None, RerankOutcome]:
    """The order to keep (indices into `texts`, at most top_k), the reranker's
    scores (None on fallback) and the outcome. On any failure: retrieval's order."""
    outcome = RerankOutcome(requested=True, candidates=len(texts))
    keep = list(range(min(top_k, len(texts))))
    if reranker is None:
        outcome.fallback = "NOT_CONFIGURED"
        return keep, None, outcome
    outcome.model = reranker.model
    if not texts:
        outcome.applied = True
        return [], [], outcome
    start = time.perf_counter()
    try:
        scores = await reranker.scores(query, texts, timeout_s)
    except RerankFailed as exc:
        outcome.fallback = exc.reason
        return keep, None, outcome
    finally:
        outcome.ms = (time.perf_counter() - start) * 1000
    # Stable: equal scores keep retrieval's order.
    order = sorted(range(len(texts)), key=lambda i: -scores[i])[:top_k]
    outcome.applied = True
    return order, scores, outcome
