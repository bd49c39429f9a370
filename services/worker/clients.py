"""The worker's blocking clients of chunking, embedding and retrieval. A failed
call becomes a TransientError (the task retries later) or a PermanentError (the
job fails), so that the pipeline never sees grpc."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import grpc

from ragmesh.chunking.v1 import chunking_pb2, chunking_pb2_grpc
from ragmesh.common.v1 import common_pb2
from ragmesh.embedding.v1 import embedding_pb2, embedding_pb2_grpc
from ragmesh.retrieval.v1 import retrieval_pb2, retrieval_pb2_grpc
from ragmesh.rpc import retry_delay_of
from services.common.channels import create_sync_channel
from services.common.config import ServiceAddresses
from services.common.status import error_info_of
from services.jobs.records import ErrorRecord
from services.worker.errors import PermanentError, TransientError

T = TypeVar("T")

# Codes worth retrying later: the dependency is down or slow. RESOURCE_EXHAUSTED
# is transient only with a RetryInfo (overloaded, come back later); without one it
# is a limit this document exceeds (DOCUMENT_TOO_LARGE, ...), the same on every try.
TRANSIENT_CODES = {
    grpc.StatusCode.UNAVAILABLE,
    grpc.StatusCode.DEADLINE_EXCEEDED,
    grpc.StatusCode.ABORTED,
    grpc.StatusCode.CANCELLED,
}


def classify_rpc_error(err: grpc.RpcError, what: str) -> Exception:
    """A failed downstream call as TransientError or PermanentError."""
    code: grpc.StatusCode = err.code()
    info = error_info_of(err)
    error = ErrorRecord(
        code=code.name,
        reason=info.reason if info is not None and info.reason else f"DOWNSTREAM_{code.name}",
        message=f"{what}: {err.details()}",
        domain=info.domain if info is not None and info.domain else "worker.ragmesh",
        metadata=dict(info.metadata) if info is not None else {},
    )
    transient = code in TRANSIENT_CODES or (
        code == grpc.StatusCode.RESOURCE_EXHAUSTED and retry_delay_of(err) is not None
    )
    return TransientError(error) if transient else PermanentError(error)


def _call(what: str, fn: Callable[..., T], request: Any, timeout: float) -> T:
    try:
        return fn(request, timeout=timeout)
    except grpc.RpcError as err:
        raise classify_rpc_error(err, what) from err


@dataclass
class Timeouts:
    chunk_s: float
    embed_s: float
    index_s: float


class Clients:
    def __init__(self, addresses: ServiceAddresses, timeouts: Timeouts) -> None:
        self.timeouts = timeouts
        self.channels: list[grpc.Channel] = [
            create_sync_channel(
                addresses.chunking_addr,
                service="ragmesh.chunking.v1.ChunkingService",
                idempotent_methods=["ChunkDocument"],
            ),
            create_sync_channel(
                addresses.embedding_addr,
                service="ragmesh.embedding.v1.EmbeddingService",
                idempotent_methods=["EmbedTexts", "GetModelInfo"],
            ),
            create_sync_channel(
                addresses.retrieval_addr,
                service="ragmesh.retrieval.v1.RetrievalService",
                idempotent_methods=["UpsertChunks", "ListChunks", "DeleteDocumentChunks"],
            ),
        ]
        self.chunking = chunking_pb2_grpc.ChunkingServiceStub(self.channels[0])
        self.embedding = embedding_pb2_grpc.EmbeddingServiceStub(self.channels[1])
        self.retrieval = retrieval_pb2_grpc.RetrievalServiceStub(self.channels[2])

    def close(self) -> None:
        for channel in self.channels:
            channel.close()

    def chunk(
        self, request: chunking_pb2.ChunkDocumentRequest
    ) -> chunking_pb2.ChunkDocumentResponse:
        return _call("chunking", self.chunking.ChunkDocument, request, self.timeouts.chunk_s)

    def embed_documents(self, texts: Sequence[str], model: str = "") -> list[list[float]]:
        resp: embedding_pb2.EmbedTextsResponse = _call(
            "embedding",
            self.embedding.EmbedTexts,
            embedding_pb2.EmbedTextsRequest(
                texts=list(texts),
                input_type=embedding_pb2.INPUT_TYPE_DOCUMENT,
                truncate=True,
                model=model,
            ),
            self.timeouts.embed_s,
        )
        return [list(e.values) for e in resp.embeddings]

    def upsert(
        self,
        collection: str,
        document_id: str,
        version: str,
        chunks: Sequence[tuple[common_pb2.Chunk, Sequence[float]]],
    ) -> None:
        """Appends a batch of one document version's chunks (older versions go)."""
        _call(
            "retrieval",
            self.retrieval.UpsertChunks,
            retrieval_pb2.UpsertChunksRequest(
                collection=collection,
                document_id=document_id,
                document_version=version,
                chunks=[retrieval_pb2.ChunkToUpsert(chunk=c, vector=v) for c, v in chunks],
                mode=retrieval_pb2.UPSERT_MODE_APPEND_BATCH,
            ),
            self.timeouts.index_s,
        )

    def delete_chunks(self, collection: str, document_id: str) -> None:
        _call(
            "retrieval",
            self.retrieval.DeleteDocumentChunks,
            retrieval_pb2.DeleteDocumentChunksRequest(
                collection=collection, document_id=document_id
            ),
            self.timeouts.index_s,
        )

    def stored_indexes(self, collection: str, document_id: str, version: str) -> set[int]:
        """Chunk indexes of this document version already in the collection."""
        indexes: set[int] = set()
        page_token = ""
        while True:
            resp: retrieval_pb2.ListChunksResponse = _call(
                "retrieval",
                self.retrieval.ListChunks,
                retrieval_pb2.ListChunksRequest(
                    collection=collection,
                    document_id=document_id,
                    document_version=version,
                    page_size=1000,
                    page_token=page_token,
                    omit_text=True,
                ),
                self.timeouts.index_s,
            )
            indexes.update(c.chunk_index for c in resp.chunks)
            page_token = resp.next_page_token
            if not page_token:
                return indexes
