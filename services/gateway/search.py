"""Search: the query embedded (unless the mode is BM25 only), the knowledge
base's collection searched, the hits returned as citations."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

import redis.asyncio as aioredis

from ragmesh.common.v1 import common_pb2
from ragmesh.retrieval.v1 import retrieval_pb2
from services.common import api, tracing
from services.common.deadlines import Deadline
from services.gateway import validation as v
from services.gateway.clients import Downstream
from services.gateway.config import GatewaySettings
from services.gateway.convert import citation_from_scored
from services.gateway.rerank import Reranker, RerankOutcome, rerank
from services.jobs.catalogue import kb_not_found
from services.jobs.keys import Keys
from services.jobs.records import KnowledgeBaseRecord


@dataclass
class SearchParams:
    knowledge_base_id: str
    query: str
    mode: int = 0
    fusion: common_pb2.Fusion | None = None
    top_k: int = 0
    min_score: float | None = None
    filters: Sequence[common_pb2.FilterCondition] = field(default_factory=list)
    #: rerank the candidates; None: the knowledge base's default
    rerank: bool | None = None


@dataclass
class Retrieved:
    """The results, best first (after reranking, when it was applied)."""

    results: list[common_pb2.ScoredChunk]
    mode: int
    #: the reranker's score of each result, when reranked
    rerank_scores: list[float] | None = None
    rerank: RerankOutcome | None = None

    def citations(self, numbered: bool = False) -> list[common_pb2.Citation]:
        out = []
        for i, r in enumerate(self.results):
            citation = citation_from_scored(r, i + 1 if numbered else 0)
            if self.rerank_scores is not None:
                citation.rerank_score = self.rerank_scores[i]
            out.append(citation)
        return out

    def rerank_pb(self) -> common_pb2.RerankOutcome | None:
        # The dataclass mirrors the message field for field.
        return None if self.rerank is None else common_pb2.RerankOutcome(**asdict(self.rerank))


def check_search_enums(params: SearchParams) -> None:
    api.check_enum(common_pb2.SearchMode, params.mode, "mode")
    if params.fusion is not None:
        api.check_enum(common_pb2.FusionMethod, params.fusion.method, "fusion.method")
    for condition in params.filters:
        api.check_enum(common_pb2.FilterOperator, condition.operator, "filters.operator")


class Searcher:
    def __init__(
        self,
        keys: Keys,
        aredis: aioredis.Redis,
        downstream: Downstream,
        settings: GatewaySettings,
        reranker: Reranker | None = None,
        rerank_candidates: int = 30,
    ) -> None:
        self.keys = keys
        self.aredis = aredis
        self.downstream = downstream
        self.settings = settings
        self.reranker = reranker
        self.rerank_candidates = rerank_candidates

    async def knowledge_base(
        self, tenant: str, kb_id: str
    ) -> tuple[KnowledgeBaseRecord, list[str]]:
        """The knowledge base and its documents being deleted (hidden from every
        search), read in one round trip on the event loop (the hot path of
        Search and Ask, where a thread hop per call costs more than the read)."""
        async with self.aredis.pipeline(transaction=False) as pipe:
            pipe.hgetall(self.keys.kb(tenant, kb_id))
            pipe.smembers(self.keys.deleting_docs_of(tenant, kb_id))
            raw, deleting = await pipe.execute()
        if not raw:
            raise kb_not_found(kb_id)
        record: KnowledgeBaseRecord = KnowledgeBaseRecord.from_hash(raw)  # bytes from Redis
        return record, sorted(d.decode() for d in deleting)

    def check(self, params: SearchParams) -> SearchParams:
        """Validated parameters, defaults filled in."""
        s = self.settings
        v.check_kb_id(params.knowledge_base_id)
        v.check_text(params.query, "query", s.max_query_chars)
        params.top_k = api.top_k(params.top_k, s.default_top_k, s.max_top_k)
        check_search_enums(params)
        return params

    async def retrieve(
        self,
        tenant: str,
        params: SearchParams,
        deadline: Deadline,
        *,
        known: tuple[KnowledgeBaseRecord, list[str]] | None = None,
        query_vector: list[float] | None = None,
    ) -> Retrieved:
        """The search's hits. Ask passes the knowledge base it has already read and
        the question's vector it needs anyway (`known`, `query_vector`)."""
        with tracing.span("retrieve", {"ragmesh.knowledge_base_id": params.knowledge_base_id}):
            return await self._retrieve(tenant, params, deadline, known, query_vector)

    async def _retrieve(
        self,
        tenant: str,
        params: SearchParams,
        deadline: Deadline,
        known: tuple[KnowledgeBaseRecord, list[str]] | None,
        query_vector: list[float] | None,
    ) -> Retrieved:
        """With reranking: more candidates retrieved, reranked and cut to top_k."""
        kb, deleting = known or await self.knowledge_base(tenant, params.knowledge_base_id)
        wanted = kb.rerank if params.rerank is None else params.rerank
        top_k = params.top_k
        if wanted and self.reranker is not None:  # without one, more candidates serve nothing
            top_k = max(top_k, self.rerank_candidates)
        vector: list[float] = []
        if params.mode != common_pb2.SEARCH_MODE_SPARSE:
            # The knowledge base's own model: its vectors were made by it.
            vector = query_vector or await self.downstream.embed_query(
                params.query, deadline.remaining(), kb.embedding_model
            )
        request = retrieval_pb2.SearchChunksRequest(
            collection=kb.collection,
            query_vector=vector,
            query_text=params.query,
            mode=params.mode,  # type: ignore[arg-type]
            top_k=top_k,
            filters=params.filters,
            exclude_document_ids=deleting,
        )
        if params.fusion is not None:
            request.fusion.CopyFrom(params.fusion)
        if params.min_score is not None:
            request.min_score = params.min_score
        response = await self.downstream.search_chunks(request, deadline.remaining())
        results = list(response.results)
        if not wanted:
            return Retrieved(results, response.mode)
        limit = self.reranker.settings.timeout_s if self.reranker is not None else 0.0
        timeout = min(limit, deadline.remaining())
        with tracing.span("rerank", {"ragmesh.rerank.candidates": len(results)}):
            order, scores, outcome = await rerank(
                self.reranker, params.query, [r.chunk.text for r in results], params.top_k, timeout
            )
        return Retrieved(
            [results[i] for i in order],
            response.mode,
            [scores[i] for i in order] if scores is not None else None,
            outcome,
        )

    async def search(
        self, tenant: str, params: SearchParams, deadline: Deadline
    ) -> tuple[list[common_pb2.Citation], int, common_pb2.RerankOutcome | None]:
        """The hits, best first, the mode that produced them, and what reranking did."""
        result = await self.retrieve(tenant, self.check(params), deadline)
        return result.citations(), result.mode, result.rerank_pb()
