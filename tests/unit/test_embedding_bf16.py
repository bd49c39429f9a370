"""bf16 passes through OpenVINO (services/embedding/bf16.py): chosen only where the CPU
computes bf16, and then the fp32 model's vectors to within far less than the runtimes'
tolerance — the reason it serves under the same model name."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from services.common.models import minilm_model_dir
from services.embedding.bf16 import OpenVinoSession, cpu_flags, native_bf16, use_bf16
from services.embedding.config import EmbeddingSettings
from services.embedding.local import OnnxEncoder, create_encoder
from tests.support.sessions import record_runs
from tests.unit.test_embedding_local import TEXTS, cosines

openvino = pytest.importorskip("openvino")

AVX2_ONLY = "processor\t: 0\nflags\t\t: fpu sse2 avx avx2 fma\n\nprocessor\t: 1\nflags\t: fpu\n"
ZEN4 = "processor\t: 0\nflags\t\t: fpu avx2 avx512f avx512_bf16 avx512_vnni\n"
SAPPHIRE_RAPIDS = "processor\t: 0\nflags\t\t: fpu avx512f amx_bf16 amx_tile amx_int8\n"
GRAVITON = "processor\t: 0\nFeatures\t: fp asimd bf16 i8mm\n"  # Arm: not OpenVINO's bf16 path


@pytest.fixture(scope="module")
def fp32() -> OnnxEncoder:
    return OnnxEncoder(minilm_model_dir(), EmbeddingSettings().cache_dir, threads=2)


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_bf16_is_chosen_only_where_the_cpu_computes_it(tmp_path: Path) -> None:
    avx2, zen4 = write(tmp_path, "avx2", AVX2_ONLY), write(tmp_path, "zen4", ZEN4)
    spr, arm = write(tmp_path, "spr", SAPPHIRE_RAPIDS), write(tmp_path, "arm", GRAVITON)
    assert "avx2" in cpu_flags(avx2) and "fp" in cpu_flags(arm)
    assert [native_bf16(p) for p in (avx2, zen4, spr, arm)] == [False, True, True, False]
    assert not native_bf16(tmp_path / "absent")
    assert use_bf16("auto", zen4) and use_bf16("on", spr)
    assert not use_bf16("auto", avx2) and not use_bf16("off", zen4)
    # `on` where it would be emulated (slower than fp32): the service must not start
    with pytest.raises(ValueError, match=r"bf16 arithmetic in this CPU.*amx_bf16, avx512_bf16"):
        use_bf16("on", avx2)


def test_bf16_is_refused_where_it_does_not_apply() -> None:
    cache = EmbeddingSettings().cache_dir
    for runtime, precision in (("torch", "fp32"), ("onnx", "int8"), ("auto", "int8")):
        with pytest.raises(ValueError, match="BF16=on runs the fp32 ONNX graph"):
            create_encoder(runtime, minilm_model_dir(), cache, precision=precision, bf16="on")
    with pytest.raises(ValueError, match="not to int8"):
        OnnxEncoder(minilm_model_dir(), cache, precision="int8", bf16=True)


def test_the_openvino_session_runs_the_graph_as_onnx_runtime_does(fp32: OnnxEncoder) -> None:
    """The adapter in fp32 (any x86 CPU): ONNX Runtime's vectors to float precision, from
    several threads at once (an infer request each)."""
    reference = fp32.encode(TEXTS)
    adapted = OnnxEncoder(minilm_model_dir(), EmbeddingSettings().cache_dir, threads=2)
    adapted.session = OpenVinoSession(adapted.onnx_path, streams=2, precision="f32")
    assert np.abs(cosines(adapted.encode(TEXTS), reference) - 1).max() < 1e-5
    with ThreadPoolExecutor(4) as callers:
        rows = list(callers.map(lambda t: adapted.encode([t])[0], TEXTS * 3))
    assert np.abs(cosines(np.tile(reference, (3, 1)), np.stack(rows)) - 1).max() < 1e-5


@pytest.mark.skipif(not use_bf16("auto"), reason="this CPU has no bf16 arithmetic")
def test_bf16_vectors_are_the_fp32_models_within_a_fraction_of_the_tolerance(
    fp32: OnnxEncoder,
) -> None:
    encoder = create_encoder("auto", minilm_model_dir(), EmbeddingSettings().cache_dir, bf16="auto")
    assert isinstance(encoder, OnnxEncoder) and encoder.runtime == "openvino-bf16"
    assert encoder.max_tokens == fp32.max_tokens == 256  # the long text cut alike
    reference = fp32.encode(TEXTS)
    vectors = encoder.encode(TEXTS)
    # measured 0.99997 at worst on squad2-sample-a paragraphs; ONNX Runtime vs torch: 1e-3
    assert cosines(vectors, reference).min() > 0.9999
    # ... and really bf16's: not fp32's vectors to float precision
    assert "bfloat16" in str(encoder.session.model.get_property("INFERENCE_PRECISION_HINT"))
    # not pinned to cores: replicas sharing a node would all sit on its first cores
    assert encoder.session.model.get_property("ENABLE_CPU_PINNING") is False
    assert np.abs(cosines(vectors, reference) - 1).max() > 1e-7
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    # a text's vector does not depend on its batch or on concurrent calls
    alone = np.concatenate([encoder.encode([t]) for t in TEXTS])
    assert np.abs(cosines(alone, vectors) - 1).max() < 1e-4
    passes = record_runs(encoder)
    encoder.encode(["same length text"] * 8)
    assert len(passes) == 2  # one sub-batch per stream, side by side
    with ThreadPoolExecutor(4) as callers:
        rows = list(callers.map(lambda t: encoder.encode([t])[0], TEXTS * 3))
    assert np.abs(cosines(np.tile(alone, (3, 1)), np.stack(rows)) - 1).max() < 1e-4


def test_a_graph_openvino_cannot_compile_falls_back_to_onnx_runtime_unless_bf16_is_required(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A compile failure cannot be caused with the shipped graph: the session is made to
    fail, on a CPU taken to have bf16 arithmetic."""
    from services.embedding import local

    def broken(*_: object, **__: object) -> None:
        raise RuntimeError("an operator OpenVINO cannot compile")

    monkeypatch.setattr(local, "use_bf16", lambda mode: mode != "off")
    monkeypatch.setattr(local, "OpenVinoSession", broken)
    cache = EmbeddingSettings().cache_dir
    fallback = create_encoder("auto", minilm_model_dir(), cache, bf16="auto")
    assert fallback.runtime == "onnxruntime"
    with pytest.raises(RuntimeError, match="cannot compile"):
        create_encoder("auto", minilm_model_dir(), cache, bf16="on")
