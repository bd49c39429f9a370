"""`ragmesh serve embedding` as a real process, called over gRPC: health, reflection,
both RPCs and every bad input, for the local backend and for the tei and openai
backends.

No TEI server can run here, so the tei and openai backends talk to a stand-in HTTP
server started by this module (tests/support/embedding_api_standin.py) that speaks
each documented API with the real all-MiniLM-L6-v2 behind it.
"""

from __future__ import annotations

import asyncio
import time
import urllib.request
from collections.abc import Iterator

import grpc
import numpy as np
import pytest
from google.protobuf.descriptor_pool import DescriptorPool
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)

from devstack.procs import ManagedProcess, health_status
from ragmesh.embedding.v1 import embedding_pb2, embedding_pb2_grpc
from services.common.models import MINILM_NAME
from services.common.status import error_info_of
from services.embedding.bf16 import use_bf16
from tests.conftest import ServiceStarter
from tests.support.embedding_api_standin import EmbeddingAPIStandin

SERVICE = "ragmesh.embedding.v1.EmbeddingService"
TEXTS = [
    "What is the capital of France?",
    "Paris is the capital and most populous city of France.",
    "Milvus stores vectors.",
    "中文的句子。向量数据库！",
]
QUERY = embedding_pb2.INPUT_TYPE_QUERY
DOCUMENT = embedding_pb2.INPUT_TYPE_DOCUMENT


@pytest.fixture(scope="module")
def standin() -> Iterator[EmbeddingAPIStandin]:
    server = EmbeddingAPIStandin().start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def local_service(start_ragmesh_service: ServiceStarter) -> tuple[ManagedProcess, str]:
    # Small limits make the "too many"/"too large" inputs cheap to send.
    return start_ragmesh_service(
        "embedding",
        env={
            "RAGMESH_EMBEDDING_BACKEND": "local",
            "RAGMESH_EMBEDDING_MAX_TEXTS_PER_CALL": "16",
            "RAGMESH_EMBEDDING_MAX_TEXT_CHARS": "20000",
        },
    )


@pytest.fixture(scope="module")
def local_addr(local_service: tuple[ManagedProcess, str]) -> str:
    return local_service[1]


@pytest.fixture(scope="module")
def tei_addr(start_ragmesh_service: ServiceStarter, standin: EmbeddingAPIStandin) -> str:
    _, addr = start_ragmesh_service(
        "embedding",
        env={
            "RAGMESH_EMBEDDING_BACKEND": "tei",
            "RAGMESH_EMBEDDING_TEI_URL": standin.url,
            "RAGMESH_READINESS_INTERVAL_S": "0.2",
        },
    )
    return addr


@pytest.fixture(scope="module")
def openai_addr(start_ragmesh_service: ServiceStarter, standin: EmbeddingAPIStandin) -> str:
    _, addr = start_ragmesh_service(
        "embedding",
        env={
            "RAGMESH_EMBEDDING_BACKEND": "openai",
            "RAGMESH_EMBEDDING_OPENAI_BASE_URL": f"{standin.url}/v1",
            "RAGMESH_EMBEDDING_OPENAI_MODEL": MINILM_NAME,
            "RAGMESH_EMBEDDING_OPENAI_MAX_TOKENS": "256",
            "RAGMESH_READINESS_INTERVAL_S": "0.2",
        },
    )
    return addr


def stub(addr: str) -> embedding_pb2_grpc.EmbeddingServiceStub:
    channel = grpc.insecure_channel(
        addr,
        options=[
            ("grpc.max_receive_message_length", 64 << 20),
            ("grpc.max_send_message_length", 64 << 20),
        ],
    )
    return embedding_pb2_grpc.EmbeddingServiceStub(channel)


def embed(
    addr: str,
    texts: list[str],
    input_type: embedding_pb2.InputType.ValueType = DOCUMENT,
    truncate: bool = False,
) -> embedding_pb2.EmbedTextsResponse:
    return stub(addr).EmbedTexts(  # type: ignore[no-any-return]
        embedding_pb2.EmbedTextsRequest(texts=texts, input_type=input_type, truncate=truncate),
        timeout=60,
    )


def vectors(response: embedding_pb2.EmbedTextsResponse) -> np.ndarray:
    return np.array([list(e.values) for e in response.embeddings], dtype=np.float32)


