"""Plain typed objects the generation logic takes and returns (no protobuf, no grpc)."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from services.generation.history import ChatTurn


@dataclass(frozen=True)
class Passage:
    """A retrieved passage offered to the model as context."""

    id: str
    text: str
    score: float
    title: str = ""
    source: str = ""


@dataclass(frozen=True)
class ChatMessage:
    role: str  # "system", "user" or "assistant"
    content: str


@dataclass(frozen=True)
class AnswerRequest:
    question: str
    passages: tuple[Passage, ...]
    max_tokens: int = 0  # 0: the configured default
    temperature: float | None = None  # None: the configured default
    min_relevance: float | None = None  # None: the configured threshold
    tenant: str = ""  # whose queue line the request waits in (the gateway says)
    history: tuple[ChatTurn, ...] = ()  # the conversation before the question, oldest first


@dataclass(frozen=True)
class RewriteRequest:
    """A follow-up question to turn into a standalone search query."""

    question: str
    history: tuple[ChatTurn, ...]
    max_tokens: int = 0  # 0: the configured default
    tenant: str = ""


@dataclass(frozen=True)
class RewriteResult:
    query: str  # the model's first line, trimmed
    usage: Usage
    llm_ms: float
    turns_used: int


class FinishReason(Enum):
    UNSPECIFIED = "unspecified"
    STOP = "stop"
    LENGTH = "length"
    ABSTAINED = "abstained"
    CONTENT_FILTER = "content_filter"


@dataclass(frozen=True)
class Citation:
    number: int  # the [n] written in the answer
    passage_id: str


@dataclass(frozen=True)
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


@dataclass(frozen=True)
class Timings:
    first_token_ms: float = 0.0
    total_ms: float = 0.0
    llm_ms: float = 0.0


@dataclass(frozen=True)
class AnswerDelta:
    text: str


@dataclass(frozen=True)
class Queued:
    """The answer waits for the LLM: `position` requests are served first
    (1: next), in about `estimated_wait_s`."""

    position: int
    estimated_wait_s: float


@dataclass(frozen=True)
class FinalAnswer:
    answer: str
    citations: tuple[Citation, ...]
    invalid_citation_numbers: tuple[int, ...]
    grounded: bool
    abstained: bool
    finish_reason: FinishReason
    usage: Usage
    timings: Timings
    used_passage_ids: tuple[str, ...]
    dropped_passage_ids: tuple[str, ...]
    model: str
    language: str = "en"  # detected language of the question
