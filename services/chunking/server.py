"""gRPC servicer of ragmesh.chunking.v1.ChunkingService (protobuf ⇄ chunker)."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable

import grpc

from ragmesh.chunking.v1 import chunking_pb2, chunking_pb2_grpc
from ragmesh.common.v1 import common_pb2
from services.chunking.chunker import ChunkedDocument, Chunker, ChunkRequest, load_counter
from services.chunking.config import ChunkingSettings
from services.common.config import DEFAULT_PORTS, CommonSettings
from services.common.errors import Cancelled, DeadlineExceeded, ResourceExhausted, Unavailable

log = logging.getLogger("ragmesh.chunking")

SERVICE_NAME = chunking_pb2.DESCRIPTOR.services_by_name["ChunkingService"].full_name


def to_request(msg: chunking_pb2.ChunkDocumentRequest) -> ChunkRequest:
    source = msg.WhichOneof("source")
    return ChunkRequest(
        content=msg.content if source == "content" else None,
        text=msg.text if source == "text" else None,
        media_type=msg.media_type,
        document_id=msg.document_id,
        file_name=msg.file_name,
        max_tokens=msg.options.max_tokens,
        # An absent options message means "server defaults", not "no overlap".
        overlap_tokens=msg.options.overlap_tokens if msg.HasField("options") else -1,
        include_normalized_text=msg.options.include_normalized_text,
    )


def to_response(result: ChunkedDocument, req: ChunkRequest) -> chunking_pb2.ChunkDocumentResponse:
    resp = chunking_pb2.ChunkDocumentResponse(
        media_type=result.media_type,
        title=result.title,
        text_length=len(result.text),
        tokenizer=result.tokenizer,
        total_tokens=result.total_tokens,
        invalid_utf8_replacements=result.invalid_utf8_replacements,
    )
    if req.include_normalized_text:
        resp.normalized_text = result.text
    resp.chunks.extend(
        common_pb2.Chunk(
            document_id=req.document_id,
            chunk_index=c.index,
            text=c.text,
            start_offset=c.start,
            end_offset=c.end,
            token_count=c.token_count,
            heading_path=c.heading_path,
            title=result.title,
            media_type=result.media_type,
        )
        for c in result.chunks
    )
    return resp


class ChunkingServicer(chunking_pb2_grpc.ChunkingServiceServicer):
    def __init__(self, service: ChunkingService) -> None:
        self.service = service

    async def ChunkDocument(
        self, request: chunking_pb2.ChunkDocumentRequest, context: grpc.aio.ServicerContext
    ) -> chunking_pb2.ChunkDocumentResponse:
        return await self.service.chunk_document(request, context)


class ChunkingService:
    name = "chunking"
    service_names = (SERVICE_NAME,)

    def __init__(
        self, settings: ChunkingSettings | None = None, common: CommonSettings | None = None
    ) -> None:
        self.settings = settings or ChunkingSettings()
        # model_validate: CommonSettings' fields all have defaults (read from the environment).
        self.common = common or CommonSettings.model_validate({})
        self.chunker: Chunker | None = None
        self._slots = asyncio.Semaphore(self.settings.max_concurrency)

    def register(self, server: grpc.aio.Server) -> None:
        chunking_pb2_grpc.add_ChunkingServiceServicer_to_server(ChunkingServicer(self), server)

    async def start(self) -> None:
        counter = await asyncio.to_thread(load_counter, self.settings)
        self.chunker = Chunker(self.settings, counter, self.common.max_message_bytes)
        log.info(
            "tokenizer %s loaded; max document %d bytes, default %d tokens per chunk",
            counter.name,
            self.settings.max_document_bytes,
            self.settings.default_max_tokens,
        )

    async def ready(self) -> bool:
        return self.chunker is not None

    async def close(self) -> None:
        self.chunker = None

    async def chunk_document(
        self, request: chunking_pb2.ChunkDocumentRequest, context: grpc.aio.ServicerContext
    ) -> chunking_pb2.ChunkDocumentResponse:
        chunker = self.chunker
        if chunker is None:
            raise Unavailable("the chunking service is starting", reason="NOT_READY")
        req = to_request(request)
        check = _stop_check(context)
        # Chunking is CPU-bound: run it off the event loop (health checks keep
        # answering) and at most max_concurrency at once (memory stays bounded).
        async with self._slots:
            check()
            result = await asyncio.to_thread(chunker.chunk, req, check)
            resp = await asyncio.to_thread(to_response, result, req)
        size = resp.ByteSize()
        if size > self.common.max_message_bytes:
            raise ResourceExhausted(
                f"the response is {size} bytes, over the {self.common.max_message_bytes}-byte "
                "message limit (RAGMESH_MAX_MESSAGE_BYTES); use a smaller overlap, a larger "
                "max_tokens, or omit include_normalized_text",
                reason="RESPONSE_TOO_LARGE",
                metadata={"size_bytes": size, "limit_bytes": self.common.max_message_bytes},
            )
        log.info(
            "chunked %s: %d chars, %d chunks, %d tokens (parse %.2fs, tokenize %.2fs, split %.2fs)",
            result.media_type,
            len(result.text),
            len(result.chunks),
            result.total_tokens,
            result.timings["parse_s"],
            result.timings["tokenize_s"],
            result.timings["split_s"],
        )
        return resp


def _stop_check(context: grpc.aio.ServicerContext) -> Callable[[], None]:
    """A callable for the worker thread: raises once the caller gave up or ran out of time."""
    done = threading.Event()
    context.add_done_callback(lambda _ctx: done.set())
    remaining = context.time_remaining()
    deadline = None if remaining is None else time.monotonic() + remaining

    def check() -> None:
        if done.is_set():
            raise Cancelled("the caller cancelled the call", reason="CANCELLED")
        if deadline is not None and time.monotonic() > deadline:
            raise DeadlineExceeded(
                "the call's deadline passed while chunking", reason="DEADLINE_EXCEEDED"
            )

    return check


def create_service() -> tuple[ChunkingService, int]:
    return ChunkingService(), DEFAULT_PORTS["chunking"]