def assert_same_vectors(a: np.ndarray, b: np.ndarray) -> None:
    assert a.shape == b.shape
    cos = (a * b).sum(axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
    assert cos.min() > 1 - 1e-3, cos


def rejected(
    addr: str, request: embedding_pb2.EmbedTextsRequest
) -> tuple[grpc.StatusCode, str, str]:
    with pytest.raises(grpc.RpcError) as caught:
        stub(addr).EmbedTexts(request, timeout=60)
    err = caught.value
    info = error_info_of(err)
    assert info is not None, err
    assert info.domain == "embedding.ragmesh"
    return err.code(), info.reason, err.details()  # type: ignore[attr-defined]


def wait_for_health(addr: str, want: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if health_status(addr, SERVICE) == want:
            return
        time.sleep(0.1)
    raise AssertionError(f"health of {addr} never became {want}")


# --- local backend ------------------------------------------------------------------


def test_health_and_reflection(local_addr: str) -> None:
    assert health_status(local_addr) == "SERVING"
    assert health_status(local_addr, SERVICE) == "SERVING"
    with grpc.insecure_channel(local_addr) as channel:
        database = ProtoReflectionDescriptorDatabase(channel)
        assert SERVICE in database.get_services()
        service = DescriptorPool(database).FindServiceByName(SERVICE)
        assert {m.name for m in service.methods} == {"EmbedTexts", "GetModelInfo"}


def test_get_model_info(local_addr: str) -> None:
    info = stub(local_addr).GetModelInfo(embedding_pb2.GetModelInfoRequest(), timeout=30)
    assert info.model == MINILM_NAME
    assert info.dimension == 384
    assert info.max_tokens == 256
    assert info.normalized
    assert info.backend == "local"
    # the defaults (auto, auto): bf16 through OpenVINO where the CPU computes bf16,
    # ONNX Runtime fp32 elsewhere (both measured faster than torch)
    assert info.runtime == ("openvino-bf16" if use_bf16("auto") else "onnxruntime")
    assert info.max_batch_size == 16


def test_embed_texts_matches_the_model_in_process(
    local_addr: str, standin: EmbeddingAPIStandin
) -> None:
    response = embed(local_addr, TEXTS)
    assert response.model == MINILM_NAME
    assert response.dimension == 384
    got = vectors(response)
    assert got.shape == (len(TEXTS), 384)
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)
    assert_same_vectors(got, np.array(standin.model.embed(TEXTS), dtype=np.float32))
    assert list(response.token_counts) == [standin.model.token_count(t) for t in TEXTS]
    # Meaning survives: the question is closest to its answer.
    sims = got[1:] @ got[0]
    assert int(np.argmax(sims)) == 0


def test_input_types_and_order(local_addr: str) -> None:
    documents = vectors(embed(local_addr, TEXTS, DOCUMENT))
    queries = vectors(embed(local_addr, TEXTS, QUERY))
    unspecified = vectors(embed(local_addr, TEXTS, embedding_pb2.INPUT_TYPE_UNSPECIFIED))
    # all-MiniLM-L6-v2 has no query instruction: both kinds embed alike.
    assert_same_vectors(documents, queries)
    assert_same_vectors(documents, unspecified)
    reversed_ = vectors(embed(local_addr, TEXTS[::-1]))
    assert_same_vectors(reversed_[::-1], documents)


def test_truncate_embeds_a_long_text_as_its_first_256_tokens(local_addr: str) -> None:
    long_text = "The quick brown fox jumps over the lazy dog. " * 100
    response = embed(local_addr, [long_text, "short"], truncate=True)
    assert list(response.token_counts) == [256, 3]
    assert len(response.embeddings) == 2


def batch_metrics(proc: ManagedProcess) -> tuple[float, float]:
    """(backend calls, texts) so far, from the service's Prometheus endpoint."""
    port = proc.argv[proc.argv.index("--metrics-port") + 1]
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        text = response.read().decode()
    values = {}
    for line in text.splitlines():
        if line.startswith("ragmesh_embedding_batch_texts_"):
            name, value = line.rsplit(" ", 1)
            values[name] = float(value)
    return values["ragmesh_embedding_batch_texts_count"], values[
        "ragmesh_embedding_batch_texts_sum"
    ]


async def test_fifty_concurrent_single_text_calls(
    local_service: tuple[ManagedProcess, str],
) -> None:
    proc, local_addr = local_service
    calls_before, texts_before = batch_metrics(proc)
    texts = [f"concurrent question {i} about retrieval" for i in range(50)]
    # Two long calls keep the backend busy first (it runs as many batches at once as it
    # has threads), so the 50 single-text calls queue behind them however slowly this
    # client sends them; on an idle backend each early arrival would go alone at once,
    # and how many did depended on the machine's load (17 calls of 50 seen under load).
    long_texts = [" ".join(f"passage{i} word{j}" for j in range(55)) for i in range(16)]
    async with grpc.aio.insecure_channel(local_addr) as channel:
        client = embedding_pb2_grpc.EmbeddingServiceStub(channel)
        busy = [
            asyncio.ensure_future(
                client.EmbedTexts(embedding_pb2.EmbedTextsRequest(texts=long_texts), timeout=60)
            )
            for _ in range(2)
        ]
        await asyncio.sleep(0.05)  # both under way (~16 × 240 tokens: hundreds of ms each)
        assert not any(call.done() for call in busy)
        responses = await asyncio.gather(
            *(
                client.EmbedTexts(
                    embedding_pb2.EmbedTextsRequest(texts=[t], input_type=QUERY), timeout=60
                )
                for t in texts
            )
        )
        await asyncio.gather(*busy)
    calls_after, texts_after = batch_metrics(proc)
    # Micro-batching: 50 texts went through far fewer than 50 backend calls.
    assert texts_after - texts_before == 50 + 2 * len(long_texts)
    assert calls_after - calls_before <= 2 + 8
    got = np.vstack([vectors(r) for r in responses])
    # Each caller got the vector of its own text.
    assert_same_vectors(got[:16], vectors(embed(local_addr, texts[:16], QUERY)))
    assert_same_vectors(got[16:32], vectors(embed(local_addr, texts[16:32], QUERY)))


@pytest.mark.parametrize(
    ("texts", "truncate", "reason", "needle"),
    [
        ([], False, "NO_TEXTS", "texts is empty"),
        (["fine", ""], False, "EMPTY_TEXT", "texts[1] is empty"),
        (["   \n"], False, "EMPTY_TEXT", "texts[0] is empty"),
        (["a"] * 17, False, "TOO_MANY_TEXTS", "at most 16"),
        (["ok", "word " * 300], False, "TEXT_TOO_LONG", "302 tokens, more than the model's 256"),
        (["x" * 20001], True, "TEXT_TOO_LARGE", "20001 characters"),
    ],
    ids=["no-texts", "empty-string", "blank", "too-many", "too-long", "too-large"],
)
def test_bad_inputs(
    local_addr: str, texts: list[str], truncate: bool, reason: str, needle: str
) -> None:
    code, got_reason, details = rejected(
        local_addr, embedding_pb2.EmbedTextsRequest(texts=texts, truncate=truncate)
    )
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert got_reason == reason
    assert needle in details


def test_unknown_input_type(local_addr: str) -> None:
    code, reason, details = rejected(
        local_addr,
        embedding_pb2.EmbedTextsRequest(texts=["a"], input_type=7),  # type: ignore[arg-type]
    )
    assert (code, reason) == (grpc.StatusCode.INVALID_ARGUMENT, "UNKNOWN_INPUT_TYPE")
    assert "input_type 7" in details


def test_the_service_still_serves_after_bad_inputs(local_addr: str) -> None:
    assert health_status(local_addr, SERVICE) == "SERVING"
    assert len(embed(local_addr, ["still alive"]).embeddings) == 1


# --- tei and openai backends against the stand-in ---------------------------------


@pytest.mark.parametrize("backend", ["tei", "openai"])
def test_remote_backend_vectors_equal_the_local_backend(
    backend: str, request: pytest.FixtureRequest, local_addr: str
) -> None:
    addr = request.getfixturevalue(f"{backend}_addr")
    assert health_status(addr, SERVICE) == "SERVING"
    info = stub(addr).GetModelInfo(embedding_pb2.GetModelInfoRequest(), timeout=30)
    assert (info.model, info.dimension, info.max_tokens, info.backend, info.normalized) == (
        MINILM_NAME,
        384,
        256,
        backend,
        True,
    )
    # More texts than the stand-in's TEI max_client_batch_size (8): the client splits.
    texts = [*TEXTS, *(f"passage {i} about embeddings" for i in range(10))]
    remote = embed(addr, texts)
    assert remote.dimension == 384
    assert_same_vectors(vectors(remote), vectors(embed(local_addr, texts)))
    assert list(remote.token_counts) == list(embed(local_addr, texts).token_counts)


@pytest.mark.parametrize("backend", ["tei", "openai"])
def test_remote_backend_length_limit_and_truncation(
    backend: str, request: pytest.FixtureRequest, local_addr: str
) -> None:
    addr = request.getfixturevalue(f"{backend}_addr")
    long_text = "The quick brown fox jumps over the lazy dog. " * 100
    code, reason, _ = rejected(addr, embedding_pb2.EmbedTextsRequest(texts=[long_text]))
    assert (code, reason) == (grpc.StatusCode.INVALID_ARGUMENT, "TEXT_TOO_LONG")
    remote = embed(addr, [long_text], truncate=True)
    assert list(remote.token_counts) == [256]
    assert_same_vectors(vectors(remote), vectors(embed(local_addr, [long_text], truncate=True)))
    code, reason, _ = rejected(addr, embedding_pb2.EmbedTextsRequest(texts=[]))
    assert (code, reason) == (grpc.StatusCode.INVALID_ARGUMENT, "NO_TEXTS")


def test_upstream_down_gives_unavailable_then_recovers(
    tei_addr: str, openai_addr: str, standin: EmbeddingAPIStandin
) -> None:
    standin.stop()
    try:
        for addr in (tei_addr, openai_addr):
            code, reason, details = rejected(addr, embedding_pb2.EmbedTextsRequest(texts=["x"]))
            assert code == grpc.StatusCode.UNAVAILABLE
            assert reason == "EMBEDDING_BACKEND_UNAVAILABLE"
            assert "unreachable" in details
            wait_for_health(addr, "NOT_SERVING")
    finally:
        standin.start()  # the same port again
    for addr in (tei_addr, openai_addr):
        wait_for_health(addr, "SERVING")
        assert len(embed(addr, ["back again"]).embeddings) == 1
