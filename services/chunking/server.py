"""gRPC servicer of ragmesh.chunking.v1.ChunkingService.

ChunkDocument runs in a pool of worker processes (services/chunking/pool.py):
each document is parsed and split in a child that is killed when it runs over
its time budget (RAGMESH_CHUNKING_PARSE_TIMEOUT_S) or when its caller goes
away, under a memory cap (RAGMESH_CHUNKING_WORKER_MEMORY_MB). The method is
registered with raw bytes in and out: the request's wire format goes to the
child as it arrived and the child's serialised response goes back as it is
(services/chunking/convert.py), so this process only waits, and its event
loop keeps answering health checks and other calls.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import grpc

from ragmesh.chunking.v1 import chunking_pb2
from services.chunking.config import ChunkingSettings
from services.chunking.convert import chunk_message, init_worker
from services.chunking.pool import WorkerPool
from services.common import tracing
from services.common.config import DEFAULT_PORTS, CommonSettings
from services.common.errors import Unavailable
from services.common.logs import request_id_var

log = logging.getLogger("ragmesh.chunking")

SERVICE_NAME = chunking_pb2.DESCRIPTOR.services_by_name["ChunkingService"].full_name


class ChunkingService:
    name = "chunking"
    service_names = (SERVICE_NAME,)

    def __init__(
        self, settings: ChunkingSettings | None = None, common: CommonSettings | None = None
    ) -> None:
        self.settings = settings or ChunkingSettings()
        # model_validate: CommonSettings' fields all have defaults (read from the environment).
        self.common = common or CommonSettings.model_validate({})
        self.pool: WorkerPool | None = None

    def register(self, server: grpc.aio.Server) -> None:
        # No (de)serialisers: the handler takes and returns the wire format.
        handlers = {"ChunkDocument": grpc.unary_unary_rpc_method_handler(self.chunk_document)}
        server.add_generic_rpc_handlers(
            (grpc.method_handlers_generic_handler(SERVICE_NAME, handlers),)
        )
        server.add_registered_method_handlers(SERVICE_NAME, handlers)

    async def start(self) -> None:
        s = self.settings
        pool = WorkerPool(
            s.max_concurrency,
            init_worker,
            (s, self.common.max_message_bytes, self.common.log_level, self.common.log_format),
            memory_mb=s.worker_memory_mb,
            name="chunking",
        )
        await pool.start()
        self.pool = pool
        log.info(
            "%d chunking workers ready (pids %s); max document %d bytes, budget %gs and "
            "%s MiB per document",
            s.max_concurrency,
            pool.pids(),
            s.max_document_bytes,
            s.parse_timeout_s,
            s.worker_memory_mb or "unlimited",
        )

    async def ready(self) -> bool:
        return self.pool is not None and self.pool.ready()

    async def close(self) -> None:
        pool, self.pool = self.pool, None
        if pool is not None:
            await pool.close()

    async def chunk_document(self, request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        pool = self.pool
        if pool is None:
            raise Unavailable("the chunking service is starting", reason="NOT_READY")
        remaining = context.time_remaining()
        with tracing.span("chunk.document") as span:
            summary, response = await pool.run(
                chunk_message,
                request,
                self.settings.parse_timeout_s,
                deadline=None if remaining is None else time.monotonic() + remaining,
                request_id=request_id_var.get(),
            )
            if span.is_recording():
                step_spans(span, summary)
        log.info(
            "chunked %s: %d chars, %d chunks, %d tokens (parse %.2fs, tokenize %.2fs, split %.2fs)",
            summary["media_type"],
            summary["chars"],
            summary["chunks"],
            summary["tokens"],
            summary["parse_s"],
            summary["tokenize_s"],
            summary["split_s"],
        )
        return response


def step_spans(span: tracing.Span, summary: dict[str, Any]) -> None:
    """The child process's parse, tokenize and split steps as spans, laid end to
    end so that the last ends now (the child times them; the wait for a free
    child comes before them), and the document's figures as attributes."""
    span.set_attributes(
        {
            "ragmesh.media_type": str(summary["media_type"]),
            "ragmesh.chars": int(summary["chars"]),
            "ragmesh.chunks": int(summary["chunks"]),
            "ragmesh.tokens": int(summary["tokens"]),
        }
    )
    tracing.span_steps(
        [(f"chunk.{step}", float(summary[f"{step}_s"])) for step in ("parse", "tokenize", "split")]
    )


def create_service() -> tuple[ChunkingService, int]:
    return ChunkingService(), DEFAULT_PORTS["chunking"]
