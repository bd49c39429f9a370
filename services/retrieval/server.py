"""gRPC face of the retrieval service: protobuf ⇄ the logic in retriever.py."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import grpc
from google.protobuf import struct_pb2

from ragmesh.common.v1 import common_pb2
from ragmesh.retrieval.v1 import retrieval_pb2 as pb
from ragmesh.retrieval.v1 import retrieval_pb2_grpc
from services.common.api import dict_from_struct, value_from_proto
from services.common.config import DEFAULT_PORTS
from services.common.errors import InvalidArgument
from services.retrieval.config import RetrievalSettings
from services.retrieval.retriever import FusionSpec, Retriever, SearchQuery
from services.retrieval.schema import (
    ChunkRecord,
    CollectionInfo,
    CollectionSpec,
    FilterOp,
    FilterSpec,
    FusionMethod,
    IndexType,
    Language,
    Metric,
    SearchHit,
    SearchMode,
    UpsertMode,
)

SERVICE_NAME = "ragmesh.retrieval.v1.RetrievalService"

_METRICS = {
    common_pb2.METRIC_COSINE: Metric.COSINE,
    common_pb2.METRIC_L2: Metric.L2,
    common_pb2.METRIC_IP: Metric.IP,
}
_INDEXES = {
    common_pb2.INDEX_TYPE_FLAT: IndexType.FLAT,
    common_pb2.INDEX_TYPE_IVF_FLAT: IndexType.IVF_FLAT,
    common_pb2.INDEX_TYPE_HNSW: IndexType.HNSW,
    common_pb2.INDEX_TYPE_AUTOINDEX: IndexType.AUTOINDEX,
}
_LANGUAGES = {
    common_pb2.TEXT_LANGUAGE_ENGLISH: Language.ENGLISH,
    common_pb2.TEXT_LANGUAGE_CHINESE: Language.CHINESE,
}
_MODES = {
    common_pb2.SEARCH_MODE_DENSE: SearchMode.DENSE,
    common_pb2.SEARCH_MODE_SPARSE: SearchMode.SPARSE,
    common_pb2.SEARCH_MODE_HYBRID: SearchMode.HYBRID,
}
_FUSIONS = {
    common_pb2.FUSION_METHOD_RRF: FusionMethod.RRF,
    common_pb2.FUSION_METHOD_WEIGHTED: FusionMethod.WEIGHTED,
}
_OPS = {
    common_pb2.FILTER_OPERATOR_EQ: FilterOp.EQ,
    common_pb2.FILTER_OPERATOR_NE: FilterOp.NE,
    common_pb2.FILTER_OPERATOR_IN: FilterOp.IN,
    common_pb2.FILTER_OPERATOR_LT: FilterOp.LT,
    common_pb2.FILTER_OPERATOR_LE: FilterOp.LE,
    common_pb2.FILTER_OPERATOR_GT: FilterOp.GT,
    common_pb2.FILTER_OPERATOR_GE: FilterOp.GE,
}
_UPSERT_MODES = {
    pb.UPSERT_MODE_UNSPECIFIED: UpsertMode.REPLACE,
    pb.UPSERT_MODE_REPLACE: UpsertMode.REPLACE,
    pb.UPSERT_MODE_APPEND_BATCH: UpsertMode.APPEND_BATCH,
}

log = logging.getLogger("ragmesh.retrieval")


def _reverse(mapping: dict[Any, Any]) -> dict[Any, Any]:
    return {v: k for k, v in mapping.items()}


_METRIC_PB, _INDEX_PB, _LANGUAGE_PB, _MODE_PB = (
    _reverse(_METRICS),
    _reverse(_INDEXES),
    _reverse(_LANGUAGES),
    _reverse(_MODES),
)


def _enum(mapping: dict[Any, Any], value: int, what: str, default: Any = None) -> Any:
    if value == 0 and default is not None:
        return default
    try:
        return mapping[value]
    except KeyError:
        raise InvalidArgument(
            f"unknown {what} {value}", reason="INVALID_ENUM", metadata={"field": what}
        ) from None


def _deadline(context: grpc.aio.ServicerContext) -> float | None:
    left = context.time_remaining()
    return None if left is None else time.monotonic() + left


def _struct(value: dict[str, Any]) -> struct_pb2.Struct:
    out = struct_pb2.Struct()
    out.update(value)
    return out


def collection_pb(info: CollectionInfo) -> pb.Collection:
    spec = info.spec
    return pb.Collection(
        name=spec.name,
        dimension=spec.dimension,
        metric=_METRIC_PB[spec.metric],
        index_type=_INDEX_PB[spec.index_type],
        index_params=_struct(spec.index_params),
        language=_LANGUAGE_PB[spec.language],
        sparse_enabled=info.sparse_enabled,
        chunk_count=info.chunk_count,
        labels=spec.labels,
    )


def chunk_pb(chunk: ChunkRecord) -> common_pb2.Chunk:
    return common_pb2.Chunk(
        id=chunk.id,
        document_id=chunk.document_id,
        chunk_index=chunk.chunk_index,
        text=chunk.text,
        start_offset=chunk.start_offset,
        end_offset=chunk.end_offset,
        token_count=chunk.token_count,
        heading_path=chunk.heading_path,
        title=chunk.title,
        metadata=_struct(chunk.metadata),
        source=chunk.source,
        language=chunk.language,
        media_type=chunk.media_type,
        document_version=chunk.document_version,
        page_start=chunk.page_start,
        page_end=chunk.page_end,
        page_label=chunk.page_label,
    )


def chunk_record(item: pb.ChunkToUpsert) -> ChunkRecord:
    c = item.chunk
    return ChunkRecord(
        document_id=c.document_id,
        chunk_index=c.chunk_index,
        text=c.text,
        document_version=c.document_version,
        title=c.title,
        heading_path=list(c.heading_path),
        start_offset=c.start_offset,
        end_offset=c.end_offset,
        token_count=c.token_count,
        source=c.source,
        language=c.language,
        media_type=c.media_type,
        metadata=dict_from_struct(c.metadata, "metadata"),
        vector=list(item.vector),
        page_start=c.page_start,
        page_end=c.page_end,
        page_label=c.page_label,
    )


def filter_spec(cond: common_pb2.FilterCondition) -> FilterSpec:
    op = _enum(_OPS, cond.operator, "filter operator")
    kind = cond.value.WhichOneof("kind")
    value = None if kind in (None, "null_value") else value_from_proto(cond.value, "filters.value")
    return FilterSpec(field=cond.field, op=op, value=value)


def scored_pb(hit: SearchHit) -> common_pb2.ScoredChunk:
    return common_pb2.ScoredChunk(
        chunk=chunk_pb(hit.chunk),
        score=hit.score,
        dense_rank=hit.dense_rank,
        sparse_rank=hit.sparse_rank,
    )


class RetrievalServicer(retrieval_pb2_grpc.RetrievalServiceServicer):
    def __init__(self, retriever: Retriever) -> None:
        self.r = retriever

    async def CreateCollection(
        self, request: pb.CreateCollectionRequest, context: grpc.aio.ServicerContext
    ) -> pb.CreateCollectionResponse:
        params: dict[str, int] = {}
        for key, value in dict_from_struct(request.index_params, "index_params").items():
            if (
                isinstance(value, bool)
                or not isinstance(value, (int, float))
                or (float(value) != int(value))
            ):
                raise InvalidArgument(
                    f"index parameter {key!r} must be an integer", reason="INVALID_INDEX_PARAMS"
                )
            params[key] = int(value)
        spec = CollectionSpec(
            name=request.name,
            dimension=request.dimension,
            metric=_enum(_METRICS, request.metric, "metric", Metric.COSINE),
            index_type=_enum(_INDEXES, request.index_type, "index type", IndexType.HNSW),
            index_params=params,
            language=_enum(_LANGUAGES, request.language, "language", Language.ENGLISH),
            labels=dict(request.labels),
        )
        info = await self.r.create_collection(spec, _deadline(context))
        return pb.CreateCollectionResponse(collection=collection_pb(info))

    async def GetCollection(
        self, request: pb.GetCollectionRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetCollectionResponse:
        info = await self.r.get_collection(request.name, _deadline(context))
        return pb.GetCollectionResponse(collection=collection_pb(info))

    async def ListCollections(
        self, request: pb.ListCollectionsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListCollectionsResponse:
        infos, token = await self.r.list_collections(
            request.page_size, request.page_token, _deadline(context)
        )
        return pb.ListCollectionsResponse(
            collections=[collection_pb(i) for i in infos], next_page_token=token
        )

    async def DeleteCollection(
        self, request: pb.DeleteCollectionRequest, context: grpc.aio.ServicerContext
    ) -> pb.DeleteCollectionResponse:
        await self.r.delete_collection(request.name, _deadline(context))
        return pb.DeleteCollectionResponse()

    async def UpsertChunks(
        self, request: pb.UpsertChunksRequest, context: grpc.aio.ServicerContext
    ) -> pb.UpsertChunksResponse:
        mode = _enum(_UPSERT_MODES, request.mode, "upsert mode")
        result = await self.r.upsert_chunks(
            collection=request.collection,
            document_id=request.document_id,
            version=request.document_version,
            chunks=[chunk_record(c) for c in request.chunks],
            mode=mode,
            deadline=_deadline(context),
        )
        return pb.UpsertChunksResponse(upserted_count=result.upserted, deleted_count=result.deleted)

    async def DeleteDocumentChunks(
        self, request: pb.DeleteDocumentChunksRequest, context: grpc.aio.ServicerContext
    ) -> pb.DeleteDocumentChunksResponse:
        deleted = await self.r.delete_document_chunks(
            request.collection, request.document_id, _deadline(context)
        )
        return pb.DeleteDocumentChunksResponse(deleted_count=deleted)

    async def ListDocuments(
        self, request: pb.ListDocumentsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListDocumentsResponse:
        docs, token, total = await self.r.list_documents(
            request.collection, request.page_size, request.page_token, _deadline(context)
        )
        return pb.ListDocumentsResponse(
            documents=[
                pb.DocumentSummary(
                    document_id=d.document_id,
                    chunk_count=d.chunk_count,
                    document_version=d.document_version,
                )
                for d in docs
            ],
            next_page_token=token,
            total_size=total,
        )

    async def ListChunks(
        self, request: pb.ListChunksRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListChunksResponse:
        chunks, token = await self.r.list_chunks(
            collection=request.collection,
            document_id=request.document_id,
            version=request.document_version,
            page_size=request.page_size,
            page_token=request.page_token,
            omit_text=request.omit_text,
            deadline=_deadline(context),
        )
        return pb.ListChunksResponse(chunks=[chunk_pb(c) for c in chunks], next_page_token=token)

    async def SearchChunks(
        self, request: pb.SearchChunksRequest, context: grpc.aio.ServicerContext
    ) -> pb.SearchChunksResponse:
        f = request.fusion
        query = SearchQuery(
            collection=request.collection,
            vector=list(request.query_vector),
            text=request.query_text,
            mode=_enum(_MODES, request.mode, "search mode") if request.mode else None,
            fusion=FusionSpec(
                method=_enum(_FUSIONS, f.method, "fusion method") if f.method else None,
                rrf_k=f.rrf_k,
                dense_weight=f.dense_weight,
                sparse_weight=f.sparse_weight,
            ),
            top_k=request.top_k,
            min_score=request.min_score if request.HasField("min_score") else None,
            filters=[filter_spec(c) for c in request.filters],
            exclude_document_ids=list(request.exclude_document_ids),
        )
        hits, mode = await self.r.search(query, _deadline(context))
        return pb.SearchChunksResponse(results=[scored_pb(h) for h in hits], mode=_MODE_PB[mode])

    async def GetCapabilities(
        self, request: pb.GetCapabilitiesRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetCapabilitiesResponse:
        caps = await self.r.capabilities(_deadline(context))
        return pb.GetCapabilitiesResponse(
            backend=caps.backend,
            server_version=caps.server_version,
            sparse_supported=caps.sparse_supported,
            hybrid_supported=caps.hybrid_supported,
            index_types=[_INDEX_PB[i] for i in caps.index_types],
            analyzers=caps.analyzers,
            filter_fields=self.r.filter_fields(),
            max_top_k=self.r.settings.max_top_k,
        )


class RetrievalService:
    """The service object `services.common.server` runs."""

    name = "retrieval"
    service_names = (SERVICE_NAME,)

    def __init__(self, settings: RetrievalSettings | None = None) -> None:
        self.settings = settings or RetrievalSettings()
        self.retriever = Retriever(self.settings)

    def register(self, server: grpc.aio.Server) -> None:
        retrieval_pb2_grpc.add_RetrievalServiceServicer_to_server(
            RetrievalServicer(self.retriever), server
        )

    async def start(self) -> None:
        # Never fail start-up because Milvus is down: health stays NOT_SERVING
        # and the readiness check keeps trying, instead of a crash loop.
        await self.retriever.check()

    async def ready(self) -> bool:
        return await self.retriever.check()

    async def close(self) -> None:
        # Deferred flushes only speed searches up (the rows are durable without them),
        # so a slow or down Milvus does not hold the shutdown long.
        try:
            await asyncio.wait_for(self.retriever.flusher.flush_all(), 5)
        except TimeoutError:
            log.warning("pending flushes not done at shutdown")
        self.retriever.close()


def create_service() -> tuple[RetrievalService, int]:
    return RetrievalService(), DEFAULT_PORTS["retrieval"]
