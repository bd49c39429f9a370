"""Settings of the retrieval service (RAGMESH_RETRIEVAL_* environment variables)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

# Milvus VARCHAR fields hold at most 65,535 bytes.
MILVUS_VARCHAR_MAX = 65_535


def default_milvus_uri() -> str:
    """A Milvus Lite database under the user's data directory ($XDG_DATA_HOME)."""
    base = Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share")
    return str(base / "ragmesh" / "milvus" / "ragmesh.db")


class RetrievalSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="RAGMESH_RETRIEVAL_", extra="ignore")

    milvus_uri: str = Field(
        default_factory=default_milvus_uri,
        description="Milvus to use: a path ending in `.db` opens a Milvus Lite database in "
        "this process (its parent directory is created); `http://host:port` connects to a "
        "Milvus server or a Milvus Lite server (`python -m services.retrieval.lite_server "
        "server --data-dir D --port P`: `milvus-lite server` with ragmesh's fixes).",
    )
    milvus_token: str = Field(
        default="", description="Milvus token (`user:password` or an API key); empty for none."
    )
    milvus_db_name: str = Field(
        default="", description="Milvus database name; empty for the default."
    )
    consistency: Literal["Session", "Strong", "Bounded", "Eventually"] = Field(
        default="Session",
        description="Read consistency. `Session`: every read waits for the last write this "
        "service instance made to the collection (read-your-writes for one instance). "
        "`Strong`: every read waits for all writes (needed with several retrieval replicas; "
        "~0.2-0.3 s a read on Milvus 2.3).",
    )
    default_top_k: int = Field(default=10, ge=1, description="top_k when a search leaves it 0.")
    max_top_k: int = Field(
        default=100, ge=1, le=16_384, description="Largest top_k a search may ask."
    )
    hybrid_candidates: int = Field(
        default=20,
        ge=1,
        le=16_384,
        description="How many results each retriever (dense, BM25) contributes before fusion "
        "(at least top_k).",
    )
    rrf_k: int = Field(
        default=60, ge=1, description="Default constant k of reciprocal-rank fusion."
    )
    default_fusion: Literal["RRF", "WEIGHTED"] = Field(
        default="WEIGHTED",
        description="Fusion used when a hybrid search leaves the method unspecified.",
    )
    dense_weight: float = Field(
        default=1.0, ge=0.0, description="Default dense weight of WEIGHTED fusion."
    )
    sparse_weight: float = Field(
        default=1.0, ge=0.0, description="Default BM25 weight of WEIGHTED fusion."
    )
    hnsw_ef: int = Field(
        default=128, ge=1, description="HNSW search breadth `ef` (raised to top_k when smaller)."
    )
    ivf_nprobe: int = Field(default=16, ge=1, description="IVF_FLAT clusters probed per search.")
    bm25_identifiers: bool = Field(
        default=True,
        description="New collections index code identifiers for BM25 both whole and split at "
        "_ . :: -> and case changes (a `bm25_text` field feeds the BM25 function; queries are "
        "expanded the same way); false: BM25 reads the text alone.",
    )
    max_text_bytes: int = Field(
        default=MILVUS_VARCHAR_MAX,
        ge=1,
        le=MILVUS_VARCHAR_MAX,
        description="Largest chunk text (UTF-8 bytes) accepted by UpsertChunks.",
    )
    max_query_text_bytes: int = Field(
        default=8_192,
        ge=1,
        description="Largest query text (UTF-8 bytes) accepted by SearchChunks.",
    )
    max_metadata_bytes: int = Field(
        default=16_384, ge=2, description="Largest chunk metadata, serialised as JSON (bytes)."
    )
    max_chunks_per_upsert: int = Field(
        default=4_096, ge=1, description="Most chunks one UpsertChunks call may carry."
    )
    max_filter_conditions: int = Field(
        default=32, ge=1, description="Most filter conditions one search may carry."
    )
    max_filter_values: int = Field(
        default=1_024, ge=1, description="Most values one `in` filter condition may list."
    )
    faults: str = Field(
        default="",
        description="Tests only: `operation=count,...` fails the next `count` calls of "
        "delete_document_chunks, delete_collection or upsert_chunks as if Milvus were down. "
        "Empty: never.",
    )
    max_excluded_documents: int = Field(
        default=1000,
        ge=0,
        description="Most document ids a search may exclude (the gateway excludes documents "
        "being deleted).",
    )
    flush_after_upsert: Literal["auto", "deferred", "always", "never"] = Field(
        default="auto",
        description="When to flush a collection after UpsertChunks (searches over unflushed "
        "rows are several times slower on Milvus Lite; the flush builds their index). `auto`: "
        "on Milvus Lite, deferred — in the background once the collection had no write for "
        "RAGMESH_RETRIEVAL_FLUSH_IDLE_MS, at the latest FLUSH_MAX_DELAY_MS after its first "
        "unflushed write (rows are searchable and durable before it; reads wait while a flush "
        "runs); never on a Milvus server, where visibility comes from the consistency level "
        "and a flush costs seconds. `deferred`: the same. `always`: inside every "
        "UpsertChunks. `never`.",
    )
    flush_idle_ms: float = Field(
        default=200.0,
        ge=0,
        description="Milvus Lite, `auto` flushes: flush a collection once it has had no write "
        "for this long.",
    )
    flush_max_delay_ms: float = Field(
        default=1000.0,
        ge=0,
        description="Milvus Lite, `auto` flushes: flush a collection at the latest this long "
        "after its first unflushed write, even while writes go on.",
    )
    call_timeout_s: float = Field(
        default=30.0,
        gt=0,
        description="Longest a Milvus call may take when the caller set no deadline.",
    )
    down_timeout_s: float = Field(
        default=1.0,
        gt=0,
        description="Longest a Milvus call may take while the readiness check finds Milvus "
        "down, so that callers get UNAVAILABLE quickly.",
    )
    connect_timeout_s: float = Field(
        default=5.0, gt=0, description="Timeout of one attempt to connect to Milvus."
    )
    threads: int = Field(
        default=8, ge=1, description="Worker threads for the (blocking) Milvus client calls."
    )

    @field_validator("milvus_uri")
    @classmethod
    def _uri_shape(cls, value: str) -> str:
        if not (value.endswith(".db") or value.startswith(("http://", "https://", "tcp://"))):
            raise ValueError("must be a `.db` path (Milvus Lite) or an http(s):// URI")
        return value

    @property
    def is_lite_file(self) -> bool:
        return self.milvus_uri.endswith(".db")
