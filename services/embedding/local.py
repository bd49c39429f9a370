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
import math
import os
import tempfile
import threading
import warnings
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from services.common import errors
from services.common.models import INT8_SUFFIX, MINILM_NAME, minilm_model_dir
from services.embedding.bf16 import RUNTIME as RUNTIME_BF16
from services.embedding.bf16 import OpenVinoSession, use_bf16
from services.embedding.config import Bf16Mode
from services.embedding.embedder import ModelInfo, Vectors, l2_normalize, mean_pool
from services.embedding.tokens import load_tokenizer

log = logging.getLogger("ragmesh.embedding")

ONNX_OPSET = 17
# Bump when the export recipe changes, so stale cached files are not reused.
EXPORT_VERSION = 1
ONNX_INPUTS = ("input_ids", "attention_mask", "token_type_ids")


class Encoder(Protocol):
    """A synchronous in-process model. `encode` may be called from several threads at
    once."""

    runtime: str
    dimension: int
    max_tokens: int

    def encode(self, texts: Sequence[str]) -> Vectors: ...


def available_cores(cgroup_cpu_max: Path = Path("/sys/fs/cgroup/cpu.max")) -> int:
    """The cores this process may use: its CPU affinity, capped by a cgroup v2 CPU quota
    (a Kubernetes CPU limit of 2 on a 32-core node is 2, not 32)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    cores = cores or 1
    try:
        quota, period = cgroup_cpu_max.read_text().split()[:2]
        if quota != "max":
            cores = min(cores, max(1, math.ceil(int(quota) / int(period))))
    except (OSError, ValueError):
        pass  # no cgroup v2 limit readable: the affinity alone
    return cores


class PassPool:
    """Runs a call's forward passes side by side, one thread each.

    ONNX Runtime sessions here run a pass on one thread (intra-op 1): a pass over one
    paragraph is too small to split across cores efficiently (MiniLM, 240 paragraphs of
    this repository's docs, one at a time: on ONNX Runtime's own 2 threads 35.1 ms of CPU
    and 20.7 ms of wall a text; on 1 thread, two texts at once, 30.7 and 15.5 ms). So a
    call's texts are cut into at least as many sub-batches as there are threads, and
    the sub-batches run in parallel; concurrent calls run in parallel too."""

    def __init__(self, threads: int = 0) -> None:
        self.threads = threads or available_cores()
        self._pool = (
            ThreadPoolExecutor(self.threads, thread_name_prefix="forward")
            if self.threads > 1
            else None
        )

    def map(self, run: Any, groups: list[list[int]]) -> list[Any]:
        if self._pool is None or len(groups) < 2:
            return [run(group) for group in groups]
        return list(self._pool.map(run, groups))

    def share(self, total: int) -> int:
        """The most a sub-batch may hold of `total` (texts, tokens) so that every thread
        gets one."""
        return max(1, -(-total // self.threads))


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
    """sentence-transformers on torch: the reference pipeline. One call at a time: torch
    spreads each forward pass over its own threads."""

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
        self._lock = threading.Lock()

    def encode(self, texts: Sequence[str]) -> Vectors:
        with self._lock:
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


def single_thread_session(path: Path) -> Any:
    """An ONNX Runtime session whose passes each run on the calling thread alone
    (intra-op 1: no worker threads, so nothing spin-waits; PassPool runs passes side by
    side). `run` is safe to call from several threads at once."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


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
        precision: str = "fp32",
        bf16: bool = False,
    ) -> None:
        if bf16 and precision != "fp32":  # before any export or quantisation is made
            raise ValueError("bf16 applies to the fp32 graph, not to int8")
        _check_pipeline(model_dir)
        self.max_tokens = int(_sentence_bert_config(model_dir).get("max_seq_length", 512))
        self.batch_size = batch_size
        self.onnx_path = onnx_path or ensure_onnx_model(model_dir, cache_dir, precision)
        self.passes = PassPool(threads)
        self.session: Any
        if bf16:
            # services/embedding/bf16.py: the same vectors to a cosine of 0.99997
            self.runtime = RUNTIME_BF16
            self.session = OpenVinoSession(self.onnx_path, streams=self.passes.threads)
            self._input_names = self.session.input_names
        else:
            if precision == "int8":
                self.runtime = "onnxruntime-int8"
            self.session = single_thread_session(self.onnx_path)
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
        if not encodings:
            return np.empty((0, 0), dtype=np.float32)
        size = min(self.batch_size, self.passes.share(len(encodings)))
        groups = length_groups([len(e.ids) for e in encodings], size)
        parts = self.passes.map(lambda idx: self._forward([encodings[i] for i in idx]), groups)
        out = np.empty((len(texts), parts[0].shape[1]), dtype=np.float32)
        for idx, vectors in zip(groups, parts, strict=True):
            out[idx] = vectors
        return out


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
    precision: str = "fp32",
    bf16: Bf16Mode = "off",
) -> Encoder:
    """`onnx`, `torch`, or `auto`: ONNX Runtime (faster here, see docs/benchmarks.md),
    falling back to torch when the export cannot be made. `precision` int8: the ONNX
    graph quantised; torch has no int8 here, so int8 never falls back to it (its fp32
    vectors would be served under the int8 model's name). `bf16`: the fp32 graph's passes
    in bf16 through OpenVINO (services/embedding/bf16.py) — `auto` where the CPU has bf16
    arithmetic, `on` or fail."""
    if bf16 == "on" and (runtime == "torch" or precision == "int8"):
        raise ValueError(
            "RAGMESH_EMBEDDING_BF16=on runs the fp32 ONNX graph: not with the torch runtime "
            "or int8 precision"
        )
    if runtime == "torch":
        if precision == "int8":
            raise ValueError("int8 precision needs the ONNX runtime (RAGMESH_EMBEDDING_RUNTIME)")
        return TorchEncoder(model_dir, batch_size=batch_size, threads=threads)

    def onnx(in_bf16: bool) -> OnnxEncoder:
        return OnnxEncoder(
            model_dir,
            cache_dir,
            batch_size=batch_size,
            threads=threads,
            precision=precision,
            bf16=in_bf16,
        )

    if precision == "fp32" and use_bf16(bf16):
        try:
            return onnx(True)
        except Exception as exc:  # e.g. an operator OpenVINO cannot compile
            if bf16 == "on":
                raise
            log.warning("bf16 through OpenVINO unavailable for %s (%s)", model_dir, exc)
    if runtime == "onnx" or precision == "int8":
        return onnx(False)
    try:
        return onnx(False)
    except Exception as exc:
        log.warning("ONNX Runtime unavailable for %s (%s); using torch", model_dir, exc)
        return TorchEncoder(model_dir, batch_size=batch_size, threads=threads)


