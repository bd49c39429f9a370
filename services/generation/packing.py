"""Packing passages into the LLM's context window.

The prompt must leave room for the answer: passages get what the window holds after
`max_tokens`, the chat-template overhead, the instruction and the question. Passages are
never cut: when they do not all fit, the lowest-scored are dropped whole, one at a time,
until the rest fits, and the dropped ids are reported.

When the prompt's UTF-8 byte count (an upper bound of its tokens, see below) fits, nothing
is counted at all. Otherwise the whole prompt is counted (one round trip when it fits);
only when it does not are the instruction+question and each passage counted apart.

Tokens are counted by a `TokenCounter`:
- `ServerTokenCounter` asks the LLM server itself (exact for that model's tokenizer):
  llama-cpp-python's `/extras/tokenize/count`, or `/tokenize` (llama.cpp server, vLLM).
  Each text is counted on its own; a concatenation can differ from the sum of its parts by
  a token at each seam, which `BLOCK_MARGIN_TOKENS` per passage covers.
- `ByteEstimateCounter` needs no server: UTF-8 bytes / bytes-per-token. With 1 byte per
  token it is an upper bound for byte-level BPE tokenizers (each token covers ≥ 1 byte),
  so it never overflows the window but packs fewer passages than would fit.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import httpx

from services.common.errors import Internal, InvalidArgument, Unavailable
from services.generation.history import ChatTurn, fit_history, history_budget
from services.generation.prompt import (
    PASSAGE_SEPARATOR,
    PromptTemplate,
    format_passage,
    with_history,
)
from services.generation.types import ChatMessage, Passage

log = logging.getLogger("ragmesh.generation.packing")

#: per passage: seams between blocks and a passage number that may gain a digit
BLOCK_MARGIN_TOKENS = 2


class TokenCounter(Protocol):
    @property
    def description(self) -> str:
        """How the counts are obtained, for logs and docs."""

    async def count(self, texts: Sequence[str]) -> list[int]:
        """Token count of each text."""


def byte_upper_bound(text: str) -> int:
    """Tokens `text` can take at most with a byte-level tokenizer (+1 for a BOS token)."""
    return len(text.encode("utf-8")) + 1


def typical_estimate(text: str) -> int:
    """A usage figure for text that was not counted: ~4 UTF-8 bytes a token, typical of
    BPE tokenizers on English (an estimate, not a bound)."""
    return math.ceil(len(text.encode("utf-8")) / 4)


class ByteEstimateCounter:
    """UTF-8 bytes / bytes_per_token, rounded up (+1 for a BOS token)."""

    def __init__(self, bytes_per_token: float = 1.0) -> None:
        self.bytes_per_token = bytes_per_token
        self.description = f"estimate (UTF-8 bytes / {bytes_per_token:g})"

    async def count(self, texts: Sequence[str]) -> list[int]:
        return [math.ceil(len(t.encode("utf-8")) / self.bytes_per_token) + 1 for t in texts]


class NoTokenizeEndpoint(Exception):
    """The LLM server has none of the tokenize endpoints we know."""


class ServerTokenCounter:
    """Counts with the LLM server's own tokenizer; caches counts of recent texts."""

    # (path relative to the server root, request body, how to read the count)
    _ENDPOINTS: tuple[tuple[str, str], ...] = (
        ("/extras/tokenize/count", "llama-cpp-python"),
        ("/tokenize", "llama.cpp/vLLM"),
    )

    def __init__(
        self,
        base_url: str,
        *,
        model: str,
        api_key: str,
        timeout_s: float = 10.0,
        cache_size: int = 4096,
        client: httpx.AsyncClient | None = None,
    ) -> None:
        root = base_url.rstrip("/")
        root = root.removesuffix("/v1")
        self.root = root
        self.model = model
        self.timeout_s = timeout_s
        self._client = client or httpx.AsyncClient(
            headers={"Authorization": f"Bearer {api_key}"}, timeout=timeout_s
        )
        self._endpoint: str | None = None
        self._cache: OrderedDict[str, int] = OrderedDict()
        self._cache_size = cache_size
        self.description = "LLM server tokenizer (endpoint not probed yet)"

    async def close(self) -> None:
        await self._client.aclose()

    async def _post(self, path: str, text: str) -> httpx.Response:
        body = {
            "input": text,
            "content": text,
            "prompt": text,
            "model": self.model,
            "add_special": False,
        }
        try:
            return await self._client.post(self.root + path, json=body)
        except httpx.TimeoutException as exc:
            raise Unavailable(
                f"LLM server {self.root} did not answer the tokenize request in "
                f"{self.timeout_s:g}s",
                reason="LLM_UNAVAILABLE",
            ) from exc
        except httpx.TransportError as exc:
            raise Unavailable(
                f"LLM server {self.root} is unreachable: {exc}", reason="LLM_UNAVAILABLE"
            ) from exc

    @staticmethod
    def _parse(path: str, resp: httpx.Response) -> int:
        try:
            data: Any = resp.json()
            if "count" in data:
                return int(data["count"])
            return len(data["tokens"])
        except (ValueError, KeyError, TypeError) as exc:
            raise Internal(
                f"LLM server's {path} answered something that is not a token count: "
                f"{resp.text[:200]!r}",
                reason="LLM_MALFORMED_RESPONSE",
            ) from exc

    async def _detect(self) -> str:
        for path, kind in self._ENDPOINTS:
            resp = await self._post(path, "probe")
            if resp.status_code == 200:
                self._parse(path, resp)
                self._endpoint = path
                self.description = f"LLM server tokenizer ({kind} {path})"
                log.info("counting tokens with %s%s", self.root, path)
                return path
        raise NoTokenizeEndpoint(f"{self.root} has no tokenize endpoint")

    async def _count_one(self, path: str, text: str) -> int:
        cached = self._cache.get(text)
        if cached is not None:
            self._cache.move_to_end(text)
            return cached
        resp = await self._post(path, text)
        if resp.status_code != 200:
            raise Unavailable(
                f"LLM server's {path} answered HTTP {resp.status_code}: {resp.text[:200]}",
                reason="LLM_UNAVAILABLE",
            )
        count = self._parse(path, resp)
        self._cache[text] = count
        if len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)
        return count

    async def count(self, texts: Sequence[str]) -> list[int]:
        path = self._endpoint or await self._detect()
        return list(await asyncio.gather(*(self._count_one(path, t) for t in texts)))


