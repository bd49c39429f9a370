"""Citation markers in a streamed answer: found, checked and cleaned as the text arrives.

Recognised markers (ASCII, full-width `［1］` or lenticular `【1】` brackets):
`[1]`, `[1, 2]`, `[1; 2]`, `[1、2]`, `[1-3]` (a range), `[1][2]`, `[^1]`,
`[passage 1]`, `[Source 2]`. A bracket followed by `(` is a Markdown link, not a
citation, and nothing inside `code spans` or fenced code counts.

Numbers that match no passage are removed from the answer (a marker left empty is
removed with the space before it) and reported. `CitationFilter` works on the stream
itself, holding back only what might still turn out to be a marker (at most
`MAX_MARKER_CHARS` characters) and whitespace before it, so the deltas the caller
sees add up exactly to the final, cleaned answer.
"""

from __future__ import annotations

from dataclasses import dataclass, field

OPEN_TO_CLOSE = {"[": "]", "［": "］", "【": "】"}
MAX_MARKER_CHARS = 40
MAX_RANGE = 50
_DIGITS = set("0123456789０１２３４５６７８９")
_LIST_SEPARATORS = set(",;、，；")
_RANGE_SEPARATORS = set("-–—")
_WORDS = ("passage", "passages", "source", "sources")
_MAX_DIGITS = 4
# A removed marker takes the whitespace before it along when punctuation follows.
_CLOSING_PUNCTUATION = set(".,;:!?)]}»\"'。，；：！？）、」』")


@dataclass
class _Scan:
    """Where the text after an opening bracket stands in the marker grammar."""

    ok: bool  # still a possible marker (a prefix of one)
    complete: bool  # a whole marker body: a closing bracket may follow now


def _scan(inner: str) -> _Scan:  # noqa: C901, PLR0911, PLR0912 - a character-level scanner of citation markers
    # states: start, word, num, after_num, after_sep
    state, word, digits = "start", "", 0
    caret_seen = False
    for c in inner:
        if state == "start":
            if c.isspace():
                continue
            if c == "^" and not caret_seen and not word:
                caret_seen = True
            elif c.isalpha():
                state, word = "word", c.lower()
            elif c in _DIGITS:
                state, digits = "num", 1
            else:
                return _Scan(False, False)
        elif state == "word":
            if c.isalpha():
                word += c.lower()
                if not any(w.startswith(word) for w in _WORDS):
                    return _Scan(False, False)
            elif c.isspace() and word in _WORDS:
                state = "after_word"
            elif c in _DIGITS and word in _WORDS:
                state, digits = "num", 1
            else:
                return _Scan(False, False)
        elif state == "after_word":
            if c in _DIGITS:
                state, digits = "num", 1
            elif not c.isspace():
                return _Scan(False, False)
        elif state == "num":
            if c in _DIGITS:
                digits += 1
                if digits > _MAX_DIGITS:
                    return _Scan(False, False)
            elif c.isspace():
                state = "after_num"
            elif c in _LIST_SEPARATORS or c in _RANGE_SEPARATORS:
                state = "after_sep"
            else:
                return _Scan(False, False)
        elif state == "after_num":
            if c in _LIST_SEPARATORS or c in _RANGE_SEPARATORS:
                state = "after_sep"
            elif not c.isspace():
                return _Scan(False, False)
        elif state == "after_sep":
            if c in _DIGITS:
                state, digits = "num", 1
            elif not c.isspace():
                return _Scan(False, False)
    return _Scan(True, state in ("num", "after_num"))


def _numbers(inner: str) -> list[int]:
    """The numbers a complete marker body cites, ranges expanded."""
    tokens: list[str] = []
    current = ""
    for c in inner:
        if c in _DIGITS:
            current += c
            continue
        if current:
            tokens.append(current)
            current = ""
        if c in _RANGE_SEPARATORS:
            tokens.append("-")
    if current:
        tokens.append(current)
    numbers: list[int] = []
    i = 0
    while i < len(tokens):
        n = int(tokens[i])
        if i + 2 < len(tokens) and tokens[i + 1] == "-":
            m = int(tokens[i + 2])
            if n <= m and m - n <= MAX_RANGE:
                numbers.extend(range(n, m + 1))
            else:  # not a sensible range: take both ends as cited
                numbers.extend((n, m))
            i += 3
        else:
            if tokens[i] != "-":
                numbers.append(n)
            i += 1
    return numbers


def _unique(values: list[int]) -> list[int]:
    return list(dict.fromkeys(values))