class LocalEmbedder:
    """The `local` backend: one encoder, called from worker threads so the event loop
    stays free; as many calls run at once as the encoder runs passes side by side
    (`parallel_calls`: the threads, or every core)."""

    def __init__(
        self,
        runtime: str,
        model_dir: Path,
        cache_dir: Path,
        *,
        batch_size: int = 32,
        threads: int = 0,
        precision: str = "fp32",
        bf16: Bf16Mode = "off",
    ) -> None:
        self.runtime = runtime
        self.model_dir = model_dir
        self.cache_dir = cache_dir
        self.batch_size = batch_size
        self.threads = threads
        self.precision = precision
        self.bf16 = bf16
        self.encoder: Encoder | None = None
        self.parallel_calls = 1 if runtime == "torch" else threads or available_cores()
        self._executor = ThreadPoolExecutor(self.parallel_calls, thread_name_prefix="embed")
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
            precision=self.precision,
            bf16=self.bf16,
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
    (services.embedding.usem), served like the MiniLM model (calls and passes side by side)."""

    def __init__(self, cache_dir: Path, *, threads: int = 0, token_budget: int) -> None:
        from services.embedding.usem import resources_dir

        super().__init__("onnx", resources_dir(), cache_dir, threads=threads)
        self.token_budget = token_budget

    def _create(self) -> Encoder:
        from services.embedding.usem import UsemOnnxEncoder

        return UsemOnnxEncoder(
            self.cache_dir,
            threads=self.threads,
            token_budget=self.token_budget,
            resources=self.model_dir,
        )

    @property
    def name(self) -> str:
        from services.embedding.usem import USEM_NAME

        return USEM_NAME