class AutoTokenCounter:
    """The server's tokenizer when it has a tokenize endpoint, else the byte estimate."""

    def __init__(self, server: ServerTokenCounter, fallback: ByteEstimateCounter) -> None:
        self.server = server
        self.fallback = fallback
        self._use_fallback = False

    @property
    def description(self) -> str:
        return self.fallback.description if self._use_fallback else self.server.description

    async def count(self, texts: Sequence[str]) -> list[int]:
        if not self._use_fallback:
            try:
                return await self.server.count(texts)
            except NoTokenizeEndpoint:
                log.warning(
                    "the LLM server has no tokenize endpoint; using %s", self.fallback.description
                )
                self._use_fallback = True
        return await self.fallback.count(texts)


@dataclass(frozen=True)
class PackedPrompt:
    messages: list[ChatMessage]
    #: passages in the prompt, in prompt order ([1] is the first)
    used: tuple[Passage, ...]
    #: ids of passages that did not fit the window, lowest-scored first
    dropped: tuple[str, ...]
    #: tokens of the messages' content (without the chat template)
    prompt_tokens: int
    #: tokens available to the messages' content
    budget_tokens: int
    #: False when the prompt fitted by its byte bound and was not counted:
    #: `prompt_tokens` is then an estimate (`typical_estimate`)
    counted: bool = True
    #: history turns in the prompt (the newest), and those left out (the oldest)
    history_used: int = 0
    history_dropped: int = 0


def _messages_text(messages: Sequence[ChatMessage]) -> str:
    return "\n".join(m.content for m in messages)


