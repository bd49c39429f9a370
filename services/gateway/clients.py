"""The gateway's clients of the internal services (embedding, retrieval,
generation): channels, stubs, and the translation of their failures into the
project's own errors, so that the logic modules above never see grpc.

Requests and responses are the internal services' protobuf messages: they are
the data the logic composes (converting every search hit into another type and
back would only cost time on the hot path).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable
from typing import Any, TypeVar

import grpc

from ragmesh.embedding.v1 import embedding_pb2, embedding_pb2_grpc
from ragmesh.generation.v1 import generation_pb2, generation_pb2_grpc
from ragmesh.retrieval.v1 import retrieval_pb2, retrieval_pb2_grpc
from services.common.api import RESERVATION_METADATA, TENANT_METADATA
from services.common.channels import create_channel
from services.common.config import ServiceAddresses
from services.common.status import from_rpc_error

T = TypeVar("T")

RETRIEVAL_IDEMPOTENT = (
    "GetCollection",
    "ListCollections",
    "ListDocuments",
    "SearchChunks",
    "DeleteDocumentChunks",
    "DeleteCollection",
    "GetCapabilities",
    "ListChunks",
)


async def _call(what: str, call: Awaitable[T]) -> T:
    try:
        return await call
    except grpc.aio.AioRpcError as err:
        raise from_rpc_error(err, f"{what} failed") from err


#: Downstream.generate's first item once the generation service has taken the answer
#: (before the LLM's first token, which may be tens of seconds away).
ACCEPTED = None


class Downstream:
    """Stubs of the internal services; `start` opens the channels on the running loop."""

    def __init__(self, addresses: ServiceAddresses) -> None:
        self.addresses = addresses
        self._channels: list[grpc.aio.Channel] = []

    async def start(self) -> None:
        a = self.addresses
        self._channels = [
            create_channel(
                a.embedding_addr,
                service="ragmesh.embedding.v1.EmbeddingService",
                idempotent_methods=["EmbedTexts", "GetModelInfo"],
            ),
            create_channel(
                a.retrieval_addr,
                service="ragmesh.retrieval.v1.RetrievalService",
                idempotent_methods=RETRIEVAL_IDEMPOTENT,
            ),
            create_channel(a.generation_addr),
        ]
        self.embedding = embedding_pb2_grpc.EmbeddingServiceStub(self._channels[0])
        self.retrieval = retrieval_pb2_grpc.RetrievalServiceStub(self._channels[1])
        self.generation = generation_pb2_grpc.GenerationServiceStub(self._channels[2])

    async def close(self) -> None:
        for channel in self._channels:
            await channel.close()
        self._channels = []

    # ------------------------------------------------------------------ embedding

    async def model_info(
        self, timeout_s: float, model: str = ""
    ) -> embedding_pb2.GetModelInfoResponse:
        return await _call(
            "embedding GetModelInfo",
            self.embedding.GetModelInfo(
                embedding_pb2.GetModelInfoRequest(model=model), timeout=timeout_s
            ),
        )

    async def _embed(
        self, texts: list[str], input_type: int, timeout_s: float, model: str
    ) -> list[list[float]]:
        resp: embedding_pb2.EmbedTextsResponse = await _call(
            "embedding EmbedTexts",
            self.embedding.EmbedTexts(
                embedding_pb2.EmbedTextsRequest(
                    texts=texts,
                    input_type=input_type,  # type: ignore[arg-type]
                    truncate=True,
                    model=model,
                ),
                timeout=timeout_s,
            ),
        )
        return [list(e.values) for e in resp.embeddings]

    async def embed_query(self, text: str, timeout_s: float, model: str = "") -> list[float]:
        vectors = await self._embed([text], embedding_pb2.INPUT_TYPE_QUERY, timeout_s, model)
        return vectors[0]

    async def embed_documents(
        self, texts: list[str], timeout_s: float, per_call: int = 256, model: str = ""
    ) -> list[list[float]]:
        """Vectors of passage texts (verbatim answers' sentences), `per_call` at a
        time (the embedding service's RAGMESH_EMBEDDING_MAX_TEXTS_PER_CALL)."""
        out: list[list[float]] = []
        for i in range(0, len(texts), per_call):
            out.extend(
                await self._embed(
                    texts[i : i + per_call], embedding_pb2.INPUT_TYPE_DOCUMENT, timeout_s, model
                )
            )
        return out

    # ------------------------------------------------------------------ retrieval

    async def create_collection(
        self, request: retrieval_pb2.CreateCollectionRequest, timeout_s: float
    ) -> retrieval_pb2.CreateCollectionResponse:
        return await _call(
            "retrieval CreateCollection",
            self.retrieval.CreateCollection(request, timeout=timeout_s),
        )

    async def get_collection(self, name: str, timeout_s: float) -> retrieval_pb2.Collection:
        resp: retrieval_pb2.GetCollectionResponse = await _call(
            "retrieval GetCollection",
            self.retrieval.GetCollection(
                retrieval_pb2.GetCollectionRequest(name=name), timeout=timeout_s
            ),
        )
        return resp.collection

    async def list_collections(self, timeout_s: float) -> list[retrieval_pb2.Collection]:
        """Every collection of the retrieval service (all pages)."""
        found: list[retrieval_pb2.Collection] = []
        token = ""
        while True:
            resp: retrieval_pb2.ListCollectionsResponse = await _call(
                "retrieval ListCollections",
                self.retrieval.ListCollections(
                    retrieval_pb2.ListCollectionsRequest(page_size=1000, page_token=token),
                    timeout=timeout_s,
                ),
            )
            found.extend(resp.collections)
            token = resp.next_page_token
            if not token:
                return found

    async def list_documents(
        self, collection: str, timeout_s: float
    ) -> dict[str, retrieval_pb2.DocumentSummary]:
        """The documents a collection holds chunks of, by id (all pages)."""
        found: dict[str, retrieval_pb2.DocumentSummary] = {}
        token = ""
        while True:
            resp: retrieval_pb2.ListDocumentsResponse = await _call(
                "retrieval ListDocuments",
                self.retrieval.ListDocuments(
                    retrieval_pb2.ListDocumentsRequest(
                        collection=collection, page_size=1000, page_token=token
                    ),
                    timeout=timeout_s,
                ),
            )
            found.update((d.document_id, d) for d in resp.documents)
            token = resp.next_page_token
            if not token:
                return found

    async def delete_collection(self, name: str, timeout_s: float) -> None:
        await _call(
            "retrieval DeleteCollection",
            self.retrieval.DeleteCollection(
                retrieval_pb2.DeleteCollectionRequest(name=name), timeout=timeout_s
            ),
        )

    async def delete_document_chunks(
        self, collection: str, document_id: str, timeout_s: float
    ) -> None:
        await _call(
            "retrieval DeleteDocumentChunks",
            self.retrieval.DeleteDocumentChunks(
                retrieval_pb2.DeleteDocumentChunksRequest(
                    collection=collection, document_id=document_id
                ),
                timeout=timeout_s,
            ),
        )

    async def search_chunks(
        self, request: retrieval_pb2.SearchChunksRequest, timeout_s: float
    ) -> retrieval_pb2.SearchChunksResponse:
        return await _call(
            "retrieval SearchChunks", self.retrieval.SearchChunks(request, timeout=timeout_s)
        )

    # ----------------------------------------------------------------- generation

    async def generate(
        self,
        request: generation_pb2.GenerateAnswerRequest,
        tenant: str,
        timeout_s: float,
        reservation: str = "",
    ) -> AsyncIterator[Any]:
        """ACCEPTED once the generation service has taken the answer (its initial
        metadata: a place in the LLM's queue or a slot; a refusal comes instead, as the
        call's error), then the GenerateAnswer stream's events (queued, delta, then
        final). The tenant names the generation service's queue line for fairness, the
        reservation (CheckAdmission's) the answer's place in it."""
        metadata: tuple[tuple[str, str], ...] = ((TENANT_METADATA, tenant),)
        if reservation:
            metadata += ((RESERVATION_METADATA, reservation),)
        stream = self.generation.GenerateAnswer(request, timeout=timeout_s, metadata=metadata)
        try:
            await stream.initial_metadata()
            if not stream.done():  # ended already: a refusal, raised by the read below
                yield ACCEPTED
            async for event in stream:
                yield event
        except grpc.aio.AioRpcError as err:
            raise from_rpc_error(err, "generation GenerateAnswer failed") from err
        finally:
            stream.cancel()

    async def rewrite_query(
        self, request: generation_pb2.RewriteQueryRequest, tenant: str, timeout_s: float
    ) -> generation_pb2.RewriteQueryResponse:
        """The generation service's standalone query; it waits in the tenant's
        queue line like an answer."""
        return await _call(
            "generation RewriteQuery",
            self.generation.RewriteQuery(
                request, timeout=timeout_s, metadata=((TENANT_METADATA, tenant),)
            ),
        )

    async def check_admission(
        self, request: generation_pb2.CheckAdmissionRequest, tenant: str, timeout_s: float
    ) -> generation_pb2.CheckAdmissionResponse:
        return await _call(
            "generation CheckAdmission",
            self.generation.CheckAdmission(
                request, timeout=timeout_s, metadata=((TENANT_METADATA, tenant),)
            ),
        )
