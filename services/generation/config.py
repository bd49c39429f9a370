"""Settings of the generation service (RAGMESH_GENERATION_* environment variables)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_PROMPT_TEMPLATE = Path(__file__).with_name("default_prompt.txt")

DEFAULT_ABSTENTION_MESSAGES = {
    "en": "The knowledge base does not contain information to answer this question.",
    "zh": "知识库中没有可以回答这个问题的信息。",
}


class GenerationSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="RAGMESH_GENERATION_", extra="ignore")

    # --- the LLM server -----------------------------------------------------------------
    llm_base_url: str = Field(
        default="http://127.0.0.1:8081/v1",
        description="OpenAI-compatible base URL of the LLM server (llama.cpp, vLLM, OpenAI).",
    )
    llm_model: str = Field(
        default="smollm2-135m-instruct",
        description="Model name sent in every chat completion request.",
    )
    llm_api_key: str = Field(
        default="not-needed",
        description="API key sent as a Bearer token (local servers ignore it).",
    )
    llm_timeout_s: float = Field(
        default=60.0,
        gt=0,
        description="Longest a whole answer may take (counting, connecting, every token); "
        "the caller's deadline shortens it. Exceeding it is DEADLINE_EXCEEDED.",
    )
    llm_max_retries: int = Field(
        default=2,
        ge=0,
        le=10,
        description="Retries (exponential backoff, honouring Retry-After) when the LLM server "
        "answers 408/409/429/5xx or cannot be reached, before the first token only.",
    )
    llm_max_concurrency: int = Field(
        default=1,
        ge=1,
        description="LLM calls this service runs at once (1 for the bundled llama.cpp server, "
        "which answers one request at a time; a vLLM server takes many). The rest wait in "
        "a queue served round robin across tenants. With several generation replicas, each "
        "has its own: set it to the LLM's capacity divided by the replicas.",
    )
    llm_max_queued: int = Field(
        default=64,
        ge=0,
        description="Answers that may wait for an LLM slot; more are refused at once with "
        "RESOURCE_EXHAUSTED (LLM_QUEUE_FULL) and a retry delay.",
    )
    llm_max_queued_per_tenant: int = Field(
        default=16,
        ge=1,
        description="Of those, how many one tenant may have waiting (LLM_TENANT_QUEUE_FULL), "
        "so that one tenant's burst cannot fill the queue.",
    )
    llm_ready_timeout_s: float = Field(
        default=1.0,
        gt=0,
        description="Timeout of the readiness probe (GET /models). A server that accepts the "
        "connection but is too busy to answer in time counts as ready.",
    )

    # --- context packing ----------------------------------------------------------------
    context_window_tokens: int = Field(
        default=2048,
        ge=256,
        description="The LLM's context window (prompt + answer), as the server is configured "
        "(llama.cpp --n_ctx).",
    )
    prompt_overhead_tokens: int = Field(
        default=64,
        ge=0,
        description="Tokens reserved for the chat template the server wraps around the "
        "messages (role markers) and for token-boundary effects.",
    )
    token_counting: Literal["auto", "server", "estimate"] = Field(
        default="auto",
        description="How prompt tokens are counted for packing: `server` asks the LLM server's "
        "tokenize endpoint (llama-cpp-python /extras/tokenize/count, llama.cpp or vLLM "
        "/tokenize); `estimate` uses UTF-8 bytes / RAGMESH_GENERATION_ESTIMATE_BYTES_PER_TOKEN; "
        "`auto` uses the server when it has such an endpoint, else the estimate.",
    )
    estimate_bytes_per_token: float = Field(
        default=1.0,
        gt=0,
        description="Divisor of the UTF-8 byte count in the token estimate. 1.0 is an upper "
        "bound for byte-level BPE tokenizers (every token covers at least one byte); larger "
        "values pack more but may overflow the window.",
    )

    # --- generation ---------------------------------------------------------------------
    max_tokens_default: int = Field(
        default=256,
        ge=1,
        description="Answer length limit (tokens) when the request leaves it at 0.",
    )
    max_tokens_max: int = Field(
        default=1024, ge=1, description="Largest max_tokens a request may ask for."
    )
    temperature: float = Field(
        default=0.2, ge=0.0, le=2.0, description="Sampling temperature when the request sets none."
    )
    min_relevance: float = Field(
        default=0.0,
        description="Passages scoring below this are not used; with none left the service "
        "abstains without calling the LLM. Scores follow the retrieval metric (cosine, "
        "RRF, negated L2), so tune it to yours; a request may override it.",
    )
    prompt_template: Path = Field(
        default=DEFAULT_PROMPT_TEMPLATE,
        description="Prompt template file (see docs/generation.md); the default ships with "
        "the service.",
    )
    abstention_messages: dict[str, str] = Field(
        default_factory=lambda: dict(DEFAULT_ABSTENTION_MESSAGES),
        description="Answer when nothing relevant was retrieved, per question language, as "
        'JSON ({"en": "...", "zh": "..."}); "en" is the fallback.',
    )

    # --- input limits -------------------------------------------------------------------
    max_question_chars: int = Field(
        default=2000, ge=1, description="Longest question accepted (characters)."
    )
    max_passages: int = Field(
        default=50, ge=1, description="Most passages accepted in one request."
    )
    max_passage_chars: int = Field(
        default=8000, ge=1, description="Longest passage text accepted (characters)."
    )
    max_passage_field_chars: int = Field(
        default=1000, ge=1, description="Longest passage id, title or source accepted (characters)."
    )

    max_history_turns: int = Field(
        default=50, ge=0, description="Most conversation turns (history) accepted in one request."
    )
    max_history_turn_chars: int = Field(
        default=8000, ge=1, description="Longest history turn accepted (characters)."
    )
    max_history_chars: int = Field(
        default=32000, ge=1, description="Most characters of history accepted in all."
    )
    history_share: float = Field(
        default=0.25,
        ge=0.0,
        le=0.9,
        description="Largest share of the prompt's token budget the conversation's history may "
        "take in an answer's prompt (the newest turns that fit whole; the oldest are dropped "
        "first); the passages keep the rest.",
    )
    rewrite_history_tokens: int = Field(
        default=512,
        ge=0,
        description="Tokens of history (the newest turns that fit whole) a RewriteQuery prompt "
        "shows the model.",
    )

    @model_validator(mode="after")
    def _check(self) -> GenerationSettings:
        if self.max_tokens_default > self.max_tokens_max:
            raise ValueError("max_tokens_default must not exceed max_tokens_max")
        if self.max_tokens_max + self.prompt_overhead_tokens >= self.context_window_tokens:
            raise ValueError(
                "context_window_tokens must exceed max_tokens_max + prompt_overhead_tokens"
            )
        if "en" not in self.abstention_messages:
            raise ValueError('abstention_messages needs an "en" entry (the fallback)')
        return self
