"""Documents and consistency calls of the asyncio client (a mixin of
AsyncRagmeshClient, which provides `_call`, `_stream` and `_stub`)."""

# `timeout` is the gRPC deadline sent to the server, as in grpc.aio itself.
# ruff: noqa: ASYNC109

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

from ragmesh.client import builders
from ragmesh.client._channel import DEFAULT_UPLOAD_TIMEOUT_S
from ragmesh.gateway.v1 import gateway_pb2


class AsyncDocumentCalls:
    # Provided by the client class.
    _stub: Any
    _call: Callable[..., Any]
    _stream: Callable[..., Any]

    # -- documents --------------------------------------------------------------------------

    async def get_document(
        self, knowledge_base_id: str, document_id: str, *, timeout: float | None = None
    ) -> gateway_pb2.Document:
        req = gateway_pb2.GetDocumentRequest(
            knowledge_base_id=knowledge_base_id, document_id=document_id
        )
        return (await self._call(self._stub.GetDocument, req, timeout)).document

    async def list_documents(
        self,
        knowledge_base_id: str,
        *,
        page_size: int = 0,
        page_token: str = "",
        timeout: float | None = None,
    ) -> gateway_pb2.ListDocumentsResponse:
        req = gateway_pb2.ListDocumentsRequest(
            knowledge_base_id=knowledge_base_id, page_size=page_size, page_token=page_token
        )
        return await self._call(self._stub.ListDocuments, req, timeout)

    async def iter_documents(
        self, knowledge_base_id: str, *, page_size: int = 0
    ) -> AsyncIterator[gateway_pb2.Document]:
        async for page in builders.apages(
            lambda t: self.list_documents(knowledge_base_id, page_size=page_size, page_token=t)
        ):
            for doc in page.documents:
                yield doc

    async def delete_document(
        self, knowledge_base_id: str, document_id: str, *, timeout: float | None = None
    ) -> None:
        req = gateway_pb2.DeleteDocumentRequest(
            knowledge_base_id=knowledge_base_id, document_id=document_id
        )
        await self._call(self._stub.DeleteDocument, req, timeout)

    async def get_document_text(
        self,
        knowledge_base_id: str,
        document_id: str,
        *,
        offset: int = 0,
        max_chars: int = 0,
        timeout: float | None = None,
    ) -> gateway_pb2.GetDocumentTextResponse:
        """A page of the document's normalised text, which offsets refer to."""
        req = builders.text_request(knowledge_base_id, document_id, offset, max_chars)
        return await self._call(self._stub.GetDocumentText, req, timeout)

    async def document_text(self, knowledge_base_id: str, document_id: str) -> str:
        """The document's whole normalised text (every page)."""
        parts, offset = [], 0
        while True:
            page = await self.get_document_text(knowledge_base_id, document_id, offset=offset)
            parts.append(page.text)
            offset = page.next_offset
            if not offset:
                return "".join(parts)

    async def download_document(
        self, knowledge_base_id: str, document_id: str, *, timeout: float = DEFAULT_UPLOAD_TIMEOUT_S
    ) -> tuple[gateway_pb2.DownloadHeader, bytes]:
        """The document's original bytes, as uploaded, with its file name and media type."""
        req = gateway_pb2.DownloadDocumentRequest(
            knowledge_base_id=knowledge_base_id, document_id=document_id
        )
        messages = [m async for m in self._stream(self._stub.DownloadDocument, req, timeout)]
        return builders.download(messages)

    # -- consistency ------------------------------------------------------------------------

    async def check_knowledge_base(
        self, knowledge_base_id: str = "", *, repair: bool = False, timeout: float | None = None
    ) -> gateway_pb2.CheckKnowledgeBaseResponse:
        """Records against the index (all knowledge bases when empty); `repair` fixes them."""
        req = gateway_pb2.CheckKnowledgeBaseRequest(
            knowledge_base_id=knowledge_base_id, repair=repair
        )
        return await self._call(self._stub.CheckKnowledgeBase, req, timeout)

    async def reindex_knowledge_base(
        self, knowledge_base_id: str, *, model: str = "", timeout: float | None = None
    ) -> gateway_pb2.ReindexKnowledgeBaseResponse:
        """Re-embeds every document into a new collection (with `model`, if named);
        switches when complete."""
        req = gateway_pb2.ReindexKnowledgeBaseRequest(
            knowledge_base_id=knowledge_base_id, model=model
        )
        return await self._call(self._stub.ReindexKnowledgeBase, req, timeout)
