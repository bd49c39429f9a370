"""ChunkDocument's messages ⇄ the chunker's plain objects, and the task a worker
process runs: request bytes in, response bytes out (services/chunking/pool.py).

The server never parses a ChunkDocument request or serialises its response:
both cross the pipe to a worker process as the protobuf wire format, and the
worker does the protobuf work too, so the server's own thread stays free.
Protobuf only; no grpc here.
"""

from __future__ import annotations

import logging
from typing import Any

from google.protobuf.message import DecodeError, EncodeError

from ragmesh.chunking.v1 import chunking_pb2
from ragmesh.common.v1 import common_pb2
from services.chunking.chunker import ChunkedDocument, Chunker, ChunkRequest, load_counter
from services.chunking.config import ChunkingSettings
from services.chunking.pages import PageMap
from services.common.errors import InvalidArgument, ResourceExhausted
from services.common.logs import configure_logging

log = logging.getLogger("ragmesh.chunking")


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
    pages = PageMap(result.pages)
    for c in result.chunks:
        where = pages.range(c.start, c.end)
        resp.chunks.append(
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
                page_start=where.start,
                page_end=where.end,
                page_label=where.label,
            )
        )
    return resp


# --------------------------------------------------------------- in a worker process


def init_worker(
    settings: ChunkingSettings, max_message_bytes: int, log_level: str, log_format: str
) -> Chunker:
    """A worker process's state: the chunker with its tokenizer, loaded once."""
    configure_logging("chunking", log_level, log_format)
    return Chunker(settings, load_counter(settings), max_message_bytes)


def chunk_message(chunker: Chunker, request: bytes) -> tuple[dict[str, Any], bytes]:
    """A serialised ChunkDocumentRequest → (a summary for the log, the serialised response)."""
    try:
        message = chunking_pb2.ChunkDocumentRequest.FromString(request)
    except DecodeError:
        # The request reaches this worker as raw bytes (no gRPC deserializer ran).
        raise InvalidArgument(
            "the request is not a valid ChunkDocumentRequest", reason="MALFORMED_REQUEST"
        ) from None
    req = to_request(message)
    result = chunker.chunk(req)
    limit = chunker.max_response_bytes
    try:
        data = to_response(result, req).SerializeToString()
    except EncodeError:  # past protobuf's 2 GiB, when the estimate above falls short
        raise ResourceExhausted(
            "the response is over protobuf's 2 GiB message size",
            reason="RESPONSE_TOO_LARGE",
            metadata={"limit_bytes": limit or 0},
        ) from None
    if limit is not None and len(data) > limit:
        raise ResourceExhausted(
            f"the response is {len(data)} bytes, over the {limit}-byte message limit "
            "(RAGMESH_MAX_MESSAGE_BYTES); use a smaller overlap, a larger max_tokens, or omit "
            "include_normalized_text",
            reason="RESPONSE_TOO_LARGE",
            metadata={"size_bytes": len(data), "limit_bytes": limit},
        )
    summary = {
        "media_type": result.media_type,
        "chars": len(result.text),
        "chunks": len(result.chunks),
        "tokens": result.total_tokens,
        **result.timings,
    }
    return summary, data
