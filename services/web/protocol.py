"""The OpenAI chat-completions protocol as ragmesh speaks it (no web framework here).

- `model` names the knowledge base: `ragmesh/<kb>` (or the bare id).
- `messages`: the last must be the user's question; earlier user and assistant
  turns are the conversation's history, sent with the question (Ask's `history`:
  the gateway searches a standalone query written from it, reported as
  `ragmesh.search_query`). System and tool messages, and turns without text (an
  assistant's tool calls), are left out: the gateway writes its own grounded prompt.
- `max_tokens` (or `max_completion_tokens`) and `temperature` pass through;
  `n` must be 1; other OpenAI fields are accepted and ignored.
- `ragmesh` (an extension, optional): `top_k`, `mode`, `filters`, `answer_mode`, `rerank`.

Answers carry their citations as `[n]` markers in the text (the model writes
them; the generation service checks them) and in the `ragmesh` extension field of
the response (the last chunk when streaming), each citation the gateway's common
Citation message as JSON.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from services.common.errors import InvalidArgument

#: The ranges of the protobuf fields numbers go into: a field's bounds, so that a value
#: out of range fails validation naming it (protobuf would refuse it with a bare
#: "Value out of range").
INT32_MAX = 2**31 - 1
INT64_MAX = 2**63 - 1

Role = Literal["system", "developer", "user", "assistant", "tool", "function"]


class ContentPart(BaseModel):
    model_config = ConfigDict(extra="allow")

    type: str
    text: str | None = None


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow")

    role: Role
    content: str | list[ContentPart] | None = None
    name: str | None = None


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="allow")

    include_usage: bool = False


class FilterSpec(BaseModel):
    """One metadata condition: `{"field": "language", "op": "eq", "value": "en"}`."""

    field: str = Field(
        description="document_id, chunk_index, source, language, media_type, "
        "title, or metadata.<key>"
    )
    op: str = Field("eq", description="eq, ne, in, lt, le, gt, ge (or ==, !=, <, <=, >, >=)")
    value: str | float | bool | list[str | float | bool]


class HistoryTurn(BaseModel):
    """One earlier turn of a conversation (MCP `ask`'s history)."""

    role: Literal["user", "assistant"]
    content: str


class RetrievalOptions(BaseModel):
    """ragmesh's own knobs, in the `ragmesh` field of a chat request."""

    model_config = ConfigDict(extra="forbid")

    top_k: int = Field(
        0, ge=0, le=INT32_MAX, description="Passages for the prompt (0: the server default)."
    )
    mode: str | None = Field(None, description="dense, sparse or hybrid.")
    filters: list[FilterSpec] = Field(default_factory=list)
    answer_mode: str | None = Field(
        None,
        description="auto, verbatim or generative (default: the knowledge base's).",
    )
    rerank: bool | None = Field(
        None, description="Rerank the passages (default: the knowledge base's setting)."
    )


class ChatCompletionRequest(BaseModel):
    model_config = ConfigDict(extra="allow")

    model: str = Field(description="`ragmesh/<knowledge base id>`.")
    messages: list[ChatMessage] = Field(min_length=1)
    stream: bool = False
    stream_options: StreamOptions | None = None
    # Bounded as Ask's field is, so that a value past it fails validation naming its
    # field; the gateway checks the answer's own limit (RAGMESH_GATEWAY_MAX_ANSWER_TOKENS).
    max_tokens: int | None = Field(None, ge=1, le=INT32_MAX)
    max_completion_tokens: int | None = Field(None, ge=1, le=INT32_MAX)
    temperature: float | None = Field(None, ge=0, le=2)
    n: int | None = Field(None, ge=1)
    ragmesh: RetrievalOptions | None = None


@dataclass(frozen=True)
class Turn:
    role: str  # "user" or "assistant"
    content: str


@dataclass(frozen=True)
class Conversation:
    question: str
    history: tuple[Turn, ...]


def message_text(message: ChatMessage, index: int) -> str:
    if message.content is None:
        return ""
    if isinstance(message.content, str):
        return message.content
    texts = []
    for part in message.content:
        if part.type != "text":
            raise InvalidArgument(
                f"messages[{index}] has a {part.type!r} part; only text is supported",
                reason="UNSUPPORTED_CONTENT",
                metadata={"param": f"messages[{index}].content"},
            )
        texts.append(part.text or "")
    return "".join(texts)


def conversation(req: ChatCompletionRequest) -> Conversation:
    """The question (the last message, the user's) and the turns before it."""
    last = req.messages[-1]
    if last.role != "user":
        raise InvalidArgument(
            f"the last message must be the user's question, not {last.role!r}",
            reason="LAST_MESSAGE_NOT_USER",
            metadata={"param": "messages"},
        )
    if req.n not in (None, 1):
        raise InvalidArgument(
            "n must be 1: ragmesh gives one grounded answer",
            reason="UNSUPPORTED_N",
            metadata={"param": "n"},
        )
    turns = (
        Turn(m.role, message_text(m, i))
        for i, m in enumerate(req.messages[:-1])
        if m.role in ("user", "assistant")
    )
    history = tuple(t for t in turns if t.content.strip())
    return Conversation(message_text(last, len(req.messages) - 1), history)


def knowledge_base_of(model: str, prefix: str) -> str:
    """`ragmesh/docs` → `docs` (the bare id is accepted too); the gateway checks the id."""
    kb = model[len(prefix) :] if prefix and model.startswith(prefix) else model
    if not kb:
        raise InvalidArgument(
            f"model {model!r} names no knowledge base; use {prefix}<knowledge base id>",
            reason="INVALID_MODEL",
            metadata={"param": "model"},
        )
    return kb


def model_name(kb: str, prefix: str) -> str:
    return f"{prefix}{kb}"


def finish_reason(gateway_reason: str) -> str:
    """The gateway's finish reason (STOP, LENGTH, ABSTAINED, ...) in OpenAI's words."""
    return "length" if gateway_reason.upper() == "LENGTH" else "stop"


def filter_tuples(filters: list[FilterSpec]) -> list[tuple[str, str, Any]]:
    return [(f.field, f.op, f.value) for f in filters]
