"""Gateway settings (RAGMESH_GATEWAY_*). What the gateway shares with the
workers (Redis, heartbeat timeout, queue) is services.jobs.settings."""

from __future__ import annotations

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

MIB = 1024 * 1024


class GatewaySettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="RAGMESH_GATEWAY_", extra="ignore")

    api_keys: str = Field(
        default="",
        description="API keys as `key:tenant,key2:tenant2`; each key belongs to one tenant.",
    )
    api_keys_file: str = Field(
        default="",
        description="A file (e.g. a mounted secret) with one `key:tenant` a line; `#` "
        "comments. Combined with RAGMESH_GATEWAY_API_KEYS.",
    )
    allow_anonymous: bool = Field(
        default=False,
        description="Without any key configured, serve every caller as tenant `default` "
        "(local development only).",
    )
    api_keys_reload_interval_s: float = Field(
        default=5.0,
        description="How often, at most, a call checks whether RAGMESH_GATEWAY_API_KEYS_FILE "
        "changed (mtime, size, inode) and reloads it; a broken file keeps the previous keys. "
        "0 = read it at startup only.",
    )
    auth_failure_limit: int = Field(
        default=10,
        description="Failed authentications one source may have within "
        "RAGMESH_GATEWAY_AUTH_FAILURE_WINDOW_S; further calls from it are RESOURCE_EXHAUSTED / "
        "AUTH_RATE_LIMITED, even with a right key, until the window passes. 0 = no limit.",
    )
    auth_failure_window_s: float = Field(
        default=60.0, description="The sliding window over which failed authentications count."
    )
    auth_failure_max_sources: int = Field(
        default=10000,
        description="Sources whose failed authentications are remembered (least recently "
        "failed forgotten first); bounds the limiter's memory.",
    )
    trusted_proxy_hops: int = Field(
        default=0,
        description="Proxies in front of the gateway that append to `x-forwarded-for` (e.g. 1 "
        "for an ingress); the client address for the failed-authentication limit is then the "
        "entry that many from the right. 0 = the TCP peer address; only raise it when clients "
        "cannot reach the gateway except through those proxies.",
    )
    tls_cert_file: str = Field(
        default="",
        description="PEM certificate chain of the gateway; with RAGMESH_GATEWAY_TLS_KEY_FILE the "
        "gateway serves TLS only (no plaintext). Re-read when the files change.",
    )
    tls_key_file: str = Field(default="", description="PEM private key of that certificate.")
    tls_client_ca_file: str = Field(
        default="",
        description="PEM CA bundle; when set, clients must present a certificate it signed "
        "(mutual TLS), in addition to their API key.",
    )
    tls_reload_interval_s: float = Field(
        default=10.0,
        description="How often, at most, a new connection checks the certificate files for "
        "changes (cert-manager renewals); a broken pair keeps the previous one.",
    )
    health_port: int = Field(
        default=0,
        description="A plaintext port serving only grpc.health.v1 (for Kubernetes gRPC probes, "
        "which cannot speak TLS); 0 = none.",
    )
    max_upload_bytes: int = Field(
        default=32 * MIB, description="Largest document accepted (bytes)."
    )
    max_concurrent_uploads_per_tenant: int = Field(
        default=8,
        ge=1,
        description="Upload streams one tenant may have open at once on this replica.",
    )
    upload_buffer_bytes: int = Field(
        default=256 * MIB,
        ge=MIB,
        description="Upload bytes this replica holds in memory at once, over every stream of "
        "every tenant; a piece that would go over it fails its upload with RESOURCE_EXHAUSTED "
        "(retry later). Bounds the gateway's memory.",
    )
    upload_idle_timeout_s: float = Field(
        default=30.0, gt=0, description="An upload stream that sends nothing for this long fails."
    )
    max_receive_bytes: int = Field(
        default=4 * MIB,
        ge=64 * 1024,
        description="Largest gRPC message the gateway accepts: an upload piece (the SDK sends "
        "64 KiB) or a request; internal services keep RAGMESH_MAX_MESSAGE_BYTES.",
    )
    max_concurrent_watches_per_tenant: int = Field(
        default=64,
        ge=1,
        description="WatchIngestionJob streams one tenant may have open at once on this replica.",
    )
    max_knowledge_bases_per_tenant: int = Field(
        default=100, ge=0, description="Knowledge bases a tenant may have (0: no limit)."
    )
    max_documents_per_tenant: int = Field(
        default=100_000, ge=0, description="Documents a tenant may have (0: no limit)."
    )
    max_stored_bytes_per_tenant: int = Field(
        default=2 * 1024 * MIB,
        ge=0,
        description="Bytes a tenant may keep stored: queued uploads, the kept originals of its "
        "documents, and the uploads of FAILED/CANCELLED jobs until they expire (0: no limit).",
    )
    text_page_chars: int = Field(
        default=65_536, ge=1024, description="Most characters one GetDocumentText page returns."
    )
    check_interval_s: float = Field(
        default=0.0,
        ge=0,
        description="How often the gateway checks every knowledge base against Milvus (kb "
        "check, no repair) and exports the findings as metrics; 0: never.",
    )
    sweep_after_s: float = Field(
        default=30.0,
        ge=0,
        description="An interrupted delete (Milvus or the retrieval service down) is finished "
        "by the gateway's sweeper once it was last attempted this long ago; the collection a "
        "re-index replaced is dropped this long after the switch (searches that read the "
        "knowledge base just before it still find it).",
    )
    failed_upload_retention_s: float = Field(
        default=7 * 24 * 3600.0,
        gt=0,
        description="How long the upload bytes of a FAILED or CANCELLED job are kept for a "
        "retry; after that a retry says UPLOAD_GONE.",
    )
    job_retention_s: float = Field(
        default=30 * 24 * 3600.0,
        ge=0,
        description="How long the record of an ended ingestion job is kept (then "
        "GetIngestionJob says JOB_NOT_FOUND and listings leave it out); a document's last "
        "job is kept as long as it is the last. 0 = forever (Redis grows with every upload).",
    )
    default_top_k: int = Field(default=5, description="Search/Ask results when the request says 0.")
    max_top_k: int = Field(default=50, description="Largest top_k a Search or Ask may ask for.")
    max_query_chars: int = Field(default=2000, description="Longest Search query or Ask question.")
    max_history_turns: int = Field(
        default=50, ge=0, description="Most earlier turns (history) one Ask may carry."
    )
    max_history_turn_chars: int = Field(
        default=8000, ge=1, description="Longest Ask history turn (characters)."
    )
    max_history_chars: int = Field(
        default=32000, ge=1, description="Most characters of Ask history in all."
    )
    rewrite_timeout_s: float = Field(
        default=5.0,
        gt=0,
        description="Longest the rewrite of a follow-up question into a standalone search "
        "query may take (queue wait and LLM call; the Ask's deadline shortens it); past it "
        "the deterministic fallback query is searched (TIMEOUT).",
    )
    max_metadata_bytes: int = Field(
        default=16 * 1024, description="Largest upload metadata (as JSON) per document."
    )
    max_answer_tokens: int = Field(
        default=1024, description="Largest max_tokens an Ask may ask for (0 = generation default)."
    )
    default_page_size: int = Field(
        default=50, description="List page size when the request says 0."
    )
    chinese_model: str = Field(
        default="multilingual",
        description="Embedding model of a knowledge base created with language Chinese (use it "
        "for mixed Chinese/English too) and no model named: `multilingual` (USE multilingual "
        "v3, which understands Chinese) or any model the embedding service serves; empty = "
        "the embedding service's default.",
    )
    english_model: str = Field(
        default="",
        description="Embedding model of any other knowledge base created without a model "
        "named; empty = the embedding service's default (all-MiniLM-L6-v2 locally).",
    )
    max_page_size: int = Field(default=1000, description="Largest page size of a List call.")
    downstream_timeout_s: float = Field(
        default=30.0, description="Deadline for downstream calls when the caller set none."
    )
    ask_timeout_s: float = Field(
        default=120.0, description="Deadline for the generation stream when the caller set none."
    )
    ask_admission_check: bool = Field(
        default=True,
        description="Before embedding and retrieval for an answer that goes to the LLM, ask the "
        "generation service's queue (CheckAdmission) whether it would be refused now, so that a "
        "refusal (RESOURCE_EXHAUSTED with RetryInfo) comes within milliseconds; an accepted "
        "check keeps the answer's place in line.",
    )
    reaper_interval_s: float = Field(
        default=5.0, description="How often the gateway looks for stuck ingestion jobs."
    )
    job_max_attempts: int = Field(
        default=3, description="Runs a job gets (worker lost → re-queued) before it is FAILED."
    )
    queued_requeue_after_s: float = Field(
        default=600.0,
        gt=0,
        description="A job QUEUED this long without a sign of life has the broker checked for "
        "its message (the queue and the unacknowledged messages; again every this long while "
        "it waits); only a job whose message is gone is sent again. A job is never failed or "
        "sent twice for waiting in an intact queue.",
    )