@dataclass
class CitationFilter:
    """Feed the answer as it streams; get back the text that is safe to show."""

    passage_count: int
    #: valid citation numbers, in order of first appearance
    cited: list[int] = field(default_factory=list)
    #: numbers that matched no passage, in order of first appearance
    invalid: list[int] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._out: list[str] = []
        self._text: list[str] = []  # everything emitted so far
        self._ws = ""  # whitespace held back: a removed marker may take it along
        self._marker = ""  # an opening bracket and what followed, not yet decided
        self._closed: tuple[str, list[int]] | None = None  # a marker awaiting 1 char
        self._collapsing = False  # right after a removed marker
        self._post_ws = ""  # whitespace after a removed marker
        self._code_fence = 0  # backtick-run length that opened the code span, 0 outside
        self._backticks = 0  # length of the current run of backticks

    # --- public ------------------------------------------------------------------------
    def feed(self, text: str) -> str:
        for c in text:
            self._char(c)
        return self._take()

    def finish(self) -> str:
        if self._marker:
            self._release_marker_literal(final=True)
        if self._closed is not None:
            self._resolve(next_char=None)
        if self._collapsing:  # a removed marker at the very end: drop its whitespace
            self._ws = self._post_ws = ""
            self._collapsing = False
        self._emit(self._ws)
        self._ws = ""
        return self._take()

    @property
    def answer(self) -> str:
        """Everything released so far (the whole cleaned answer after `finish()`)."""
        return "".join(self._text)

    # --- internals ---------------------------------------------------------------------
    def _take(self) -> str:
        out = "".join(self._out)
        self._out.clear()
        return out

    def _emit(self, text: str) -> None:
        if text:
            self._out.append(text)
            self._text.append(text)

    def _char(self, c: str) -> None:  # noqa: C901 - a character-level state machine
        if self._marker:
            self._extend_marker(c)
            return
        if self._closed is not None:
            self._resolve(next_char=c)
        if self._collapsing:
            if c.isspace():
                self._post_ws += c
                return
            if c in _CLOSING_PUNCTUATION:
                kept = ""
            elif "\n" in self._post_ws:
                kept = self._post_ws
            else:
                kept = self._ws or self._post_ws
            self._ws, self._post_ws, self._collapsing = kept, "", False
        # code spans: a run of n backticks opens one, the next run of n closes it
        if c == "`":
            self._emit(self._ws)
            self._ws = ""
            self._backticks += 1
            self._emit(c)
            return
        if self._backticks:
            if self._code_fence == 0:
                self._code_fence = self._backticks
            elif self._backticks == self._code_fence:
                self._code_fence = 0
            self._backticks = 0
        if self._code_fence:
            self._emit(c)
            return
        if c.isspace():
            self._ws += c
            return
        if c in OPEN_TO_CLOSE:
            self._marker = c  # keep the whitespace held until the marker is decided
            return
        self._emit(self._ws)
        self._ws = ""
        self._emit(c)

    def _extend_marker(self, c: str) -> None:
        opener, inner = self._marker[0], self._marker[1:]
        if c == OPEN_TO_CLOSE[opener] and _scan(inner).complete:
            self._closed = (self._marker + c, _numbers(inner))
            self._marker = ""
            return
        candidate = inner + c
        if len(self._marker) + 1 < MAX_MARKER_CHARS and _scan(candidate).ok:
            self._marker += c
            return
        self._release_marker_literal(final=False, then=c)

    def _release_marker_literal(self, *, final: bool, then: str = "") -> None:
        """Not a marker after all: its bracket is text; re-read what followed it."""
        held = self._marker
        self._marker = ""
        self._emit(self._ws)
        self._ws = ""
        self._emit(held[0])
        rest = held[1:] + then
        for ch in rest:
            self._char(ch)
        if final and self._marker:  # the re-read opened another candidate: also text
            self._release_marker_literal(final=True)

    def _resolve(self, next_char: str | None) -> None:
        assert self._closed is not None
        raw, numbers = self._closed
        self._closed = None
        if next_char == "(":  # a Markdown link text, not a citation
            self._emit(self._ws + raw)
            self._ws = ""
            return
        valid = [n for n in numbers if 1 <= n <= self.passage_count]
        bad = [n for n in numbers if not 1 <= n <= self.passage_count]
        for n in valid:
            if n not in self.cited:
                self.cited.append(n)
        for n in bad:
            if n not in self.invalid:
                self.invalid.append(n)
        if not bad:
            self._emit(self._ws + raw)
            self._ws = ""
        elif valid:
            opener, closer = raw[0], raw[-1]
            self._emit(self._ws + opener + ", ".join(map(str, _unique(valid))) + closer)
            self._ws = ""
        else:
            self._collapsing = True  # the held whitespace waits for what follows


@dataclass(frozen=True)
class ParsedCitations:
    answer: str
    cited: tuple[int, ...]
    invalid: tuple[int, ...]


def parse_citations(text: str, passage_count: int) -> ParsedCitations:
    """The one-shot form of `CitationFilter`."""
    f = CitationFilter(passage_count)
    f.feed(text)
    f.finish()
    return ParsedCitations(f.answer, tuple(f.cited), tuple(f.invalid))
