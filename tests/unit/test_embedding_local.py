"""The local backend: ONNX Runtime and sentence-transformers give the same vectors,
and the micro-batcher in front of the real model joins concurrent calls."""

from __future__ import annotations

import asyncio
import json
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from services.common.models import minilm_model_dir
from services.embedding.config import EmbeddingSettings
from services.embedding.core import EmbeddingCore, InputType
from services.embedding.embedder import l2_normalize, mean_pool
from services.embedding.local import (
    LocalEmbedder,
    OnnxEncoder,
    PassPool,
    TorchEncoder,
    available_cores,
    length_groups,
    onnx_cache_path,
)
from tests.support.sessions import record_runs

TEXTS = [
    "What is the capital of France?",
    "Paris is the capital and most populous city of France.",
    "Milvus stores dense vectors and searches them with HNSW.",
    "中文的句子也要正确地嵌入。向量数据库！",
    "short",
    # Longer than the 256-token limit: both runtimes must cut at the same place.
    "tokens and more tokens " * 120,
    "A. " * 3,
]


@pytest.fixture(scope="module")
def settings() -> EmbeddingSettings:
    return EmbeddingSettings()


@pytest.fixture(scope="module")
def onnx_encoder(settings: EmbeddingSettings) -> OnnxEncoder:
    return OnnxEncoder(minilm_model_dir(), settings.cache_dir)


@pytest.fixture(scope="module")
def torch_encoder() -> TorchEncoder:
    return TorchEncoder(minilm_model_dir())


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.asarray((a * b).sum(axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)))


def test_onnx_runtime_matches_sentence_transformers(
    onnx_encoder: OnnxEncoder, torch_encoder: TorchEncoder
) -> None:
    onnx_vectors = onnx_encoder.encode(TEXTS)
    torch_vectors = torch_encoder.encode(TEXTS)
    assert onnx_vectors.shape == torch_vectors.shape == (len(TEXTS), 384)
    assert cosines(onnx_vectors, torch_vectors).min() > 1 - 1e-3
    assert np.abs(onnx_vectors - torch_vectors).max() < 1e-3
    np.testing.assert_allclose(np.linalg.norm(onnx_vectors, axis=1), 1.0, atol=1e-5)


def test_both_runtimes_take_the_models_256_tokens_not_the_tokenizer_files_128(
    onnx_encoder: OnnxEncoder, torch_encoder: TorchEncoder
) -> None:
    # Texts that differ only after token 128 must get different vectors from both.
    base = "alpha beta gamma delta " * 40  # ~160 tokens
    texts = [base + "the ending talks about cats", base + "a finale about rockets"]
    for encoder in (onnx_encoder, torch_encoder):
        a, b = encoder.encode(texts)
        assert float(a @ b) < 0.9999, encoder.runtime
    assert onnx_encoder.max_tokens == torch_encoder.max_tokens == 256


def test_a_vector_does_not_depend_on_its_batch(onnx_encoder: OnnxEncoder) -> None:
    texts = ["short", "a slightly longer text, padded to", "a much longer text " * 30]
    alone = np.concatenate([onnx_encoder.encode([t]) for t in texts])
    # The first two share a sub-batch (the first padded to the second), the third not.
    assert length_groups([3, 10, 122], 32) == [[2], [1, 0]]
    together = onnx_encoder.encode(texts)
    assert np.abs(cosines(alone, together) - 1).max() < 1e-5


def test_a_pass_pool_runs_sub_batches_side_by_side_in_order() -> None:
    pool = PassPool(threads=2)
    both_running = threading.Barrier(2, timeout=30)

    def run(group: list[int]) -> tuple[list[int], int]:
        both_running.wait()  # breaks (BrokenBarrierError) unless two passes overlap
        return group, threading.get_ident()

    out = pool.map(run, [[0, 1], [2]])
    assert [g for g, _ in out] == [[0, 1], [2]]
    assert out[0][1] != out[1][1]
    # every thread gets a sub-batch: of 5 texts at most 3 each, of 1 text 1
    assert (pool.share(5), pool.share(1), PassPool(threads=1).share(5)) == (3, 1, 5)
    # a lone sub-batch runs on the caller's thread
    assert pool.map(lambda g: threading.get_ident(), [[0]]) == [threading.get_ident()]


