"""Recursive splitting of a normalised document into token-bounded chunks.

Separators, strongest first: heading sections (a chunk never crosses one) →
paragraphs ("\\n\\n") → sentences (. ! ? ; followed by a space, and the CJK
。！？； which need none) → lines → clauses (, : 、) → words (spaces) →
tokens (every CJK character is one) → characters.

The document is tokenised once with offsets (`tokens.TokenCounter.offsets`).
Each chunk takes as many tokens as fit (max_tokens minus [CLS]/[SEP]) and
at most `max_chars` characters; within that window it ends at the last
separator of the strongest kind present (structural ones only past the
window's first quarter, see `find_break`). This gives the chunks a recursive
split-then-merge would, in one linear pass: no window is ever re-tokenised
except a chunk cut inside a word, whose count is then taken from the
tokenizer on its own text (and the chunk shortened if it does not fit).
"""

from __future__ import annotations

import re
from bisect import bisect_left, bisect_right
from collections.abc import Callable
from dataclasses import dataclass

from services.chunking.parsing import Document, Section
from services.chunking.tokens import TokenCounter, TokenOffsets

_CJK = r"\u2e80-\u9fff\uac00-\ud7af\uf900-\ufaff\uff00-\uffef"
_CLOSERS = r"\"'”’」』)\]》〉"
# NFKC turns ！？； into !?; but leaves 。: after CJK they need no space.
SENTENCE_END = re.compile(rf"(?:。|[.!?;])[{_CLOSERS}]*(?=\s|[{_CJK}])|。[{_CLOSERS}]*")
CLAUSE_END = re.compile(rf"、|[,:](?=\s|[{_CJK}])")
#: Structural breaks must leave a chunk at least 1/MIN_FILL_DIVISOR of its window.
MIN_FILL_DIVISOR = 4


@dataclass(frozen=True)
class ChunkSpan:
    start: int
    end: int
    token_count: int
    heading_path: tuple[str, ...]


def _last_match(pattern: re.Pattern[str], text: str, lo: int, limit: int) -> int:
    """End of the last match ending in (lo, limit], or -1.

    The search may look one character past `limit` (the lookahead), never
    further: the cost is the window's length.
    """
    best = -1
    for m in pattern.finditer(text, lo, min(limit + 1, len(text))):
        end = m.end()
        if end > limit:
            break
        if end > lo:
            best = end
    return best


def find_break(text: str, lo: int, limit: int, starts: TokenOffsets) -> int:
    """The best place in (lo, limit] to end a chunk.

    The strongest separator wins, taking its last occurrence in the window, but
    paragraph, sentence, line and clause breaks count only past the first
    quarter of the window: a heading or a short paragraph followed by a long
    one joins the long one's first part instead of making a chunk of a few
    words. Word, token and character cuts have no such floor.
    """
    floor = lo + (limit - lo) // MIN_FILL_DIVISOR
    q = text.rfind("\n\n", floor + 1, limit)
    if q > floor:
        return q
    q = _last_match(SENTENCE_END, text, floor, limit)
    if q > floor:
        return q
    q = text.rfind("\n", floor + 1, limit)
    if q > floor:
        return q
    q = _last_match(CLAUSE_END, text, floor, limit)
    if q > floor:
        return q
    q = text.rfind(" ", lo + 1, limit)
    if q > lo:
        return q
    j = bisect_right(starts.starts, limit) - 1
    if j >= 0 and starts.starts[j] > lo:
        return starts.starts[j]
    return limit


def _skip_space(text: str, pos: int, end: int) -> int:
    while pos < end and text[pos].isspace():
        pos += 1
    return pos


def _rstrip(text: str, start: int, end: int) -> int:
    while end > start and text[end - 1].isspace():
        end -= 1
    return end


def _overlap_start(
    text: str,
    offsets: TokenOffsets,
    *,
    chunk_start: int,
    chunk_end: int,
    first: int,
    after: int,
    overlap: int,
) -> int:
    """Where the next chunk starts so that it repeats up to `overlap` tokens.

    Prefers the start of a sentence, then of a word, within the last `overlap`
    tokens of the chunk; returns `chunk_end` when nothing can be repeated.
    """
    j = max(after - overlap, first + 1)
    if j >= after:
        return chunk_end
    region = offsets.starts[j]
    if region <= chunk_start or region >= chunk_end:
        return chunk_end
    m = SENTENCE_END.search(text, region, chunk_end)
    if m is not None:
        candidate = _skip_space(text, m.end(), chunk_end)
        if candidate < chunk_end:
            return candidate
    if text[region - 1].isspace():
        return region
    space = text.find(" ", region, chunk_end)
    if space != -1:
        candidate = _skip_space(text, space, chunk_end)
        if candidate < chunk_end:
            return candidate
    return region


