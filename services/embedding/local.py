"""The `local` backend: a sentence-transformers model in this process, run either by
sentence-transformers on torch or by ONNX Runtime on a one-time ONNX export of it.

Both produce the same vectors (mean pooling over real tokens, then L2 normalisation,
as the model's modules.json prescribes); tests hold them to 1e-3 cosine.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import tempfile
import warnings
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from services.common import errors
from services.common.models import INT8_SUFFIX, MINILM_NAME, minilm_model_dir
from services.embedding.embedder import ModelInfo, Vectors, l2_normalize, mean_pool
from services.embedding.tokens import load_tokenizer

log = logging.getLogger("ragmesh.embedding")

ONNX_OPSET = 17
# Bump when the export recipe changes, so stale cached files are not reused.
EXPORT_VERSION = 1
ONNX_INPUTS = ("input_ids", "attention_mask", "token_type_ids")


class Encoder(Protocol):
    """A synchronous in-process model (called from one worker thread)."""

    runtime: str
    dimension: int
    max_tokens: int

    def encode(self, texts: Sequence[str]) -> Vectors: ...


def model_name(model_dir: Path, precision: str = "fp32") -> str:
    base = MINILM_NAME if model_dir == minilm_model_dir() else model_dir.name
    return base + INT8_SUFFIX if precision == "int8" else base


def _sentence_bert_config(model_dir: Path) -> dict[str, Any]:
    path = model_dir / "sentence_bert_config.json"
    return json.loads(path.read_text()) if path.exists() else {}


def _check_pipeline(model_dir: Path) -> None:
    """The ONNX path re-implements pooling; refuse models whose pipeline differs."""
    pooling = json.loads((model_dir / "1_Pooling" / "config.json").read_text())
    if not pooling.get("pooling_mode_mean_tokens") or any(
        pooling.get(k)
        for k in (
            "pooling_mode_cls_token",
            "pooling_mode_max_tokens",
            "pooling_mode_mean_sqrt_len_tokens",
        )
    ):
        raise ValueError(f"{model_dir}: only mean pooling is supported by the ONNX runtime")
    modules = json.loads((model_dir / "modules.json").read_text())
    if not any(m["type"].endswith("Normalize") for m in modules):
        raise ValueError(f"{model_dir}: the ONNX runtime expects a Normalize module")


class TorchEncoder:
    """sentence-transformers on torch: the reference pipeline."""

    runtime = "torch"

    def __init__(self, model_dir: Path, *, batch_size: int = 32, threads: int = 0) -> None:
        import torch
        from sentence_transformers import SentenceTransformer

        if threads:
            torch.set_num_threads(threads)
        self.model = SentenceTransformer(str(model_dir), device="cpu", local_files_only=True)
        self.batch_size = batch_size
        self.max_tokens = int(self.model.max_seq_length or 512)
        dim = self.model.get_embedding_dimension()
        self.dimension = int(dim) if dim else 0

    def encode(self, texts: Sequence[str]) -> Vectors:
        vectors = self.model.encode(
            list(texts),
            batch_size=self.batch_size,
            convert_to_numpy=True,
            show_progress_bar=False,
        )
        # The model's own Normalize module already ran; this only fixes the dtype.
        return np.asarray(vectors, dtype=np.float32)


def _file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def onnx_cache_path(model_dir: Path, cache_dir: Path) -> Path:
    """Where the export of this exact model lives: keyed by the weights and config."""
    weights = model_dir / "model.safetensors"
    if not weights.exists():
        weights = model_dir / "pytorch_model.bin"
    key = hashlib.sha256(
        f"{_file_digest(weights)}:{(model_dir / 'config.json').read_text()}:"
        f"{ONNX_OPSET}:{EXPORT_VERSION}".encode()
    ).hexdigest()[:16]
    return cache_dir / "onnx" / f"{model_dir.name}-{key}" / "model.onnx"


def export_onnx(model_dir: Path, target: Path) -> None:
    """Export the transformer (token embeddings out) with torch.onnx, opset 17.

    Written to a temporary file and renamed, so concurrent processes never read a
    half-written model.
    """
    import torch
    from transformers import AutoModel

    bert = AutoModel.from_pretrained(
        str(model_dir), local_files_only=True, attn_implementation="eager"
    )
    bert.eval()

    class _KeywordArgs(torch.nn.Module):
        # transformers 5 models take keyword arguments only; the exporter passes positionals.
        def __init__(self, model: torch.nn.Module) -> None:
            super().__init__()
            self.model = model

        def forward(
            self,
            input_ids: torch.Tensor,
            attention_mask: torch.Tensor,
            token_type_ids: torch.Tensor,
        ) -> torch.Tensor:
            out = self.model(
                input_ids=input_ids,
                attention_mask=attention_mask,
                token_type_ids=token_type_ids,
            )
            return out.last_hidden_state

    sample = torch.ones(2, 8, dtype=torch.long)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, suffix=".onnx.tmp")
    os.close(fd)
    try:
        # The tracer warns about shape-dependent Python branches in transformers' masking
        # code; they are constant for BERT (tested: batches with padding match torch).
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                _KeywordArgs(bert),
                (sample, sample, torch.zeros_like(sample)),
                tmp,
                opset_version=ONNX_OPSET,
                input_names=list(ONNX_INPUTS),
                output_names=["last_hidden_state"],
                dynamic_axes={
                    n: {0: "batch", 1: "sequence"} for n in (*ONNX_INPUTS, "last_hidden_state")
                },
                dynamo=False,
            )
        os.chmod(tmp, 0o644)  # mkstemp makes it private; the cache may be shared
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def ensure_onnx_model(model_dir: Path, cache_dir: Path, precision: str = "fp32") -> Path:
    path = onnx_cache_path(model_dir, cache_dir)
    if not path.exists():
        log.info("exporting %s to ONNX at %s (once)", model_dir, path)
        export_onnx(model_dir, path)
    return quantized_int8(path) if precision == "int8" else path


def quantized_int8(fp32: Path) -> Path:
    """Dynamic int8 quantisation of an exported graph, made once beside it and renamed
    into place like the export: int8 weights with one scale per output channel (one
    scale per tensor costs far more precision: MiniLM's vectors on squad2-sample-a
    paragraphs at a cosine of 0.952 to fp32's on average, 0.916 at worst, against
    0.995 and 0.992 per channel, at the same speed), activations quantised per batch."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    target = fp32.with_name("model.int8-per-channel.onnx")
    if not target.exists():
        log.info("quantising %s to int8 (once)", fp32)
        fd, tmp = tempfile.mkstemp(dir=target.parent, suffix=".int8.tmp.onnx")
        os.close(fd)
        try:
            quantize_dynamic(fp32, tmp, weight_type=QuantType.QInt8, per_channel=True)
            os.chmod(tmp, 0o644)
            os.replace(tmp, target)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
    return target