class RerankSettings(BaseSettings):
    """The optional reranking stage (services/gateway/rerank.py; docs/retrieval.md)."""

    model_config = SettingsConfigDict(env_prefix="RAGMESH_RERANK_", extra="ignore")

    url: str = Field(
        default="",
        description="Base URL of a reranking server (e.g. `http://tei-reranker:80`); empty: "
        "no reranker, and a Search or Ask asking for reranking keeps retrieval's order "
        "(reported as NOT_CONFIGURED).",
    )
    protocol: str = Field(
        default="tei",
        description="`tei` (text-embeddings-inference `POST /rerank`) or `cohere` (the "
        "Cohere/Jina-style `POST /v1/rerank` that vLLM and Infinity serve).",
    )
    model: str = Field(default="", description="Model name sent with the `cohere` protocol.")
    api_key: str = Field(default="", description="Bearer token for the reranking server.")
    timeout_s: float = Field(
        default=2.0,
        gt=0,
        description="Longest a reranking call may take (the caller's deadline shortens it); "
        "past it the results keep retrieval's order (TIMEOUT).",
    )
    batch_size: int = Field(
        default=32, ge=1, le=1024, description="Candidates per request to the reranker."
    )
    candidates: int = Field(
        default=30,
        ge=1,
        le=100,
        description="Candidates retrieved for reranking when a request asks for fewer "
        "results (top_k); the best top_k of them after reranking are returned.",
    )


