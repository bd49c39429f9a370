"""Documents and consistency calls of the blocking client (a mixin of
RagmeshClient, which provides `_call`, `_stream` and `_stub`)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from ragmesh.client import builders
from ragmesh.client._channel import DEFAULT_UPLOAD_TIMEOUT_S
from ragmesh.gateway.v1 import gateway_pb2


class DocumentCalls:
    # Provided by the client class.
    _stub: Any
    _call: Callable[..., Any]
    _stream: Callable[..., Any]

    # -- documents --------------------------------------------------------------------------

    def get_document(
        self, knowledge_base_id: str, document_id: str, *, timeout: float | None = None
    ) -> gateway_pb2.Document:
        req = gateway_pb2.GetDocumentRequest(
            knowledge_base_id=knowledge_base_id, document_id=document_id
        )
        return self._call(self._stub.GetDocument, req, timeout).document

    def list_documents(
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
        return self._call(self._stub.ListDocuments, req, timeout)

    def iter_documents(
        self, knowledge_base_id: str, *, page_size: int = 0
    ) -> Iterator[gateway_pb2.Document]:
        for page in builders.pages(
            lambda t: self.list_documents(knowledge_base_id, page_size=page_size, page_token=t)
        ):
            yield from page.documents

    def delete_document(
        self, knowledge_base_id: str, document_id: str, *, timeout: float | None = None
    ) -> None:
        req = gateway_pb2.DeleteDocumentRequest(
            knowledge_base_id=knowledge_base_id, document_id=document_id
        )
        self._call(self._stub.DeleteDocument, req, timeout)

    def get_document_text(
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
        return self._call(self._stub.GetDocumentText, req, timeout)

    def document_text(self, knowledge_base_id: str, document_id: str) -> str:
        """The document's whole normalised text (every page)."""
        parts = [
            p.text
            for p in builders.text_pages(
                lambda o: self.get_document_text(knowledge_base_id, document_id, offset=o)
            )
        ]
        return "".join(parts)

    def download_document(
        self, knowledge_base_id: str, document_id: str, *, timeout: float = DEFAULT_UPLOAD_TIMEOUT_S
    ) -> tuple[gateway_pb2.DownloadHeader, bytes]:
        """The document's original bytes, as uploaded, with its file name and media type."""
        req = gateway_pb2.DownloadDocumentRequest(
            knowledge_base_id=knowledge_base_id, document_id=document_id
        )
        return builders.download(self._stream(self._stub.DownloadDocument, req, timeout))

    # -- consistency ------------------------------------------------------------------------

    def check_knowledge_base(
        self, knowledge_base_id: str = "", *, repair: bool = False, timeout: float | None = None
    ) -> gateway_pb2.CheckKnowledgeBaseResponse:
        """Records against the index (all knowledge bases when empty); `repair` fixes them."""
        req = gateway_pb2.CheckKnowledgeBaseRequest(
            knowledge_base_id=knowledge_base_id, repair=repair
        )
        return self._call(self._stub.CheckKnowledgeBase, req, timeout)

    def reindex_knowledge_base(
        self, knowledge_base_id: str, *, model: str = "", timeout: float | None = None
    ) -> gateway_pb2.ReindexKnowledgeBaseResponse:
        """Re-embeds every document into a new collection (with `model`, if named);
        switches when complete."""
        req = gateway_pb2.ReindexKnowledgeBaseRequest(
            knowledge_base_id=knowledge_base_id, model=model
        )
        return self._call(self._stub.ReindexKnowledgeBase, req, timeout)
