"""A conversation's earlier turns (Ask's history): the checks every caller's turns
pass, and the choice of the turns that fit a token budget.

Shared by the gateway (which checks the public API's history with its own limits)
and the generation service (which checks what reaches it again: it is an API too).
No protobuf here: roles are the strings "user" and "assistant".

Fitting never cuts a turn: the newest turns are kept whole while they fit, and
the first that does not fit ends the choice, so a conversation only ever loses
its beginning (a kept turn is never answered by a dropped one's successor).
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from services.common.errors import InvalidArgument

USER, ASSISTANT = "user", "assistant"
ROLES = (USER, ASSISTANT)
#: tokens a turn costs beyond its content: the chat template's role markers
TURN_OVERHEAD_TOKENS = 4


@dataclass(frozen=True)
class ChatTurn:
    role: str  # "user" or "assistant"
    content: str


@dataclass(frozen=True)
class HistoryLimits:
    max_turns: int
    max_turn_chars: int
    max_total_chars: int


def check_history(turns: Sequence[ChatTurn], limits: HistoryLimits) -> tuple[ChatTurn, ...]:
    """The turns, contents stripped; INVALID_ARGUMENT naming the first bad one.

    Roles must be user or assistant (a caller's "system" turn would be an
    instruction to the model), and every turn must say something."""
    if len(turns) > limits.max_turns:
        raise InvalidArgument(
            f"history has {len(turns)} turns; the limit is {limits.max_turns}",
            reason="HISTORY_TOO_LONG",
            metadata={"field": "history", "limit": limits.max_turns},
        )
    total = 0
    out: list[ChatTurn] = []
    for i, turn in enumerate(turns):
        where = f"history[{i}]"
        if turn.role not in ROLES:
            raise InvalidArgument(
                f"{where}.role must be USER or ASSISTANT",
                reason="INVALID_HISTORY_ROLE",
                metadata={"field": f"{where}.role"},
            )
        content = turn.content.strip()
        if not content:
            raise InvalidArgument(
                f"{where}.content is empty",
                reason="EMPTY_HISTORY_TURN",
                metadata={"field": f"{where}.content"},
            )
        if len(content) > limits.max_turn_chars:
            raise InvalidArgument(
                f"{where}.content has {len(content)} characters; the limit is "
                f"{limits.max_turn_chars}",
                reason="HISTORY_TURN_TOO_LONG",
                metadata={"field": f"{where}.content", "limit": limits.max_turn_chars},
            )
        total += len(content)
        if total > limits.max_total_chars:
            raise InvalidArgument(
                f"history has more than {limits.max_total_chars} characters in all",
                reason="HISTORY_TOO_LARGE",
                metadata={"field": "history", "limit": limits.max_total_chars},
            )
        out.append(ChatTurn(turn.role, content))
    return tuple(out)


def byte_bound(text: str) -> int:
    """Tokens `text` takes at most with a byte-level tokenizer (+1 for a seam)."""
    return len(text.encode("utf-8")) + 1


async def fit_history(
    turns: Sequence[ChatTurn],
    budget_tokens: int,
    count: Callable[[Sequence[str]], Awaitable[list[int]]] | None = None,
) -> tuple[tuple[ChatTurn, ...], int]:
    """The newest turns that fit `budget_tokens` whole, oldest first, and the
    tokens they take (each turn's content plus TURN_OVERHEAD_TOKENS).

    Byte bounds decide when they suffice (no tokenizer round trip); otherwise
    `count` (the LLM server's tokenizer) counts each turn, when given."""
    if not turns or budget_tokens <= 0:
        return (), 0
    sizes = [byte_bound(t.content) for t in turns]
    if sum(sizes) + TURN_OVERHEAD_TOKENS * len(turns) > budget_tokens and count is not None:
        sizes = list(await count([t.content for t in turns]))
    kept = 0
    used = 0
    for size in reversed(sizes):
        cost = size + TURN_OVERHEAD_TOKENS
        if used + cost > budget_tokens:
            break
        used += cost
        kept += 1
    return tuple(turns[len(turns) - kept :]), used


def history_budget(prompt_budget_tokens: int, share: float) -> int:
    """What the history may take of the prompt's tokens: `share` of them at most,
    so the passages always keep the rest."""
    return max(0, math.floor(prompt_budget_tokens * share))
