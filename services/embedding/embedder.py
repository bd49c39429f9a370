"""The `Embedder` protocol every backend implements, and the plain types around it."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import numpy.typing as npt

Vectors = npt.NDArray[np.float32]


@dataclass(frozen=True)
class ModelInfo:
    model: str
    dimension: int
    #: longest input in the model's tokens, special tokens included
    max_tokens: int
    #: vectors are L2-normalised (cosine == inner product)
    normalized: bool
    backend: str
    #: local backend only: "onnxruntime", "openvino-bf16", "onnxruntime-int8" or "torch"
    runtime: str = ""


class Embedder(Protocol):
    """One backend: the bundled model in process, a TEI server or an OpenAI-compatible API.

    `embed` receives texts already validated against `ModelInfo.max_tokens` (unless the
    caller asked for truncation) and returns one row per text, L2-normalised, float32.
    Failures are raised as `services.common.errors.ServiceError`s.
    """

    #: calls it serves at once well (the micro-batcher's default limit)
    parallel_calls: int

    async def info(self) -> ModelInfo:
        """Describe the model; loads it or asks the server (raises Unavailable if down)."""
        ...

    async def embed(self, texts: Sequence[str], *, truncate: bool) -> Vectors:
        """One backend call for the whole batch."""
        ...

    async def ready(self) -> bool:
        """Whether the backend can serve now (a remote server answers)."""
        ...

    async def close(self) -> None: ...


def l2_normalize(vectors: npt.NDArray[np.floating]) -> Vectors:
    """Row-wise L2 normalisation as torch.nn.functional.normalize does it (eps 1e-12)."""
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return (vectors / np.maximum(norms, 1e-12)).astype(np.float32, copy=False)


def mean_pool(
    token_embeddings: npt.NDArray[np.floating], attention_mask: npt.NDArray[np.integer]
) -> Vectors:
    """Mean over the real (unmasked) tokens, as sentence-transformers' Pooling module does."""
    mask = attention_mask[..., None].astype(np.float32)
    summed = (token_embeddings * mask).sum(axis=1)
    counts = np.clip(mask.sum(axis=1), 1e-9, None)
    return (summed / counts).astype(np.float32, copy=False)