class Splitter:
    def __init__(
        self, counter: TokenCounter, max_tokens: int, overlap_tokens: int, max_chars: int
    ) -> None:
        if max_tokens <= counter.special_tokens:
            raise ValueError("max_tokens must leave room for one token")
        if not 0 <= overlap_tokens < max_tokens - counter.special_tokens:
            raise ValueError("overlap_tokens must be smaller than the chunk's token budget")
        self.counter = counter
        self.max_tokens = max_tokens
        self.budget = max_tokens - counter.special_tokens
        self.overlap = overlap_tokens
        self.max_chars = max_chars

    def split(
        self,
        doc: Document,
        offsets: TokenOffsets | None = None,
        check: Callable[[], None] | None = None,
    ) -> list[ChunkSpan]:
        """Chunks of every section, in document order. `check` runs between chunks
        (a cancellation hook)."""
        if offsets is None:
            offsets = self.counter.offsets(doc.text)
        spans: list[ChunkSpan] = []
        for section in doc.sections:
            self._split_section(doc.text, section, offsets, spans, check)
        return spans

    def _count(self, text: str, offsets: TokenOffsets, start: int, end: int) -> int:
        clean = self.counter.is_boundary(text, start) and self.counter.is_boundary(text, end)
        if clean and offsets.forced_cuts:
            k = bisect_right(offsets.forced_cuts, start)
            clean = k >= len(offsets.forced_cuts) or offsets.forced_cuts[k] >= end
        if clean:
            first = bisect_left(offsets.starts, start)
            after = bisect_left(offsets.starts, end)
            return after - first + self.counter.special_tokens
        return self.counter.count(text[start:end])

    def _split_section(
        self,
        text: str,
        section: Section,
        offsets: TokenOffsets,
        out: list[ChunkSpan],
        check: Callable[[], None] | None,
    ) -> None:
        starts = offsets.starts
        s_end = section.end
        p = _skip_space(text, section.start, s_end)
        prev_end = p  # end of the previous chunk of this section
        last_token = bisect_left(starts, s_end)
        while p < s_end:
            if check is not None:
                check()
            first = bisect_left(starts, p)
            # A start inside a token (a cut within a word) counts that token too.
            inside = first > 0 and offsets.ends[first - 1] > p
            room = self.budget - (1 if inside else 0)
            token_limit = s_end if first + room >= last_token else starts[first + room]
            limit = min(token_limit, p + self.max_chars, s_end)
            lo = max(p, prev_end)
            if limit <= lo:
                # The overlap left no room for new text: start afresh at the end.
                p = _skip_space(text, prev_end, s_end)
                prev_end = p
                continue
            end = s_end if limit >= s_end else find_break(text, lo, limit, offsets)
            chunk_end = _rstrip(text, p, end)
            count = self._count(text, offsets, p, chunk_end)
            while count > self.max_tokens:
                # Only after a cut inside a word: shrink until the tokenizer agrees.
                limit = min(chunk_end - 1, p + (chunk_end - p) * self.max_tokens // count)
                if limit <= lo:
                    break
                end = find_break(text, lo, limit, offsets)
                chunk_end = _rstrip(text, p, end)
                count = self._count(text, offsets, p, chunk_end)
            if count > self.max_tokens:
                if p < prev_end:
                    p = _skip_space(text, prev_end, s_end)  # drop the overlap and retry
                    prev_end = p
                    continue
                # Cannot happen with a WordPiece tokenizer (a character is at most one
                # token); a guarantee of progress for any other.
                end = chunk_end = p + 1
                count = self.counter.count(text[p:chunk_end])
            out.append(ChunkSpan(p, chunk_end, count, section.heading_path))
            prev_end = chunk_end
            next_p = _skip_space(text, end, s_end)
            if self.overlap and next_p < s_end:
                after = bisect_left(starts, chunk_end)
                candidate = _overlap_start(
                    text,
                    offsets,
                    chunk_start=p,
                    chunk_end=chunk_end,
                    first=first,
                    after=after,
                    overlap=self.overlap,
                )
                if p < candidate < chunk_end:
                    next_p = candidate
            p = next_p