class OnnxEncoder:
    """ONNX Runtime on the exported transformer; tokenisation with `tokenizers`,
    mean pooling and L2 normalisation in numpy, exactly as sentence-transformers does."""

    runtime = "onnxruntime"

    def __init__(
        self,
        model_dir: Path,
        cache_dir: Path,
        *,
        batch_size: int = 32,
        threads: int = 0,
        onnx_path: Path | None = None,
        spinning: bool = False,
        precision: str = "fp32",
    ) -> None:
        import onnxruntime as ort

        _check_pipeline(model_dir)
        self.max_tokens = int(_sentence_bert_config(model_dir).get("max_seq_length", 512))
        self.batch_size = batch_size
        self.onnx_path = onnx_path or ensure_onnx_model(model_dir, cache_dir, precision)
        if precision == "int8":
            self.runtime = "onnxruntime-int8"
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if threads:
            options.intra_op_num_threads = threads
        # Spin-waiting worker threads win a little on an idle machine and lose a lot when
        # the cores are shared (measured: 50 queries 663 -> 435 ms with spinning off).
        options.add_session_config_entry(
            "session.intra_op.allow_spinning", "1" if spinning else "0"
        )
        self.session = ort.InferenceSession(
            str(self.onnx_path), options, providers=["CPUExecutionProvider"]
        )
        self._input_names = {i.name for i in self.session.get_inputs()}
        self.tokenizer = load_tokenizer(model_dir / "tokenizer.json")
        self.tokenizer.enable_truncation(max_length=self.max_tokens)  # padded in _forward
        self.dimension = int(self.encode(["dimension probe"]).shape[1])

    def _forward(self, encodings: Sequence[Any]) -> Vectors:
        width = max(len(e.ids) for e in encodings)
        ids = np.zeros((len(encodings), width), dtype=np.int64)  # padding: masked out
        mask = np.zeros_like(ids)
        types = np.zeros_like(ids)
        for row, e in enumerate(encodings):
            n = len(e.ids)
            ids[row, :n], mask[row, :n], types[row, :n] = e.ids, 1, e.type_ids
        feeds = {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}
        feeds = {k: v for k, v in feeds.items() if k in self._input_names}
        (hidden,) = self.session.run(["last_hidden_state"], feeds)
        return l2_normalize(mean_pool(hidden, mask))

    def encode(self, texts: Sequence[str]) -> Vectors:
        encodings = self.tokenizer.encode_batch(list(texts), add_special_tokens=True)
        out: Vectors | None = None
        for idx in length_groups([len(e.ids) for e in encodings], self.batch_size):
            vectors = self._forward([encodings[i] for i in idx])
            if out is None:
                out = np.empty((len(texts), vectors.shape[1]), dtype=np.float32)
            out[idx] = vectors
        return out if out is not None else np.empty((0, 0), dtype=np.float32)


# A text joins a sub-batch only if padding it to the sub-batch's longest text adds at
# most this many tokens, or this share of that length, whichever is more. A padded
# token costs as much as a real one, and on these CPUs batching texts of 50-250 tokens
# saves nothing else (measured on squad2-sample-a paragraphs, MiniLM: calls of 8 texts
# padded to the longest 54.6 ms CPU a text, in near-equal-length groups 33.6, one at a
# time 33.5); short texts (queries) still batch, within the slack.
PAD_SLACK_TOKENS = 16
PAD_SLACK_SHARE = 0.1


