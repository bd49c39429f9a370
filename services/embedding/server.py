"""gRPC servicer of ragmesh.embedding.v1.EmbeddingService: protobuf ⇄ EmbeddingCore."""

from __future__ import annotations

import grpc

from ragmesh.embedding.v1 import embedding_pb2, embedding_pb2_grpc
from services.common import errors
from services.common.config import DEFAULT_PORTS
from services.embedding.config import EmbeddingSettings
from services.embedding.core import EmbeddingCore, InputType

SERVICE_NAME = "ragmesh.embedding.v1.EmbeddingService"

_INPUT_TYPES: dict[int, InputType | None] = {
    embedding_pb2.INPUT_TYPE_UNSPECIFIED: None,
    embedding_pb2.INPUT_TYPE_QUERY: InputType.QUERY,
    embedding_pb2.INPUT_TYPE_DOCUMENT: InputType.DOCUMENT,
}


def input_type_of(value: int) -> InputType | None:
    if value not in _INPUT_TYPES:
        raise errors.InvalidArgument(
            f"input_type {value} is not a known InputType (QUERY=1, DOCUMENT=2)",
            reason="UNKNOWN_INPUT_TYPE",
            metadata={"field": "input_type", "value": value},
        )
    return _INPUT_TYPES[value]


class EmbeddingServicer(embedding_pb2_grpc.EmbeddingServiceServicer):
    def __init__(self, core: EmbeddingCore) -> None:
        self.core = core

    async def EmbedTexts(
        self, request: embedding_pb2.EmbedTextsRequest, context: grpc.aio.ServicerContext
    ) -> embedding_pb2.EmbedTextsResponse:
        result = await self.core.embed(
            list(request.texts),
            input_type_of(request.input_type),
            request.truncate,
            model=request.model,
        )
        return embedding_pb2.EmbedTextsResponse(
            embeddings=[embedding_pb2.Embedding(values=row) for row in result.vectors.tolist()],
            model=result.info.model,
            dimension=result.info.dimension,
            token_counts=result.token_counts,
        )

    async def GetModelInfo(
        self, request: embedding_pb2.GetModelInfoRequest, context: grpc.aio.ServicerContext
    ) -> embedding_pb2.GetModelInfoResponse:
        info = await self.core.info(request.model)
        return embedding_pb2.GetModelInfoResponse(
            models=await self.core.model_names(),
            model=info.model,
            dimension=info.dimension,
            max_tokens=info.max_tokens,
            normalized=info.normalized,
            backend=info.backend,
            runtime=info.runtime,
            max_batch_size=self.core.settings.max_texts_per_call,
        )


class EmbeddingService:
    name = "embedding"
    service_names = (SERVICE_NAME,)

    def __init__(self, settings: EmbeddingSettings | None = None) -> None:
        self.settings = settings or EmbeddingSettings()
        self.core = EmbeddingCore(self.settings)

    def register(self, server: grpc.aio.Server) -> None:
        embedding_pb2_grpc.add_EmbeddingServiceServicer_to_server(
            EmbeddingServicer(self.core), server
        )

    async def start(self) -> None:
        await self.core.start()

    async def ready(self) -> bool:
        return await self.core.ready()

    async def close(self) -> None:
        await self.core.close()


def create_service() -> tuple[EmbeddingService, int]:
    return EmbeddingService(), DEFAULT_PORTS["embedding"]
