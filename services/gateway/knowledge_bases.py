"""Knowledge bases: create (record, then collection, undone together when the
collection cannot be made), read, list, delete."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass, field
from typing import Any

from ragmesh.common.v1 import common_pb2
from ragmesh.gateway.v1 import gateway_pb2 as pb
from ragmesh.retrieval.v1 import retrieval_pb2
from services.common import api
from services.common.api import struct_from_dict
from services.common.deadlines import Deadline
from services.common.errors import InvalidArgument, NotFound, ServiceError
from services.gateway import validation as v
from services.gateway.clients import Downstream
from services.gateway.models import model_for
from services.jobs.deletes import PendingKb
from services.jobs.rebuilds import ReindexProgress
from services.jobs.records import KnowledgeBaseRecord
from services.jobs.state import JobsState

log = logging.getLogger("ragmesh.gateway")

MAX_DESCRIPTION_CHARS = 2000


@dataclass
class KnowledgeBaseSpec:
    knowledge_base_id: str
    description: str = ""
    language: int = 0
    metric: int = 0
    index_type: int = 0
    index_params: dict[str, Any] = field(default_factory=dict)
    rerank: bool = False
    answer_mode: int = 0
    #: embedding model (name or alias); empty = the one configured for the language
    model: str = ""


# Labels every collection of a knowledge base carries (kb check finds orphans by them).
TENANT_LABEL, KB_LABEL = "ragmesh.tenant", "ragmesh.knowledge_base"


def collection_request(
    record: KnowledgeBaseRecord, name: str, dimension: int
) -> retrieval_pb2.CreateCollectionRequest:
    """The collection `name` of a knowledge base (its first, a re-created one, or
    one a re-index fills), as its record describes it."""
    return retrieval_pb2.CreateCollectionRequest(
        name=name,
        dimension=dimension,
        metric=record.metric,  # type: ignore[arg-type]
        index_type=record.index_type,  # type: ignore[arg-type]
        index_params=struct_from_dict(record.index_params),
        language=record.language,  # type: ignore[arg-type]
        labels={TENANT_LABEL: record.tenant, KB_LABEL: record.knowledge_base_id},
    )


@dataclass(frozen=True)
class KnowledgeBaseView:
    """What GetKnowledgeBase shows: the record, its document count and, while
    it is being re-indexed, how far that has got."""

    record: KnowledgeBaseRecord
    document_count: int
    reindex: ReindexProgress | None = None


class KnowledgeBases:
    def __init__(
        self,
        state: JobsState,
        downstream: Downstream,
        *,
        chinese_model: str = "",
        english_model: str = "",
    ) -> None:
        self.state = state
        self.downstream = downstream
        self.chinese_model = chinese_model
        self.english_model = english_model

    async def _model_info(self, spec: KnowledgeBaseSpec, deadline: Deadline) -> Any:
        """The embedding model's description: the one named, else the language's; a
        language default the embedding service does not serve falls back to its default
        (a model named explicitly must exist: UNKNOWN_MODEL)."""
        model = model_for(
            spec.model,
            spec.language,
            chinese_model=self.chinese_model,
            english_model=self.english_model,
        )
        try:
            return await self.downstream.model_info(deadline.remaining(), model)
        except NotFound as exc:
            if spec.model.strip() or not model or exc.reason != "UNKNOWN_MODEL":
                raise
            log.warning("embedding model %s not served; using the default", model)
            return await self.downstream.model_info(deadline.remaining())

    async def create(
        self, tenant: str, spec: KnowledgeBaseSpec, deadline: Deadline
    ) -> KnowledgeBaseRecord:
        kb = v.check_kb_id(spec.knowledge_base_id)
        api.check_enum(common_pb2.TextLanguage, spec.language, "language")
        api.check_enum(common_pb2.Metric, spec.metric, "metric")
        api.check_enum(common_pb2.IndexType, spec.index_type, "index_type")
        api.check_enum(pb.AnswerMode, spec.answer_mode, "answer_mode")
        if len(spec.description) > MAX_DESCRIPTION_CHARS:
            raise InvalidArgument(
                f"description is longer than {MAX_DESCRIPTION_CHARS} characters",
                reason="DESCRIPTION_TOO_LONG",
            )
        info = await self._model_info(spec, deadline)
        record = KnowledgeBaseRecord(
            tenant=tenant,
            knowledge_base_id=kb,
            collection=v.collection_name(tenant, kb, v.new_generation()),
            description=spec.description,
            language=spec.language,
            metric=spec.metric,
            index_type=spec.index_type,
            index_params=spec.index_params,
            answer_mode=spec.answer_mode,
            embedding_model=info.model,
            dimension=info.dimension,
            create_time=time.time(),
            rerank=spec.rerank,
        )
        catalogue = self.state.catalogue
        await asyncio.to_thread(self.state.deletes.check_recreate, tenant, kb)
        await asyncio.to_thread(catalogue.create_kb, record)
        try:
            created = await self.downstream.create_collection(
                collection_request(record, record.collection, record.dimension),
                deadline.remaining(),
            )
        except ServiceError:
            # A new generation's collection cannot exist already: nothing to reuse.
            with contextlib.suppress(Exception):
                await asyncio.to_thread(catalogue.discard_kb, tenant, kb)
            raise
        else:
            col = created.collection
            record.metric, record.index_type, record.language = (
                col.metric,
                col.index_type,
                col.language,
            )
            await asyncio.to_thread(
                catalogue.update_kb,
                tenant,
                kb,
                metric=col.metric,
                index_type=col.index_type,
                language=col.language,
            )
        return record

    async def get(self, tenant: str, kb_id: str) -> KnowledgeBaseView:
        """The record, its document count and the progress of a re-index."""
        kb = v.check_kb_id(kb_id)
        record = await asyncio.to_thread(self.state.catalogue.get_kb, tenant, kb)
        return await self._view(record)

    async def list(
        self, tenant: str, page_size: int, page_token: str
    ) -> tuple[list[KnowledgeBaseView], str]:
        catalogue = self.state.catalogue
        records, nxt = await asyncio.to_thread(catalogue.list_kbs, tenant, page_size, page_token)
        return [await self._view(rec) for rec in records], nxt

    async def _view(self, record: KnowledgeBaseRecord) -> KnowledgeBaseView:
        tenant, kb = record.tenant, record.knowledge_base_id
        count = await asyncio.to_thread(self.state.catalogue.document_count, tenant, kb)
        reindex = None
        if record.reindex_collection:
            reindex = await asyncio.to_thread(self.state.rebuilds.progress, tenant, kb)
        return KnowledgeBaseView(record, count, reindex)

    async def delete(self, tenant: str, kb_id: str, deadline: Deadline) -> None:
        """Gone for the tenant at once (a tombstone replaces the record), then its
        documents and jobs are purged and its collection dropped. Milvus down:
        UNAVAILABLE, and the sweeper (or this call again) finishes the drop."""
        kb = v.check_kb_id(kb_id)
        deletes = self.state.deletes
        try:
            await asyncio.to_thread(deletes.begin_kb_delete, tenant, kb)
        except NotFound:
            if not await asyncio.to_thread(deletes.pending_kbs_of, tenant, kb):
                raise  # neither live nor being deleted
        for pending in await asyncio.to_thread(deletes.pending_kbs_of, tenant, kb):
            await finish_kb_delete(self.state, self.downstream, pending, deadline.remaining())


async def finish_kb_delete(
    state: JobsState, downstream: Downstream, pending: PendingKb, timeout_s: float
) -> None:
    """Purges the records of a deleted knowledge base, drops its collection, then
    its tombstone (each step again if repeated)."""
    await asyncio.to_thread(state.deletes.purge_kb, pending)
    with contextlib.suppress(NotFound):  # dropped already
        await downstream.delete_collection(pending.collection, timeout_s)
    await asyncio.to_thread(state.deletes.finish_kb_delete, pending)