def length_groups(lengths: Sequence[int], max_size: int) -> list[list[int]]:
    """Indices of texts in sub-batches of at most `max_size`, longest first, each within
    the padding slack of its longest text."""
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    groups: list[list[int]] = []
    for i in order:
        group = groups[-1] if groups else None
        if group is not None and len(group) < max_size:
            longest = lengths[group[0]]
            if longest - lengths[i] <= max(PAD_SLACK_TOKENS, PAD_SLACK_SHARE * longest):
                group.append(i)
                continue
        groups.append([i])
    return groups


def create_encoder(
    runtime: str,
    model_dir: Path,
    cache_dir: Path,
    *,
    batch_size: int = 32,
    threads: int = 0,
    spinning: bool = False,
    precision: str = "fp32",
) -> Encoder:
    """`onnx`, `torch`, or `auto`: ONNX Runtime (faster here, see docs/benchmarks.md),
    falling back to torch when the export cannot be made. `precision` int8: the ONNX
    graph quantised; torch has no int8 here, so int8 never falls back to it (its fp32
    vectors would be served under the int8 model's name)."""
    if runtime == "torch":
        if precision == "int8":
            raise ValueError("int8 precision needs the ONNX runtime (RAGMESH_EMBEDDING_RUNTIME)")
        return TorchEncoder(model_dir, batch_size=batch_size, threads=threads)

    def onnx() -> OnnxEncoder:
        return OnnxEncoder(
            model_dir,
            cache_dir,
            batch_size=batch_size,
            threads=threads,
            spinning=spinning,
            precision=precision,
        )

    if runtime == "onnx" or precision == "int8":
        return onnx()
    try:
        return onnx()
    except Exception as exc:
        log.warning("ONNX Runtime unavailable for %s (%s); using torch", model_dir, exc)
        return TorchEncoder(model_dir, batch_size=batch_size, threads=threads)


class LocalEmbedder:
    """The `local` backend: one encoder, called from a single worker thread so the
    event loop stays free and forward passes never overlap on the CPU."""

    def __init__(
        self,
        runtime: str,
        model_dir: Path,
        cache_dir: Path,
        *,
        batch_size: int = 32,
        threads: int = 0,
        spinning: bool = False,
        precision: str = "fp32",
    ) -> None:
        self.runtime = runtime
        self.model_dir = model_dir
        self.cache_dir = cache_dir
        self.batch_size = batch_size
        self.threads = threads
        self.spinning = spinning
        self.precision = precision
        self.encoder: Encoder | None = None
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="embed")
        self._lock = asyncio.Lock()

    async def _load(self) -> Encoder:
        async with self._lock:
            if self.encoder is None:
                loop = asyncio.get_running_loop()
                self.encoder = await loop.run_in_executor(self._executor, self._create)
                log.info("local model %s on %s", self.model_dir, self.encoder.runtime)
            return self.encoder

    def _create(self) -> Encoder:
        return create_encoder(
            self.runtime,
            self.model_dir,
            self.cache_dir,
            batch_size=self.batch_size,
            threads=self.threads,
            spinning=self.spinning,
            precision=self.precision,
        )

    @property
    def name(self) -> str:
        return model_name(self.model_dir, self.precision)

    async def info(self) -> ModelInfo:
        encoder = await self._load()
        return ModelInfo(
            model=self.name,
            dimension=encoder.dimension,
            max_tokens=encoder.max_tokens,
            normalized=True,
            backend="local",
            runtime=encoder.runtime,
        )

    async def embed(self, texts: Sequence[str], *, truncate: bool) -> Vectors:
        # Texts reaching here fit, or the caller asked for truncation: both runtimes
        # cut at max_tokens.
        encoder = await self._load()
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._executor, encoder.encode, list(texts))
        except Exception as exc:
            raise errors.Internal(f"local model failed: {exc}", reason="EMBEDDING_FAILED") from exc

    async def ready(self) -> bool:
        return self.encoder is not None

    async def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)


class UsemEmbedder(LocalEmbedder):
    """USE multilingual v3 in process: the ONNX graph built from the package's weights
    (services.embedding.usem), behind the same single worker thread."""

    def __init__(
        self, cache_dir: Path, *, threads: int = 0, spinning: bool = False, token_budget: int
    ) -> None:
        from services.embedding.usem import resources_dir

        super().__init__("onnx", resources_dir(), cache_dir, threads=threads, spinning=spinning)
        self.token_budget = token_budget

    def _create(self) -> Encoder:
        from services.embedding.usem import UsemOnnxEncoder

        return UsemOnnxEncoder(
            self.cache_dir,
            threads=self.threads,
            spinning=self.spinning,
            token_budget=self.token_budget,
            resources=self.model_dir,
        )

    @property
    def name(self) -> str:
        from services.embedding.usem import USEM_NAME

        return USEM_NAME
