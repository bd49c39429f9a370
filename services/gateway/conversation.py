"""Multi-turn Ask: the conversation's checks, and the standalone search query a
follow-up question is searched with.

A follow-up ("How tall is it?") finds nothing on its own; the conversation names
what "it" is. The generation service's RewriteQuery asks the LLM for the question
with its references resolved; the gateway checks the model's line (it is the
search, so a bad one costs the whole answer) and, when the LLM is down, busy,
too slow or writes something unusable, searches a deterministic fallback instead:
the last user turns and the question, joined. AskFinal reports which it was.

Why the gateway checks rather than the generation service: it knows the query
length limit, and the fallback must not depend on the service that failed.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass

from ragmesh.gateway.v1 import gateway_pb2 as pb
from ragmesh.generation.v1 import generation_pb2
from services.common import metrics
from services.common.deadlines import Deadline
from services.common.errors import (
    DeadlineExceeded,
    ResourceExhausted,
    ServiceError,
    Unavailable,
)
from services.gateway.clients import Downstream
from services.gateway.config import GatewaySettings
from services.generation.history import USER, ChatTurn, HistoryLimits, check_history
from services.generation.history_proto import history_to_proto

log = logging.getLogger("ragmesh.gateway.conversation")

QUESTION = pb.SEARCH_QUERY_SOURCE_QUESTION
LLM_REWRITE = pb.SEARCH_QUERY_SOURCE_LLM_REWRITE
FALLBACK = pb.SEARCH_QUERY_SOURCE_FALLBACK

#: a rewritten query is a question, not a paragraph
MAX_REWRITE_CHARS = 500
#: earlier user turns the fallback query joins to the question
FALLBACK_USER_TURNS = 2
#: share of the rewrite's words that must occur in the conversation or question
MIN_GROUNDED_SHARE = 0.6
#: words of the rewrite prompt a model may copy instead of answering
#: (services/generation/rewrite.py); refused unless the conversation uses them too
INSTRUCTION_MARKERS = (
    "rewrite",
    "names what it is about",
    "reply with",
    "one question only",
    "conversation:",
    "question:",
    "对话：",
    "问题：",
)

_CJK = "\u2e80-\u9fff\uf900-\ufaff"
_WORDS = re.compile(rf"[{_CJK}]|[^\W_{_CJK}]+")


@dataclass(frozen=True)
class SearchQuery:
    """What Ask searches with, and where it came from (AskFinal fields 13-15)."""

    text: str
    source: int = QUESTION
    #: why the fallback wrote it: UNAVAILABLE, TIMEOUT, QUEUE_FULL, REJECTED or ERROR
    fallback: str = ""

    def stamp(self, final: pb.AskFinal) -> None:
        final.search_query = self.text
        final.search_query_source = self.source  # type: ignore[assignment]
        final.search_query_fallback = self.fallback


def words(text: str) -> list[str]:
    """Latin words lowercased and CJK characters one by one (Chinese has no spaces)."""
    return _WORDS.findall(text.lower())


def check_rewrite(query: str, question: str, history: Sequence[ChatTurn], max_chars: int) -> str:
    """Why the model's query is unusable ("" when it is usable): empty, several
    lines, too long, a copy of the instructions, words the conversation never
    used (a model making things up searches for them), or nothing beyond the
    question's own words."""
    if not query.strip():
        return "empty"
    if "\n" in query.strip():
        return "several lines"
    if len(query) > min(max_chars, MAX_REWRITE_CHARS):
        return f"longer than {min(max_chars, MAX_REWRITE_CHARS)} characters"
    said = " ".join([question, *(t.content for t in history)]).lower()
    lowered = query.lower()
    for marker in INSTRUCTION_MARKERS:
        if marker in lowered and marker not in said:
            return f"copies the instructions ({marker!r})"
    found = set(words(query))
    if not found:
        return "no words"
    known = set(words(said))
    grounded = len(found & known) / len(found)
    if grounded < MIN_GROUNDED_SHARE:
        return f"only {grounded:.0%} of its words occur in the conversation"
    # The follow-up given back (seen with the 135M model): it names nothing the
    # search can find, and the fallback at least carries the earlier questions.
    if not found - set(words(question)):
        return "adds nothing from the conversation to the question"
    return ""


def fallback_query(question: str, history: Sequence[ChatTurn], max_chars: int) -> str:
    """The last user turns (up to FALLBACK_USER_TURNS) and the question, oldest
    first, each whole; turns that would pass `max_chars` are left out (oldest
    first). Deterministic: the same conversation always searches the same text."""
    parts = [question.strip()]
    size = len(parts[0])
    for turn in reversed(history):
        if len(parts) > FALLBACK_USER_TURNS:
            break
        if turn.role != USER:
            continue
        text = " ".join(turn.content.split())
        if size + 1 + len(text) > max_chars:
            break
        parts.insert(0, text)
        size += 1 + len(text)
    return " ".join(parts)


def fallback_reason(error: ServiceError) -> str:
    if isinstance(error, ResourceExhausted):
        return "QUEUE_FULL"
    if isinstance(error, DeadlineExceeded):
        return "TIMEOUT"
    if isinstance(error, Unavailable):
        return "UNAVAILABLE"
    return "ERROR"


class Conversation:
    def __init__(self, downstream: Downstream, settings: GatewaySettings) -> None:
        self.downstream = downstream
        self.settings = settings

    def check(self, history: Sequence[ChatTurn]) -> tuple[ChatTurn, ...]:
        s = self.settings
        return check_history(
            history,
            HistoryLimits(s.max_history_turns, s.max_history_turn_chars, s.max_history_chars),
        )

    async def search_query(
        self, tenant: str, question: str, history: Sequence[ChatTurn], deadline: Deadline
    ) -> SearchQuery:
        """The question itself without history; with it, the LLM's standalone
        query, or the fallback when the LLM cannot give a usable one in
        RAGMESH_GATEWAY_REWRITE_TIMEOUT_S."""
        if not history:
            return SearchQuery(question)
        request = generation_pb2.RewriteQueryRequest(
            question=question, history=history_to_proto(history)
        )
        try:
            response = await self.downstream.rewrite_query(
                request, tenant, deadline.remaining(self.settings.rewrite_timeout_s)
            )
        except ServiceError as error:
            reason = fallback_reason(error)
            log.info("rewrite failed (%s: %s); searching the fallback query", reason, error)
            return self._fallback(question, history, reason)
        problem = check_rewrite(
            response.query.strip(), question, history, self.settings.max_query_chars
        )
        query = " ".join(response.query.split())
        if problem:
            log.info("rewrite %r rejected (%s); searching the fallback query", query, problem)
            return self._fallback(question, history, "REJECTED")
        metrics.ASK_SEARCH_QUERIES.labels("llm_rewrite", "").inc()
        return SearchQuery(query, LLM_REWRITE)

    def _fallback(self, question: str, history: Sequence[ChatTurn], reason: str) -> SearchQuery:
        metrics.ASK_SEARCH_QUERIES.labels("fallback", reason).inc()
        text = fallback_query(question, history, self.settings.max_query_chars)
        return SearchQuery(text, FALLBACK, reason)
