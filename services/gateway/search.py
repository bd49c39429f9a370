"""Search: the query embedded (unless the mode is BM25 only), the knowledge
base's collection searched, the hits returned as citations."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import redis.asyncio as aioredis

from ragmesh.common.v1 import common_pb2
from ragmesh.retrieval.v1 import retrieval_pb2
from services.common import api
from services.common.deadlines import Deadline
from services.gateway import validation as v
from services.gateway.clients import Downstream
from services.gateway.config import GatewaySettings
from services.gateway.convert import citation_from_scored
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
    ) -> None:
        self.keys = keys
        self.aredis = aredis
        self.downstream = downstream
        self.settings = settings

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
    ) -> retrieval_pb2.SearchChunksResponse:
        """The search's hits. Ask passes the knowledge base it has already read and
        the question's vector it needs anyway (`known`, `query_vector`)."""
        kb, deleting = known or await self.knowledge_base(tenant, params.knowledge_base_id)
        vector: list[float] = []
        if params.mode != common_pb2.SEARCH_MODE_SPARSE:
            vector = query_vector or await self.downstream.embed_query(
                params.query, deadline.remaining()
            )
        request = retrieval_pb2.SearchChunksRequest(
            collection=kb.collection,
            query_vector=vector,
            query_text=params.query,
            mode=params.mode,  # type: ignore[arg-type]
            top_k=params.top_k,
            filters=params.filters,
            exclude_document_ids=deleting,
        )
        if params.fusion is not None:
            request.fusion.CopyFrom(params.fusion)
        if params.min_score is not None:
            request.min_score = params.min_score
        return await self.downstream.search_chunks(request, deadline.remaining())

    async def search(
        self, tenant: str, params: SearchParams, deadline: Deadline
    ) -> tuple[list[common_pb2.Citation], int]:
        """The hits, best first, and the mode that produced them."""
        result = await self.retrieve(tenant, self.check(params), deadline)
        return [citation_from_scored(r) for r in result.results], result.mode
