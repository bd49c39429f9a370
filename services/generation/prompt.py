"""The prompt: instruction + numbered, delimited passages + question, from a template file.

Passages are presented as data between `<passage n="…">` and `</passage>` lines. The
passage text (and the question) cannot break out of that frame: any sequence that reads
as a passage tag (`<passage`, `</passage`, `< / PASSAGE`, full-width or angle-quote
brackets) has its bracket replaced by `&lt;`, so the only tags in the prompt are the
ones written here, one opening and one closing per passage. Chat-template control
tokens (`<|im_end|>`, `<|eot_id|>`, `[INST]`, ...) are defused the same way, since
llama.cpp parses them even inside message content.
"""

from __future__ import annotations

import re
import string
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from services.generation.history import ChatTurn
from services.generation.types import ChatMessage, Passage

_SECTION = re.compile(r"^\[(system|user)\]\s*$", re.MULTILINE)
_PLACEHOLDERS = {"passages", "question"}
# A bracket (ASCII, full-width, small, angle or single angle quote), optional spaces and
# slash, then the tag name: what a model could read as the frame's own delimiter.
_TAG_LIKE = re.compile(r"[<＜﹤〈‹](\s*/?\s*passage)", re.IGNORECASE)
PASSAGE_SEPARATOR = "\n\n"


class TemplateError(ValueError):
    """The template file is unusable (raised at start-up, not per request)."""


# Chat-template control tokens a server would parse inside message content (llama.cpp
# tokenizes the rendered template with special tokens enabled): ChatML/Llama 3/Phi
# `<|...|>`, `<s>`/`</s>`, Gemma's `<start_of_turn>`, Llama 2/Mistral `[INST]`.
_CONTROL_LIKE = re.compile(r"<(?=\||/?s>|(?:start|end)_of_turn>)|\[(?=/?INST\])", re.IGNORECASE)


def _defuse_control(match: re.Match[str]) -> str:
    return "&lt;" if match.group(0) == "<" else "&#91;"


def neutralise(text: str) -> str:
    """`text` with every passage-tag and chat-control-token look-alike defused (the
    opening bracket becomes `&lt;` or `&#91;`): it can neither close its passage nor
    end the chat message it sits in."""
    return _CONTROL_LIKE.sub(_defuse_control, _TAG_LIKE.sub(r"&lt;\1", text))


def _attribute(value: str) -> str:
    """A value safe inside a double-quoted attribute on one line."""
    value = " ".join(value.split())
    return (
        value.replace("&", "&amp;").replace('"', "&quot;").replace("<", "&lt;").replace(">", "&gt;")
    )


def format_passage(number: int, passage: Passage) -> str:
    """One passage as the model sees it: an opening tag line, the text, a closing tag line."""
    attrs = f'n="{number}"'
    if passage.title:
        attrs += f' title="{_attribute(passage.title)}"'
    if passage.source:
        attrs += f' source="{_attribute(passage.source)}"'
    body = neutralise(passage.text.strip())
    return f"<passage {attrs}>\n{body}\n</passage>"


def with_history(messages: Sequence[ChatMessage], turns: Sequence[ChatTurn]) -> list[ChatMessage]:
    """`messages` (system, then the user message with the passages and the question)
    with the conversation's earlier turns between them, as the chat messages they
    were: the model reads the follow-up question where the conversation left off.
    Turns are defused like passages (a turn cannot end its message or open a
    passage frame)."""
    history = [ChatMessage(t.role, neutralise(t.content)) for t in turns]
    return [*messages[:-1], *history, messages[-1]]


@dataclass(frozen=True)
class PromptTemplate:
    system: string.Template
    user: string.Template
    path: Path | None = None

    @classmethod
    def parse(cls, text: str, path: Path | None = None) -> PromptTemplate:
        where = f" in {path}" if path else ""
        parts = _SECTION.split(text)
        # parts = [preamble, name, body, name, body, ...]
        preamble, sections = parts[0], dict(zip(parts[1::2], parts[2::2], strict=True))
        if any(
            line.strip() and not line.lstrip().startswith("#") for line in preamble.splitlines()
        ):
            raise TemplateError(f"text before the first [system]/[user] section{where}")
        if set(sections) != {"system", "user"} or len(parts) != 5:
            raise TemplateError(f"the template needs one [system] and one [user] section{where}")
        templates = {name: string.Template(body.strip("\n")) for name, body in sections.items()}
        counts = dict.fromkeys(_PLACEHOLDERS, 0)
        for name, template in templates.items():
            if not template.is_valid():
                raise TemplateError(f"invalid $-placeholder in the [{name}] section{where}")
            for match in template.pattern.finditer(template.template):
                ident = match.group("named") or match.group("braced")
                if ident is None:  # "$$", an escaped dollar sign
                    continue
                if ident not in _PLACEHOLDERS:
                    raise TemplateError(
                        f"unknown placeholder ${ident} in the [{name}] section{where} "
                        f"(known: $passages, $question; write $$ for a dollar sign)"
                    )
                counts[ident] += 1
        for ident, count in counts.items():
            if count != 1:
                raise TemplateError(f"${ident} must appear exactly once{where} (found {count})")
        return cls(templates["system"], templates["user"], path)

    @classmethod
    def load(cls, path: Path) -> PromptTemplate:
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise TemplateError(f"cannot read the prompt template {path}: {exc}") from exc
        return cls.parse(text, path)

    def render(self, question: str, passage_blocks: Sequence[str]) -> list[ChatMessage]:
        """The chat messages for `question` and already formatted passage blocks."""
        values = {
            "passages": PASSAGE_SEPARATOR.join(passage_blocks),
            "question": neutralise(question.strip()),
        }
        return [
            ChatMessage("system", self.system.substitute(values)),
            ChatMessage("user", self.user.substitute(values)),
        ]

    def build(self, question: str, passages: Sequence[Passage]) -> list[ChatMessage]:
        """Messages with `passages` numbered from 1 in the given order."""
        return self.render(question, [format_passage(i, p) for i, p in enumerate(passages, 1)])
