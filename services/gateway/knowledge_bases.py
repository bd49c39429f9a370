"""Knowledge bases: create (record, then collection, undone together when the
collection cannot be made), read, list, delete."""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass, field
from typing import Any

from ragmesh.retrieval.v1 import retrieval_pb2
from services.common.api import struct_from_dict
from services.common.deadlines import Deadline
from services.common.errors import InvalidArgument, NotFound, ServiceError
from services.gateway import validation as v
from services.gateway.clients import Downstream
from services.jobs.records import KnowledgeBaseRecord
from services.jobs.state import JobsState

MAX_DESCRIPTION_CHARS = 2000


@dataclass
class KnowledgeBaseSpec:
    knowledge_base_id: str
    description: str = ""
    language: int = 0
    metric: int = 0
    index_type: int = 0
    index_params: dict[str, Any] = field(default_factory=dict)


class KnowledgeBases:
    def __init__(self, state: JobsState, downstream: Downstream) -> None:
        self.state = state
        self.downstream = downstream

    async def create(
        self, tenant: str, spec: KnowledgeBaseSpec, deadline: Deadline
    ) -> KnowledgeBaseRecord:
        kb = v.check_kb_id(spec.knowledge_base_id)
        if len(spec.description) > MAX_DESCRIPTION_CHARS:
            raise InvalidArgument(
                f"description is longer than {MAX_DESCRIPTION_CHARS} characters",
                reason="DESCRIPTION_TOO_LONG",
            )
        info = await self.downstream.model_info(deadline.remaining())
        record = KnowledgeBaseRecord(
            tenant=tenant,
            knowledge_base_id=kb,
            collection=v.collection_name(tenant, kb),
            description=spec.description,
            language=spec.language,
            metric=spec.metric,
            index_type=spec.index_type,
            index_params=spec.index_params,
            embedding_model=info.model,
            dimension=info.dimension,
            create_time=time.time(),
        )
        catalogue = self.state.catalogue
        await asyncio.to_thread(catalogue.create_kb, record)
        try:
            created = await self.downstream.create_collection(
                retrieval_pb2.CreateCollectionRequest(
                    name=record.collection,
                    dimension=info.dimension,
                    metric=spec.metric,  # type: ignore[arg-type]
                    index_type=spec.index_type,  # type: ignore[arg-type]
                    index_params=struct_from_dict(spec.index_params),
                    language=spec.language,  # type: ignore[arg-type]
                ),
                deadline.remaining(),
            )
        except ServiceError as exc:
            if exc.code != "ALREADY_EXISTS":  # left over from a failed earlier attempt: reuse
                with contextlib.suppress(ServiceError):
                    await asyncio.to_thread(catalogue.delete_kb_record, tenant, kb)
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

    async def get(self, tenant: str, kb_id: str) -> tuple[KnowledgeBaseRecord, int]:
        """The record and its document count."""
        kb = v.check_kb_id(kb_id)
        record = await asyncio.to_thread(self.state.catalogue.get_kb, tenant, kb)
        count = await asyncio.to_thread(self.state.catalogue.document_count, tenant, kb)
        return record, count

    async def list(
        self, tenant: str, page_size: int, page_token: str
    ) -> tuple[list[tuple[KnowledgeBaseRecord, int]], str]:
        catalogue = self.state.catalogue
        records, nxt = await asyncio.to_thread(catalogue.list_kbs, tenant, page_size, page_token)
        counted = [
            (rec, await asyncio.to_thread(catalogue.document_count, tenant, rec.knowledge_base_id))
            for rec in records
        ]
        return counted, nxt

    async def delete(self, tenant: str, kb_id: str, deadline: Deadline) -> None:
        """The record first (nothing new can enter), then documents and jobs,
        then the collection."""
        kb = v.check_kb_id(kb_id)
        record = await asyncio.to_thread(self.state.catalogue.delete_kb_record, tenant, kb)
        await asyncio.to_thread(self.state.book.purge_kb, tenant, kb)
        with contextlib.suppress(NotFound):
            await self.downstream.delete_collection(record.collection, deadline.remaining())