#: The abstention answer per question language; the same as the generation
#: service's default (RAGMESH_GENERATION_ABSTENTION_MESSAGES).
DEFAULT_ABSTENTION_MESSAGES = {
    "en": "The knowledge base does not contain information to answer this question.",
    "zh": "知识库中没有可以回答这个问题的信息。",
}


# USE multilingual's cosine similarities run lower than MiniLM's: on squad2-sample-a the
# highest threshold answering every answerable question is 0.175 for it, 0.4 for MiniLM
# (docs/benchmarks.md, "The relevance signal with the multilingual model").
DEFAULT_ABSTAIN_BELOW_BY_MODEL = {"universal-sentence-encoder-multilingual-3": 0.175}


class AnswerSettings(BaseSettings):
    """How Ask chooses its answer mode, composes verbatim answers and abstains
    (services/gateway/answers; docs/generation.md)."""

    model_config = SettingsConfigDict(env_prefix="RAGMESH_GATEWAY_", extra="ignore")

    llm_small: bool = Field(
        default=True,
        description="The generation service's LLM is small (the bundled SmolLM2-135M): the "
        "AUTO answer mode then answers verbatim. Set false with a capable LLM (vLLM, OpenAI) "
        "to make AUTO generative.",
    )
    verbatim_max_sentences: int = Field(
        default=3, ge=1, le=20, description="Most sentences in a verbatim answer."
    )
    verbatim_max_chars: int = Field(
        default=400,
        ge=50,
        description="Most characters of sentence text in a verbatim answer (citation markers "
        "not counted); a sentence longer than this is offered as runs of its clauses.",
    )
    verbatim_max_score_drop: float = Field(
        default=0.5,
        ge=0,
        description="A verbatim answer's second and later sentences must score within this of "
        "its best one (cosine similarity + 0.5 × lexical overlap + 0.25 × its passage's "
        "lexical overlap).",
    )
    abstain_below: float = Field(
        default=0.4,
        description="Ask abstains (every answer mode, no LLM call) when the relevance signal — "
        "the cosine similarity of the question to the most similar sentence of the retrieved "
        "passages — is below this. 0: abstain only when nothing was retrieved. The default "
        "comes from the curve in docs/benchmarks.md (MiniLM); models listed in "
        "RAGMESH_GATEWAY_ABSTAIN_BELOW_BY_MODEL use their own.",
    )
    abstain_below_by_model: dict[str, float] = Field(
        default_factory=lambda: dict(DEFAULT_ABSTAIN_BELOW_BY_MODEL),
        description="The abstention threshold of knowledge bases of these embedding models, "
        'as JSON ({"model name": threshold}, the name a knowledge base records): each model '
        "has its own scale of cosine similarity. Other models use RAGMESH_GATEWAY_ABSTAIN_BELOW. "
        "The multilingual model's default comes from the rule and the set of the MiniLM one "
        "(docs/generation.md).",
    )
    abstention_messages: dict[str, str] = Field(
        default_factory=lambda: dict(DEFAULT_ABSTENTION_MESSAGES),
        description='The answer when Ask abstains, per question language, as JSON ({"en": '
        '"...", "zh": "..."}); "en" is the fallback.',
    )

    @model_validator(mode="after")
    def _check(self) -> AnswerSettings:
        if "en" not in self.abstention_messages:
            raise ValueError('abstention_messages needs an "en" entry (the fallback)')
        return self

    def abstain_threshold(self, model: str) -> float:
        """The abstention threshold of a knowledge base embedded with `model`."""
        return self.abstain_below_by_model.get(model, self.abstain_below)