async def pack(
    template: PromptTemplate,
    question: str,
    passages: Sequence[Passage],
    *,
    budget_tokens: int,
    counter: TokenCounter,
    history: Sequence[ChatTurn] = (),
    history_share: float = 0.25,
) -> PackedPrompt:
    """Fit the conversation's `history` and `passages` into `budget_tokens`.

    The history goes first, as chat messages between the system message and the
    one with the passages, but it may take at most `history_share` of the budget
    (the newest turns that fit whole; the oldest are dropped first, never cut):
    a long conversation must not squeeze the passages out. The passages get the
    rest (`pack_passages`).
    """
    kept, history_tokens = await fit_history(
        history, history_budget(budget_tokens, history_share), counter.count
    )
    packed = await pack_passages(
        template, question, passages, budget_tokens=budget_tokens - history_tokens, counter=counter
    )
    if not history:
        return packed
    return PackedPrompt(
        messages=with_history(packed.messages, kept),
        used=packed.used,
        dropped=packed.dropped,
        prompt_tokens=packed.prompt_tokens + history_tokens,
        budget_tokens=budget_tokens,
        counted=packed.counted,
        history_used=len(kept),
        history_dropped=len(history) - len(kept),
    )


async def pack_passages(
    template: PromptTemplate,
    question: str,
    passages: Sequence[Passage],
    *,
    budget_tokens: int,
    counter: TokenCounter,
) -> PackedPrompt:
    """Fit `passages` (already filtered for relevance) into `budget_tokens`.

    Passages keep their given order in the prompt; the lowest-scored are dropped first.
    Raises InvalidArgument when the question alone, or the best passage with it, does
    not fit: cutting either silently would change what is being asked or cited.
    """
    whole = template.build(question, passages)
    whole_text = _messages_text(whole)
    # When even the byte upper bound fits there is nothing to decide: skip the round trip
    # to the tokenizer (on llama-cpp-python it is a few milliseconds on the way to the
    # first token, and it queues behind any answer being generated).
    if byte_upper_bound(whole_text) <= budget_tokens:
        return PackedPrompt(
            whole, tuple(passages), (), typical_estimate(whole_text), budget_tokens, counted=False
        )
    # One count of the whole prompt settles the next most common case (it fits by the
    # real count); per-part counts are only needed to choose what to drop.
    (whole_tokens,) = await counter.count([whole_text])
    if whole_tokens <= budget_tokens:
        return PackedPrompt(whole, tuple(passages), (), whole_tokens, budget_tokens)

    blocks = [format_passage(i, p) for i, p in enumerate(passages, 1)]
    fixed_text = _messages_text(template.render(question, []))
    counts = await counter.count([fixed_text, *blocks])
    fixed, block_counts = counts[0], counts[1:]
    separator = len(PASSAGE_SEPARATOR)  # at most one token per separator character
    if fixed > budget_tokens:
        raise InvalidArgument(
            f"the question and instruction take {fixed} tokens, more than the "
            f"{budget_tokens} the context window leaves for the prompt",
            reason="QUESTION_TOO_LONG_FOR_CONTEXT",
            metadata={"prompt_tokens": fixed, "budget_tokens": budget_tokens},
        )
    cost = [c + BLOCK_MARGIN_TOKENS + separator for c in block_counts]
    kept = set(range(len(passages)))
    # lowest score first; among equal scores the later passage goes first
    drop_order = sorted(range(len(passages)), key=lambda i: (passages[i].score, -i))
    total = fixed + sum(cost)
    dropped: list[str] = []
    for i in drop_order:
        if total <= budget_tokens:
            break
        kept.discard(i)
        total -= cost[i]
        dropped.append(passages[i].id)
    if passages and not kept:
        best = drop_order[-1]
        raise InvalidArgument(
            f"passage {passages[best].id!r} takes {block_counts[best]} tokens; with the "
            f"question and instruction ({fixed}) it exceeds the {budget_tokens} tokens the "
            f"context window leaves for the prompt",
            reason="PASSAGE_EXCEEDS_CONTEXT_WINDOW",
            metadata={
                "passage_id": passages[best].id,
                "passage_tokens": block_counts[best],
                "budget_tokens": budget_tokens,
            },
        )
    used = tuple(p for i, p in enumerate(passages) if i in kept)
    return PackedPrompt(
        messages=template.build(question, used),
        used=used,
        dropped=tuple(dropped),
        # the sum of the parts, margins included: an upper estimate of the content
        prompt_tokens=total,
        budget_tokens=budget_tokens,
    )
