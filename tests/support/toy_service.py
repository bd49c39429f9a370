"""A toy service on the real server bootstrap, for testing the plumbing itself.

It implements ChunkingService and GenerationService with behaviour chosen by
the request text, so tests can drive every path of the interceptor: success,
a domain error, an unexpected exception, a slow call, a failing stream.
Run as a program (`python -m tests.support.toy_service PORT`) to test SIGTERM.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator

import grpc

from ragmesh.chunking.v1 import chunking_pb2, chunking_pb2_grpc
from ragmesh.generation.v1 import generation_pb2, generation_pb2_grpc
from services.common import errors
from services.common.logs import request_id_var


class _Chunking(chunking_pb2_grpc.ChunkingServiceServicer):
    async def ChunkDocument(
        self, request: chunking_pb2.ChunkDocumentRequest, context: grpc.aio.ServicerContext
    ) -> chunking_pb2.ChunkDocumentResponse:
        match request.text:
            case "invalid":
                raise errors.InvalidArgument(
                    "text is invalid", reason="TOY_INVALID", metadata={"field": "text"}
                )
            case "too-large":
                raise errors.ResourceExhausted("over the limit", reason="TOY_TOO_LARGE")
            case "busy":
                raise errors.ResourceExhausted("busy", reason="TOY_BUSY", retry_after_s=0.5)
            case "crash":
                raise ZeroDivisionError("division by zero")
            case "timeout":
                raise TimeoutError("took too long")
            case "slow":
                await asyncio.sleep(2.0)
        # Echo the request id the interceptor put in the context variable.
        return chunking_pb2.ChunkDocumentResponse(title=request_id_var.get())


class _Generation(generation_pb2_grpc.GenerationServiceServicer):
    async def GenerateAnswer(
        self, request: generation_pb2.GenerateAnswerRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[generation_pb2.GenerateAnswerResponse]:
        yield generation_pb2.GenerateAnswerResponse(delta=generation_pb2.AnswerDelta(text="a"))
        if request.question == "fail":
            raise errors.Unavailable("upstream down", reason="TOY_UPSTREAM_DOWN")
        yield generation_pb2.GenerateAnswerResponse(delta=generation_pb2.AnswerDelta(text="b"))


class ToyService:
    name = "toy"
    service_names = (
        "ragmesh.chunking.v1.ChunkingService",
        "ragmesh.generation.v1.GenerationService",
    )

    def __init__(self, start_delay: float = 0.0) -> None:
        self.start_delay = start_delay
        self.is_ready = True
        self.closed = False

    def register(self, server: grpc.aio.Server) -> None:
        chunking_pb2_grpc.add_ChunkingServiceServicer_to_server(_Chunking(), server)
        generation_pb2_grpc.add_GenerationServiceServicer_to_server(_Generation(), server)

    async def start(self) -> None:
        await asyncio.sleep(self.start_delay)

    async def ready(self) -> bool:
        return self.is_ready

    async def close(self) -> None:
        self.closed = True


if __name__ == "__main__":
    from services.common import server

    server.run(
        ToyService(start_delay=float(sys.argv[2]) if len(sys.argv) > 2 else 0.0), int(sys.argv[1])
    )