def test_the_default_threads_follow_a_cgroup_cpu_limit(tmp_path: Path) -> None:
    import os

    cores = len(os.sched_getaffinity(0))
    limit = tmp_path / "cpu.max"
    limit.write_text("max 100000\n")
    assert available_cores(limit) == cores
    limit.write_text("150000 100000\n")  # 1.5 CPUs: two threads, a pass each
    assert available_cores(limit) == min(cores, 2)
    limit.write_text("50000 100000\n")
    assert available_cores(limit) == 1
    assert available_cores(tmp_path / "absent") == cores


def test_vectors_do_not_depend_on_threads_or_concurrent_calls(
    settings: EmbeddingSettings,
) -> None:
    one = OnnxEncoder(minilm_model_dir(), settings.cache_dir, threads=1)
    two = OnnxEncoder(minilm_model_dir(), settings.cache_dir, threads=2)
    assert (one.passes.threads, two.passes.threads) == (1, 2)
    passes = record_runs(two)
    serial = one.encode(TEXTS)
    assert np.abs(cosines(serial, two.encode(TEXTS)) - 1).max() < 1e-5
    assert len(passes) >= 2  # even texts of one length go in one sub-batch a thread
    passes.clear()
    two.encode(["same length text"] * 8)
    assert len(passes) == 2
    # one session, called from four threads at once (ONNX Runtime's run is thread-safe)
    with ThreadPoolExecutor(4) as callers:
        rows = list(callers.map(lambda t: two.encode([t])[0], TEXTS * 3))
    assert np.abs(cosines(np.tile(serial, (3, 1)), np.stack(rows)) - 1).max() < 1e-5


async def test_the_local_model_serves_as_many_calls_at_once_as_it_has_threads() -> None:
    core = EmbeddingCore(EmbeddingSettings(threads=3, multilingual=False))
    try:
        assert core.batcher.max_concurrent_batches == 3
    finally:
        await core.close()
    pinned = EmbeddingCore(
        EmbeddingSettings(threads=3, max_concurrent_batches=1, multilingual=False)
    )
    try:
        assert pinned.batcher.max_concurrent_batches == 1
    finally:
        await pinned.close()
    # torch spreads one call over its own threads: one call at a time
    assert (
        LocalEmbedder("torch", minilm_model_dir(), EmbeddingSettings().cache_dir).parallel_calls
        == 1
    )


def test_sub_batches_hold_texts_of_near_equal_length() -> None:
    lengths = [200, 40, 185, 12, 181, 9, 230, 15, 179]
    groups = length_groups(lengths, max_size=3)
    assert sorted(i for g in groups for i in g) == list(range(len(lengths)))
    # longest first; 185 and 181 are within 10 % of 200, and make a group of three
    # (the first is full); 179 starts a group of its own for that; 15, 12 and 9 are within
    # the 16-token slack of each other
    assert groups == [[6], [0, 2, 4], [8], [1], [7, 3, 5]]
    assert all(len(g) <= 3 for g in groups)
    assert length_groups([], 4) == []


def test_mean_pooling_ignores_padding() -> None:
    hidden = np.array([[[1.0, 2.0], [3.0, 4.0], [100.0, 100.0]]], dtype=np.float32)
    mask = np.array([[1, 1, 0]])
    np.testing.assert_allclose(mean_pool(hidden, mask), [[2.0, 3.0]])
    np.testing.assert_allclose(
        l2_normalize(np.array([[3.0, 4.0], [0.0, 0.0]])), [[0.6, 0.8], [0.0, 0.0]]
    )


