"""The SDK against a scripted RagService over a real gRPC socket.

The server here stands in for the gateway (built separately) so that the
client's own behaviour is pinned down: credentials on every call, statuses
with ErrorInfo turned into typed exceptions, the upload stream, stream
iterators and waiting for jobs. The real gateway is exercised in tests/e2e.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc
import pytest

from devstack.procs import free_port
from ragmesh.client import (
    AsyncRagmeshClient,
    JobFailedError,
    NotFoundError,
    RagmeshClient,
    ResourceExhaustedError,
    UnauthenticatedError,
    UnavailableError,
)
from ragmesh.client.retry import RetryPolicy
from ragmesh.common.v1 import common_pb2
from ragmesh.gateway.v1 import gateway_pb2, gateway_pb2_grpc
from services.common import errors
from services.common.status import to_status

API_KEY = "unit-test-key"
J = gateway_pb2


def _job(job_id: str, state: int, **kw: Any) -> gateway_pb2.IngestionJob:
    return J.IngestionJob(job_id=job_id, file_name="f.md", state=state, **kw)  # type: ignore[arg-type]


class ScriptedGateway(gateway_pb2_grpc.RagServiceServicer):
    def __init__(self) -> None:
        self.uploads: list[tuple[gateway_pb2.UploadHeader, bytes, int]] = []
        self.calls: dict[str, int] = {}
        self.job_calls: list[tuple[str, str]] = []  # (Get|Watch, job id), in order
        self.lingering_watch_ends: list[bool] = []  # j-linger: the call still live at its end

    def _auth(self, context: grpc.ServicerContext) -> None:
        if dict(context.invocation_metadata()).get("authorization") != f"Bearer {API_KEY}":
            context.abort_with_status(
                to_status(
                    errors.Unauthenticated("invalid API key", reason="INVALID_API_KEY"), "gateway"
                )
            )

    def GetKnowledgeBase(self, request: Any, context: grpc.ServicerContext) -> Any:
        self._auth(context)
        kb = request.knowledge_base_id
        self.calls[kb] = self.calls.get(kb, 0) + 1
        if kb == "busy" and self.calls[kb] <= 2:  # full twice, then served
            context.abort_with_status(
                to_status(
                    errors.ResourceExhausted("queue full", reason="BUSY", retry_after_s=0.05),
                    "gateway",
                )
            )
        if kb == "locked":  # a lockout: RetryInfo for the caller, never retried by the SDK
            context.abort_with_status(
                to_status(
                    errors.ResourceExhausted(
                        "too many failed authentications",
                        reason="AUTH_RATE_LIMITED",
                        retry_after_s=0.05,
                    ),
                    "gateway",
                )
            )
        if kb == "full":  # a limit, not a moment: no RetryInfo
            context.abort_with_status(
                to_status(errors.ResourceExhausted("too large", reason="TOO_LARGE"), "gateway")
            )
        if kb == "busy":
            return J.GetKnowledgeBaseResponse(
                knowledge_base=J.KnowledgeBase(knowledge_base_id="busy")
            )
        if request.knowledge_base_id != "kb":
            context.abort_with_status(
                to_status(
                    errors.NotFound(
                        f"knowledge base {request.knowledge_base_id!r} not found",
                        reason="KNOWLEDGE_BASE_NOT_FOUND",
                        metadata={"knowledge_base_id": request.knowledge_base_id},
                    ),
                    "gateway",
                )
            )
        return J.GetKnowledgeBaseResponse(knowledge_base=J.KnowledgeBase(knowledge_base_id="kb"))

    def ListKnowledgeBases(self, request: Any, context: grpc.ServicerContext) -> Any:
        self._auth(context)
        # Two pages: "a","b" then "c".
        if not request.page_token:
            return J.ListKnowledgeBasesResponse(
                knowledge_bases=[J.KnowledgeBase(knowledge_base_id=k) for k in "ab"],
                next_page_token="p2",
            )
        return J.ListKnowledgeBasesResponse(
            knowledge_bases=[J.KnowledgeBase(knowledge_base_id="c")]
        )

    def UploadDocument(self, request_iterator: Iterator[Any], context: grpc.ServicerContext) -> Any:
        self._auth(context)
        header = None
        data = b""
        pieces = 0
        for msg in request_iterator:
            if msg.WhichOneof("payload") == "header":
                header = msg.header
            else:
                data += msg.data
                pieces += 1
        assert header is not None
        self.uploads.append((header, data, pieces))
        return J.UploadDocumentResponse(job=_job("j-up", J.JOB_STATE_QUEUED))

    def GetIngestionJob(self, request: Any, context: grpc.ServicerContext) -> Any:
        self._auth(context)
        self.job_calls.append(("Get", request.job_id))
        return J.GetIngestionJobResponse(job=_job(request.job_id, J.JOB_STATE_QUEUED))

    def WatchIngestionJob(self, request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
        self._auth(context)
        self.job_calls.append(("Watch", request.job_id))
        yield J.WatchIngestionJobResponse(
            job=_job(
                request.job_id,
                J.JOB_STATE_RUNNING,
                stage=J.JOB_STAGE_EMBEDDING,
                chunks_done=1,
                chunks_total=2,
            )
        )
        if request.job_id == "j-cut" and self.job_calls.count(("Watch", "j-cut")) == 1:
            return  # the first stream ends with the job still running (a gateway restart)
        if request.job_id == "j-bad":
            yield J.WatchIngestionJobResponse(
                job=_job(
                    request.job_id,
                    J.JOB_STATE_FAILED,
                    error={
                        "code": "INVALID_ARGUMENT",
                        "reason": "CORRUPT_DOCUMENT",
                        "domain": "chunking",
                        "message": "broken PDF",
                    },
                )
            )
        else:
            yield J.WatchIngestionJobResponse(
                job=_job(request.job_id, J.JOB_STATE_SUCCEEDED, chunks_done=2, chunks_total=2)
            )
        if request.job_id == "j-linger":
            # The stream's end (its OK status) comes a moment after the terminal state: a
            # client that cancels the call on seeing that state leaves it inactive here.
            time.sleep(0.3)
            self.lingering_watch_ends.append(context.is_active())

    def Ask(self, request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
        self._auth(context)
        hit = common_pb2.Citation(
            document_id="d1", file_name="d1.md", start_offset=3, end_offset=9, number=1
        )
        yield J.AskResponse(sources=J.AskSources(sources=[hit]))
        yield J.AskResponse(delta=J.AskDelta(text="Hello "))
        if request.question == "fail midway":
            context.abort_with_status(
                to_status(
                    errors.Unavailable("generation is down", reason="GENERATION_UNAVAILABLE"),
                    "gateway",
                )
            )
        yield J.AskResponse(delta=J.AskDelta(text="world [1]"))
        yield J.AskResponse(
            final=J.AskFinal(
                answer="Hello world [1]",
                citations=[common_pb2.Citation(document_id="d1", number=1, cited=True)],
            )
        )


@pytest.fixture(scope="module")
def gateway() -> Iterator[tuple[str, ScriptedGateway]]:
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    servicer = ScriptedGateway()
    gateway_pb2_grpc.add_RagServiceServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield f"127.0.0.1:{port}", servicer
    server.stop(grace=None)


def test_not_found_carries_code_reason_domain_and_metadata(gateway: Any) -> None:
    addr, _ = gateway
    with RagmeshClient(addr, API_KEY) as rag:
        assert rag.get_knowledge_base("kb").knowledge_base_id == "kb"
        with pytest.raises(NotFoundError) as info:
            rag.get_knowledge_base("other")
    err = info.value
    assert err.code == grpc.StatusCode.NOT_FOUND
    assert (err.reason, err.domain) == ("KNOWLEDGE_BASE_NOT_FOUND", "gateway")
    assert err.metadata == {"knowledge_base_id": "other"}
    assert "'other' not found" in err.message


def test_retry_info_is_honoured_and_its_absence_is_final(gateway: Any) -> None:
    addr, servicer = gateway
    with RagmeshClient(addr, API_KEY) as rag:
        assert rag.get_knowledge_base("busy").knowledge_base_id == "busy"
        assert servicer.calls["busy"] == 3
        with pytest.raises(ResourceExhaustedError) as info:
            rag.get_knowledge_base("full")
        assert info.value.reason == "TOO_LARGE" and servicer.calls["full"] == 1
    servicer.calls.clear()
    with RagmeshClient(addr, API_KEY, retry=RetryPolicy(max_attempts=2)) as rag:
        with pytest.raises(ResourceExhaustedError) as info:
            rag.get_knowledge_base("busy")
        assert info.value.reason == "BUSY" and servicer.calls["busy"] == 2


async def test_retry_info_is_honoured_by_the_asyncio_client(gateway: Any) -> None:
    addr, servicer = gateway
    servicer.calls.clear()
    async with AsyncRagmeshClient(addr, API_KEY) as rag:
        assert (await rag.get_knowledge_base("busy")).knowledge_base_id == "busy"
    assert servicer.calls["busy"] == 3


def test_an_authentication_lockout_is_raised_at_once_with_its_delay(gateway: Any) -> None:
    addr, servicer = gateway
    with RagmeshClient(addr, API_KEY) as rag, pytest.raises(ResourceExhaustedError) as exc:
        rag.get_knowledge_base("locked")
    assert exc.value.reason == "AUTH_RATE_LIMITED"
    assert exc.value.retry_after_s == pytest.approx(0.05)
    assert servicer.calls["locked"] == 1


def test_wrong_key_is_unauthenticated(gateway: Any) -> None:
    addr, _ = gateway
    with RagmeshClient(addr, "wrong-key") as rag, pytest.raises(UnauthenticatedError) as info:
        rag.get_knowledge_base("kb")
    assert info.value.reason == "INVALID_API_KEY"


def test_iter_knowledge_bases_follows_pages(gateway: Any) -> None:
    addr, _ = gateway
    with RagmeshClient(addr, API_KEY) as rag:
        assert [kb.knowledge_base_id for kb in rag.iter_knowledge_bases()] == ["a", "b", "c"]


def test_upload_from_path_streams_every_byte(gateway: Any, tmp_path: Path) -> None:
    addr, servicer = gateway
    content = ("# Über\n" + "x" * 200_000).encode()
    path = tmp_path / "big.md"
    path.write_bytes(content)
    with RagmeshClient(addr, API_KEY) as rag:
        resp = rag.upload_document("kb", path, metadata={"lang": "de"})
    assert resp.job.job_id == "j-up"
    header, data, pieces = servicer.uploads[-1]
    assert (header.knowledge_base_id, header.file_name, header.media_type) == (
        "kb",
        "big.md",
        "text/markdown",
    )
    assert header.metadata["lang"] == "de"
    assert data == content
    assert pieces == 4  # 200 kB in 64 KiB pieces


def test_watch_and_wait_for_job(gateway: Any) -> None:
    addr, _ = gateway
    with RagmeshClient(addr, API_KEY) as rag:
        states = [j.state for j in rag.watch_ingestion_job("j1")]
        assert states == [J.JOB_STATE_RUNNING, J.JOB_STATE_SUCCEEDED]
        seen: list[int] = []
        job = rag.wait_for_job("j1", check=True, on_update=lambda j: seen.append(j.chunks_done))
        assert job.state == J.JOB_STATE_SUCCEEDED
        assert seen == [1, 2]
        assert rag.wait_for_job("j-bad").state == J.JOB_STATE_FAILED
        with pytest.raises(JobFailedError) as info:
            rag.wait_for_job("j-bad", check=True)
    assert info.value.reason == "CORRUPT_DOCUMENT"
    assert "broken PDF" in str(info.value)


def test_wait_for_job_watches_without_reading_the_job_first(gateway: Any) -> None:
    """A watch starts with the job as it is: one call a job, not a Get and a Watch; a
    stream that ends early (a gateway restart) is followed by a Get and a new watch."""
    addr, servicer = gateway
    with RagmeshClient(addr, API_KEY) as rag:
        servicer.job_calls.clear()
        assert rag.wait_for_job("j1").state == J.JOB_STATE_SUCCEEDED
        assert servicer.job_calls == [("Watch", "j1")]
        servicer.job_calls.clear()
        seen: list[int] = []
        job = rag.wait_for_job("j-cut", on_update=lambda j: seen.append(j.state))
        assert job.state == J.JOB_STATE_SUCCEEDED
        assert servicer.job_calls == [("Watch", "j-cut"), ("Get", "j-cut"), ("Watch", "j-cut")]
        assert seen == [J.JOB_STATE_RUNNING, J.JOB_STATE_RUNNING, J.JOB_STATE_SUCCEEDED]


async def test_async_wait_for_job_watches_without_reading_the_job_first(gateway: Any) -> None:
    addr, servicer = gateway
    async with AsyncRagmeshClient(addr, API_KEY) as rag:
        servicer.job_calls.clear()
        assert (await rag.wait_for_job("j1")).state == J.JOB_STATE_SUCCEEDED
        assert servicer.job_calls == [("Watch", "j1")]
        servicer.job_calls.clear()
        assert (await rag.wait_for_job("j-cut")).state == J.JOB_STATE_SUCCEEDED
        assert servicer.job_calls == [("Watch", "j-cut"), ("Get", "j-cut"), ("Watch", "j-cut")]


def test_wait_for_job_reads_the_watch_to_its_end_instead_of_cancelling_it(gateway: Any) -> None:
    """The client waits for the stream's status after the terminal state: cancelling the
    call there made the gateway log ~1 watch in 15 as CANCELLED (its status not yet sent)."""
    addr, servicer = gateway
    servicer.lingering_watch_ends.clear()
    with RagmeshClient(addr, API_KEY) as rag:
        assert rag.wait_for_job("j-linger").state == J.JOB_STATE_SUCCEEDED
    assert servicer.lingering_watch_ends == [True]


async def test_async_wait_for_job_reads_the_watch_to_its_end(gateway: Any) -> None:
    addr, servicer = gateway
    servicer.lingering_watch_ends.clear()
    async with AsyncRagmeshClient(addr, API_KEY) as rag:
        assert (await rag.wait_for_job("j-linger")).state == J.JOB_STATE_SUCCEEDED
    assert servicer.lingering_watch_ends == [True]


def test_ask_stream_and_collect(gateway: Any) -> None:
    addr, _ = gateway
    with RagmeshClient(addr, API_KEY) as rag:
        kinds = [e.WhichOneof("event") for e in rag.ask("kb", "hi")]
        assert kinds == ["sources", "delta", "delta", "final"]
        result = rag.ask_collect("kb", "hi")
        assert result.answer == "Hello world [1]"
        assert [(c.document_id, c.number, c.cited) for c in result.citations] == [("d1", 1, True)]
        assert result.sources[0].start_offset == 3
        events = rag.ask("kb", "fail midway")
        with pytest.raises(UnavailableError) as info:
            list(events)
    assert info.value.reason == "GENERATION_UNAVAILABLE"


def test_unreachable_gateway_is_unavailable() -> None:
    with (
        RagmeshClient(f"127.0.0.1:{free_port()}", API_KEY, timeout=2) as rag,
        pytest.raises(UnavailableError),
    ):
        rag.get_ingestion_job("x")


async def test_async_client(gateway: Any, tmp_path: Path) -> None:
    addr, servicer = gateway
    async with AsyncRagmeshClient(addr, API_KEY) as rag:
        assert (await rag.get_knowledge_base("kb")).knowledge_base_id == "kb"
        with pytest.raises(NotFoundError) as info:
            await rag.get_knowledge_base("zz")
        assert info.value.reason == "KNOWLEDGE_BASE_NOT_FOUND"
        assert [kb.knowledge_base_id async for kb in rag.iter_knowledge_bases()] == ["a", "b", "c"]
        resp = await rag.upload_document("kb", "你好。".encode(), file_name="zh.txt")
        assert resp.job.job_id == "j-up"
        assert servicer.uploads[-1][1] == "你好。".encode()
        assert servicer.uploads[-1][0].media_type == "text/plain"
        states = [j.state async for j in rag.watch_ingestion_job("j1")]
        assert states[-1] == J.JOB_STATE_SUCCEEDED
        with pytest.raises(JobFailedError):
            await rag.wait_for_job("j-bad", check=True)
        result = await rag.ask_collect("kb", "hi")
        assert result.answer == "Hello world [1]"
        with pytest.raises(UnavailableError):
            async for _ in rag.ask("kb", "fail midway"):
                pass


class _Recording(grpc.UnaryUnaryClientInterceptor):
    def __init__(self) -> None:
        self.methods: list[str] = []

    def intercept_unary_unary(self, continuation, client_call_details, request):
        self.methods.append(client_call_details.method)
        return continuation(client_call_details, request)


class _AioRecording(grpc.aio.UnaryUnaryClientInterceptor):
    def __init__(self) -> None:
        self.methods: list[str] = []

    async def intercept_unary_unary(self, continuation, client_call_details, request):
        method = client_call_details.method  # bytes on an aio channel
        self.methods.append(method.decode() if isinstance(method, bytes) else method)
        return await continuation(client_call_details, request)


async def test_both_clients_run_the_callers_interceptors(gateway: Any) -> None:
    addr, _ = gateway
    method = "/ragmesh.gateway.v1.RagService/GetKnowledgeBase"
    sync = _Recording()
    with RagmeshClient(addr, API_KEY, interceptors=[sync]) as rag:
        assert rag.get_knowledge_base("kb").knowledge_base_id == "kb"
    assert sync.methods == [method]
    aio = _AioRecording()
    async with AsyncRagmeshClient(addr, API_KEY, interceptors=[aio]) as arag:
        assert (await arag.get_knowledge_base("kb")).knowledge_base_id == "kb"
    assert aio.methods == [method]
