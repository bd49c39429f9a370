"""Errors reach the caller whole over a real socket, whatever the request.

Request bytes that are not a protobuf message of the method's type fail
INVALID_ARGUMENT / MALFORMED_REQUEST over a real socket — in unary, server-streaming
and client-streaming calls — where gRPC alone answers UNKNOWN ("Exception
deserializing request") or, for a stream, lets the decode error escape the
handler as INTERNAL. And an error whose message echoes a huge input still arrives
with its ErrorInfo, where its trailers used to exceed gRPC's limit. Found by the
fuzz suite (tests/fuzz)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc
import pytest

from ragmesh.gateway.v1 import gateway_pb2 as pb
from services.common import errors
from services.common.channels import create_channel
from services.common.config import CommonSettings
from services.common.server import RunningServer, start_server
from services.common.status import error_info_of
from tests.support.toy_service import ToyService

# Each is refused by the protobuf decoder.
MALFORMED = [
    b"\x12\x05ab",  # a length past the end
    b"\x12\x02\xc0\xaf",  # invalid UTF-8 in a string field (2: text, question)
    b"\x00",  # field number 0
    b"\x08" + b"\xff" * 11,  # an overlong varint
    b"\xc3\x3e" * 200 + b"\xc4\x3e" * 200,  # groups nested past the depth limit
]


class _Uploads(ToyService):
    """The toy service plus a client-streaming method (the gateway's upload shape)."""

    def register(self, server: grpc.aio.Server) -> None:
        super().register(server)

        async def upload(
            requests: AsyncIterator[pb.UploadDocumentRequest], context: grpc.aio.ServicerContext
        ) -> pb.UploadDocumentResponse:
            size = 0
            async for request in requests:
                size += len(request.data)
            return pb.UploadDocumentResponse(document=pb.Document(size_bytes=size))

        async def echo_error(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
            huge = "é" * 8000
            raise errors.InvalidArgument(
                f"invalid knowledge base id {huge!r}",
                reason="INVALID_KNOWLEDGE_BASE_ID",
                metadata={"knowledge_base_id": huge},
            )

        server.add_generic_rpc_handlers(
            (
                grpc.method_handlers_generic_handler(
                    "ragmesh.embedding.v1.EmbeddingService",
                    {"GetModelInfo": grpc.unary_unary_rpc_method_handler(echo_error)},
                ),
                grpc.method_handlers_generic_handler(
                    "ragmesh.gateway.v1.RagService",
                    {
                        "UploadDocument": grpc.stream_unary_rpc_method_handler(
                            upload,
                            request_deserializer=pb.UploadDocumentRequest.FromString,
                            response_serializer=pb.UploadDocumentResponse.SerializeToString,
                        )
                    },
                ),
            )
        )


@pytest.fixture
async def channel() -> AsyncIterator[grpc.aio.Channel]:
    settings = CommonSettings(readiness_interval_s=0.05, shutdown_grace_s=1.0)
    running: RunningServer = await start_server(_Uploads(), 0, settings, 0)
    channel = create_channel(f"127.0.0.1:{running.port}")
    yield channel
    await channel.close()
    await running.stop()


def _malformed(err: grpc.aio.AioRpcError) -> None:
    info = error_info_of(err)
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT, (err.code(), err.details())
    assert info is not None and info.reason == "MALFORMED_REQUEST"


@pytest.mark.parametrize("raw", MALFORMED)
async def test_unary(channel: grpc.aio.Channel, raw: bytes) -> None:
    call = channel.unary_unary("/ragmesh.chunking.v1.ChunkingService/ChunkDocument")
    with pytest.raises(grpc.aio.AioRpcError) as exc:
        await call(raw, timeout=5)
    _malformed(exc.value)


@pytest.mark.parametrize("raw", MALFORMED)
async def test_server_streaming(channel: grpc.aio.Channel, raw: bytes) -> None:
    call = channel.unary_stream("/ragmesh.generation.v1.GenerationService/GenerateAnswer")
    with pytest.raises(grpc.aio.AioRpcError) as exc:
        async for _ in call(raw, timeout=5):
            pass
    _malformed(exc.value)


# invalid UTF-8 in header.file_name, the upload's string field
UPLOAD_MALFORMED = [*MALFORMED[:1], b"\x0a\x04\x1a\x02\xc0\xaf", *MALFORMED[2:]]


@pytest.mark.parametrize("raw", UPLOAD_MALFORMED)
async def test_client_streaming_after_good_messages(channel: grpc.aio.Channel, raw: bytes) -> None:
    call = channel.stream_unary("/ragmesh.gateway.v1.RagService/UploadDocument")
    good = pb.UploadDocumentRequest(data=b"abc").SerializeToString()
    with pytest.raises(grpc.aio.AioRpcError) as exc:
        await call(iter([good, raw, good]), timeout=5)
    _malformed(exc.value)


async def test_well_formed_bytes_still_work(channel: grpc.aio.Channel) -> None:
    call = channel.stream_unary("/ragmesh.gateway.v1.RagService/UploadDocument")
    good = pb.UploadDocumentRequest(data=b"abc").SerializeToString()
    # An unknown field is skipped, as protobuf says.
    resp = pb.UploadDocumentResponse.FromString(
        await call(iter([good, good + b"\xf8\x3e\x01"]), timeout=5)
    )
    assert resp.document.size_bytes == 6


async def test_an_error_echoing_a_huge_input_arrives_with_its_reason(
    channel: grpc.aio.Channel,
) -> None:
    call = channel.unary_unary("/ragmesh.embedding.v1.EmbeddingService/GetModelInfo")
    with pytest.raises(grpc.aio.AioRpcError) as exc:
        await call(b"", timeout=5)
    info = error_info_of(exc.value)
    assert exc.value.code() == grpc.StatusCode.INVALID_ARGUMENT, exc.value.details()
    assert info is not None and info.reason == "INVALID_KNOWLEDGE_BASE_ID"
