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
    "Rewrite the last question so that it names what it is about. Reply with one question only."
)
#: One worked example per language, as a chat exchange: SmolLM2-135M follows an
#: example it has "answered" itself far better than instructions (measured on the
#: exchanges of tests/e2e/test_conversations.py: with instructions alone it copied
#: the assistant's turn or answered in English; with the example it writes "How
#: tall is the Eiffel Tower?").
EXAMPLES = {
    "en": (
        "Conversation:\nUser: Who wrote Hamlet?\nAssistant: William Shakespeare wrote "
        "Hamlet.\nQuestion: When did he die?",
        "When did William Shakespeare die?",
    ),
    "zh": (
        "对话：\nUser: 长城在哪里？\nAssistant: 长城位于中国北方。\n问题：它有多长？",
        "长城有多长？",
    ),
}
HEADINGS = {"en": ("Conversation:", "Question: "), "zh": ("对话：", "问题：")}


def _label(role: str) -> str:
    return "User" if role == USER else "Assistant"


def rewrite_messages(
    question: str, history: Sequence[ChatTurn], language: str = "en"
) -> list[ChatMessage]:
    """The chat messages asking for `question` as a standalone query: the
    instruction, the example exchange, then the conversation and the question."""
    lang = language if language in EXAMPLES else "en"
    lines = [f"{_label(t.role)}: {neutralise(' '.join(t.content.split()))}" for t in history]
    follow_up = neutralise(" ".join(question.split()))
    conversation, asked = HEADINGS[lang]
    shot_user, shot_answer = EXAMPLES[lang]
    return [
        ChatMessage("system", SYSTEM),
        ChatMessage("user", shot_user),
        ChatMessage("assistant", shot_answer),
        ChatMessage("user", "\n".join([conversation, *lines, f"{asked}{follow_up}"])),
    ]


def first_line(text: str) -> str:
    """The model's query: its first non-empty line, trimmed of quotes and labels."""
    for raw in text.splitlines():
        line = raw.strip().strip("\"'“”「」").strip()
        for label in ("Rewritten question:", "Question:", "Query:", "问题：", "问题:"):
            if line.lower().startswith(label.lower()):
                line = line[len(label) :].strip()
        if line:
            return line
    return ""