def test_the_onnx_export_is_cached_by_model_content(
    onnx_encoder: OnnxEncoder, settings: EmbeddingSettings
) -> None:
    path = onnx_cache_path(minilm_model_dir(), settings.cache_dir)
    assert onnx_encoder.onnx_path == path
    assert path.exists() and path.stat().st_size > 50_000_000
    assert not list(path.parent.glob("*.tmp"))


def test_int8_is_a_quantised_graph_beside_the_export_and_close_to_fp32(
    onnx_encoder: OnnxEncoder, settings: EmbeddingSettings
) -> None:
    int8 = OnnxEncoder(minilm_model_dir(), settings.cache_dir, precision="int8")
    assert int8.onnx_path == onnx_encoder.onnx_path.with_name("model.int8-per-channel.onnx")
    assert int8.runtime == "onnxruntime-int8"
    # int8 weights: a quarter of the fp32 file, and vectors that point the same way
    # (one scale per tensor gave 0.89-0.98 on TEXTS; per channel, measured 0.985-0.998)
    assert int8.onnx_path.stat().st_size < onnx_encoder.onnx_path.stat().st_size / 3
    agreement = cosines(int8.encode(TEXTS), onnx_encoder.encode(TEXTS))
    assert agreement.min() > 0.97 and agreement.mean() > 0.985
    assert not list(int8.onnx_path.parent.glob("*.tmp.onnx"))


def test_the_onnx_runtime_refuses_a_pipeline_it_does_not_implement(
    tmp_path: object, settings: EmbeddingSettings
) -> None:
    import shutil
    from pathlib import Path

    model = Path(str(tmp_path)) / "model"
    shutil.copytree(minilm_model_dir(), model, ignore=shutil.ignore_patterns("*.safetensors"))
    pooling = model / "1_Pooling" / "config.json"
    config = json.loads(pooling.read_text())
    config.update(pooling_mode_mean_tokens=False, pooling_mode_cls_token=True)
    pooling.write_text(json.dumps(config))
    with pytest.raises(ValueError, match="only mean pooling"):
        OnnxEncoder(model, settings.cache_dir)


async def test_fifty_concurrent_calls_cost_far_fewer_forward_passes(
    settings: EmbeddingSettings,
) -> None:
    core = EmbeddingCore(settings.model_copy(update={"runtime": "onnx"}))
    await core.start()
    try:
        texts = [f"question number {i} about vector search" for i in range(50)]
        results = await asyncio.gather(*(core.embed([t], InputType.QUERY) for t in texts))
        batches = core.batcher.stats.batches
        assert core.batcher.stats.requests == 50
        assert batches < 50
        assert batches <= 10, core.batcher.stats.batch_sizes
        # Same vectors as one plain call with all texts.
        assert isinstance(core.embedder, LocalEmbedder)
        reference = core.embedder.encoder.encode(texts)  # type: ignore[union-attr]
        together = np.vstack([r.vectors for r in results])
        assert cosines(together, reference).min() > 1 - 1e-5
        assert [r.token_counts[0] for r in results] == core.counter.count(texts)
    finally:
        await core.close()


async def test_int8_is_served_under_a_name_of_its_own_and_the_fp32_name_is_refused() -> None:
    """A knowledge base recorded with the fp32 model must not get int8 vectors."""
    from services.common import errors
    from services.common.models import MINILM_NAME

    core = EmbeddingCore(EmbeddingSettings(onnx_precision="int8"))
    int8_name = MINILM_NAME + "-int8-per-channel"
    assert (await core.info("minilm-int8")).model == int8_name
    assert (await core.info()).runtime == "onnxruntime-int8"
    # fp32, and the first int8 recipe (one scale per tensor: other vectors)
    for name in ("minilm", MINILM_NAME, MINILM_NAME + "-int8"):
        with pytest.raises(errors.NotFound) as refused:
            await core.slot(name)
        assert refused.value.reason == "UNKNOWN_MODEL" and int8_name in str(refused.value)
    with pytest.raises(ValueError, match="ONNX runtime"):
        LocalEmbedder(
            "torch", minilm_model_dir(), EmbeddingSettings().cache_dir, precision="int8"
        )._create()
