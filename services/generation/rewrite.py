"""The prompt that turns a follow-up question into a standalone search query.

A follow-up ("How tall is it?") names nothing a search can find; the conversation
before it does. The model is asked for one line: the question with its references
resolved. The prompt is short and the answer a few tokens, so the call holds an
LLM slot briefly; the caller (the gateway) checks what comes back and has a
deterministic fallback when it is unusable.

The conversation is shown as data, each turn on its own line(s) after a role
label, defused like passages (services/generation/prompt.neutralise): a turn
cannot end the message or pose as an instruction block.
"""

from __future__ import annotations

from collections.abc import Sequence

from services.generation.history import USER, ChatTurn
from services.generation.prompt import neutralise
from services.generation.types import ChatMessage

#: the model's answer is a query, not an essay
DEFAULT_MAX_TOKENS = 32
MAX_TOKENS = 64

SYSTEM = (
    "You rewrite the user's last question so that it can be understood without the "
    "conversation. Replace words like it, they, this, that, he, she with the names they "
    "refer to. Keep the question's language. Reply with the rewritten question only, on "
    "one line."
)
SYSTEM_ZH = "把用户的最后一个问题改写成不需要上下文也能理解的问题：把“它”“他”“这个”等代词换成所指的名称。只回答改写后的问题，一行。"


def _label(role: str) -> str:
    return "User" if role == USER else "Assistant"


def rewrite_messages(
    question: str, history: Sequence[ChatTurn], language: str = "en"
) -> list[ChatMessage]:
    """The chat messages asking for `question` as a standalone query."""
    lines = [f"{_label(t.role)}: {neutralise(' '.join(t.content.split()))}" for t in history]
    conversation = "\n".join(lines)
    follow_up = neutralise(" ".join(question.split()))
    system = SYSTEM_ZH if language == "zh" else SYSTEM
    user = f"Conversation:\n{conversation}\n\nLast question: {follow_up}\nRewritten question:"
    return [ChatMessage("system", system), ChatMessage("user", user)]


def first_line(text: str) -> str:
    """The model's query: its first non-empty line, trimmed of quotes and labels."""
    for line in text.splitlines():
        line = line.strip().strip("\"'“”「」").strip()
        for label in ("Rewritten question:", "Question:", "Query:"):
            if line.lower().startswith(label.lower()):
                line = line[len(label) :].strip()
        if line:
            return line
    return ""
