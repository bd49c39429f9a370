"""Settings of the chunking service (RAGMESH_CHUNKING_* environment variables)."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

#: all-MiniLM-L6-v2 reads at most 256 word pieces, [CLS] and [SEP] included.
MODEL_MAX_TOKENS = 256


class ChunkingSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="RAGMESH_CHUNKING_", extra="ignore")

    max_document_bytes: int = Field(
        default=32 * 1024 * 1024,
        gt=0,
        description="Largest document accepted (raw bytes, or UTF-8 bytes of `text`); "
        "larger is RESOURCE_EXHAUSTED / DOCUMENT_TOO_LARGE.",
    )
    model_max_tokens: int = Field(
        default=MODEL_MAX_TOKENS,
        gt=3,
        description="The embedding model's input limit in tokens, special tokens included; "
        "a request's max_tokens above it is INVALID_ARGUMENT.",
    )
    default_max_tokens: int = Field(
        default=MODEL_MAX_TOKENS,
        gt=3,
        description="Tokens per chunk (special tokens included) when a request says 0.",
    )
    default_overlap_tokens: int = Field(
        default=0,
        ge=0,
        description="Tokens repeated from the previous chunk when a request says -1.",
    )
    max_chunk_chars: int = Field(
        default=4096,
        ge=16,
        description="Hard cap on a chunk's length in characters, whatever its token count "
        "(a word over 100 characters is a single [UNK] word piece).",
    )
    max_concurrency: int = Field(
        default=2,
        ge=1,
        description="Documents chunked at the same time, each in its own worker process "
        "(the pool's size); further calls wait.",
    )
    parse_timeout_s: float = Field(
        default=60.0,
        gt=0,
        description="Wall-clock budget of one document (parse, tokenise, split) in its worker "
        "process; over it the process is killed and replaced, and the call fails "
        "INVALID_ARGUMENT / PARSE_TIMEOUT.",
    )
    worker_memory_mb: int = Field(
        default=1536,
        ge=0,
        description="Memory cap of each worker process in MiB (RLIMIT_DATA: heap and other "
        "private writable memory); a document that needs more fails INVALID_ARGUMENT / "
        "DOCUMENT_TOO_COMPLEX. 0: no cap.",
    )
    max_pdf_pages: int = Field(
        default=10_000,
        ge=1,
        description="Most pages read from a PDF; more is INVALID_ARGUMENT / DOCUMENT_TOO_COMPLEX.",
    )
    max_html_depth: int = Field(
        default=10_000,
        ge=16,
        description="Deepest element nesting accepted in HTML (the parser is quadratic in it); "
        "deeper is INVALID_ARGUMENT / DOCUMENT_TOO_COMPLEX.",
    )
    tokenizer_path: str = Field(
        default="",
        description="tokenizer.json to count tokens with; empty: the bundled "
        "all-MiniLM-L6-v2 tokenizer.",
    )
    tokenizer_name: str = Field(
        default="sentence-transformers/all-MiniLM-L6-v2",
        description="Model name reported as the tokenizer in responses.",
    )
