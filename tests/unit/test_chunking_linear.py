"""Every regex and scanner in chunking is linear on adversarial input.

Each case feeds 10 KB, 100 KB and 1 MB of a pathological shape and checks that
ten times the input costs less than thirty times the time: behaviour relative
to a baseline measured in the same test, never an absolute wall-clock figure.
A quadratic pattern costs a hundred times; a linear one ten, up to twenty-five
here where a 1 MB input falls out of the CPU caches (or `re` grows its
backtracking stack). On a busy machine one measurement may be slow, so a
failing step is measured again before the test fails.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Callable

import pytest

from services.chunking import (
    html_depth,
    html_parse,
    media,
    normalize,
    parsing,
    pdf_clean,
    splitter,
    tokens,
)

SIZES = (10_000, 100_000, 1_000_000)
MAX_RATIO = 30  # for 10x the input; linear is 10-25, quadratic ~100
FLOOR_S = 0.003  # below this a measurement is noise
ATTEMPTS = 3


def _time(fn: Callable[[str], object], data: str) -> float:
    # The collector off while timing: its full passes scan every object the test
    # session keeps alive, a cost of the session's heap, not of `fn` (it made a linear
    # parse of 1 MB look 34x its 100 KB time in a full `make test`, 14x alone).
    best = float("inf")
    gc.collect()
    gc.disable()
    try:
        for _ in range(2):
            start = time.perf_counter()
            fn(data)
            best = min(best, time.perf_counter() - start)
    finally:
        gc.enable()
    return best


def assert_linear(fn: Callable[[str], object], make: Callable[[int], str]) -> None:
    inputs = [make(n) for n in SIZES]
    times = [_time(fn, data) for data in inputs]
    for k in range(1, len(SIZES)):
        for _ in range(ATTEMPTS):
            if times[k] < MAX_RATIO * max(times[k - 1], FLOOR_S):
                break
            times[k - 1] = min(times[k - 1], _time(fn, inputs[k - 1]))
            times[k] = min(times[k], _time(fn, inputs[k]))
        assert times[k] < MAX_RATIO * max(times[k - 1], FLOOR_S), (
            f"{SIZES[k]} chars took {times[k]:.3f}s, {SIZES[k - 1]} took {times[k - 1]:.4f}s: "
            "super-linear"
        )


def _line(prefix: str, body: str, suffix: str = "") -> Callable[[int], str]:
    """A line of about n characters: prefix, `body` repeated, suffix."""
    return lambda n: prefix + body * max(1, (n - len(prefix) - len(suffix)) // len(body)) + suffix


def _decode_latin1(text: str) -> object:
    return media.decode_text(text.encode("latin-1"))


def _descending(n: int) -> str:
    return "a" + "\u0315" * (n // 2) + "\u0316" * (n // 2)


def _depth(limit: int) -> Callable[[str], object]:
    return lambda text: html_depth.exceeds(text, limit)


def _finditer(pattern: object) -> Callable[[str], object]:
    return lambda text: sum(1 for _ in pattern.finditer(text))  # type: ignore[attr-defined]


CASES: list[tuple[str, Callable[[str], object], Callable[[int], str]]] = [
    # --- Markdown line patterns (the ATX heading is string operations now)
    ("atx: # a, spaces, b", parsing._atx_heading, _line("# a", " ", "b")),
    ("atx: spaces and tabs then #", parsing._atx_heading, _line("###", " \t", "#x")),
    ("atx: closing #s without end", parsing._atx_heading, _line("# a ", "#", " x")),
    ("atx: space-# pairs", parsing._atx_heading, _line("#", " #", "x")),
    ("setext: = then x", parsing._setext_level, _line("", "=", "x")),
    ("setext: = spaces x", parsing._setext_level, _line("=", " ", "x")),
    ("setext: - and spaces", parsing._setext_level, _line("", "- ", "x")),
    ("fence: backticks", parsing._fence, _line("", "`", "x")),
    ("fence: tildes and spaces", parsing._fence, _line("~~~", " ~", "")),
    ("list or quote", parsing._LIST_OR_QUOTE.match, _line("", "1", ".")),
    ("thematic break: - and spaces", parsing._thematic_break, _line("", "- ", "x")),
    ("thematic break: - then spaces", parsing._thematic_break, _line("-", " ", "x")),
    ("thematic break: mixed", parsing._thematic_break, _line("", "*\t", "-")),
    ("indentation", parsing._unindented, _line("", " ")),
    ("html whitespace", lambda t: html_parse._WS.sub(" ", t), _line("a", " \t\n", "b")),
    # --- whole Markdown documents
    ("markdown: # lines", parsing.parse_markdown, _line("", "#\n")),
    ("markdown: fences", parsing.parse_markdown, _line("", "```\n# x\n")),
    ("markdown: setext paragraph", parsing.parse_markdown, _line("", "a\n", "===")),
    ("markdown: one line of spaces", parsing.parse_markdown, _line("#", " ")),
    # --- normalisation
    ("line breaks", lambda t: normalize._LINE_BREAKS.sub("\n", t), _line("", "\r\r\n\x0b")),
    ("invisible", lambda t: normalize._INVISIBLE.sub("", t), _line("", "\x00\u200b")),
    ("blank lines", lambda t: normalize._BLANK_LINES.sub("\n\n", t), _line("", "\n", "x")),
    ("inline spaces", lambda t: normalize._ANY_SPACE.sub(" ", t), _line("", " \u3000\t")),
    ("surrogates", lambda t: normalize._SURROGATES.sub("?", t), _line("", "a\ud800")),
    ("mark run candidates", _finditer(normalize._CANDIDATE_RUN), _line("a", "\u0301")),
    ("nfkc: unordered marks", normalize.nfkc, _line("a", "\u0315\u0316")),
    ("nfkc: descending marks", normalize.nfkc, _descending),
    ("nfkc: astral marks", normalize.nfkc, _line("a", "\U0001d167\u0316")),
    ("normalize_text: zalgo", normalize.normalize_text, _line("", "e" + "\u0301\u0315" * 20)),
    ("normalize_inline: marks", normalize.normalize_inline, _line("x", "\u0316\u0315")),
    # --- splitter separators (searched inside a window, but any text must be linear)
    ("sentence end: . and closers", _finditer(splitter.SENTENCE_END), _line(".", ")", "x")),
    ("sentence end: .) pairs", _finditer(splitter.SENTENCE_END), _line("", ".)")),
    ("sentence end: 。 closers", _finditer(splitter.SENTENCE_END), _line("", "。」")),
    ("clause end", _finditer(splitter.CLAUSE_END), _line("", ",:、")),
    # --- token pieces
    ("pieces: spaces", tokens._PIECES.findall, _line("", " ")),
    ("pieces: dots", tokens._PIECES.findall, _line("", ". ")),
    ("pieces: one word", tokens._PIECES.findall, _line("", "a")),
    # --- HTML nesting estimate
    ("html depth: nested divs", _depth(10**9), _line("", "<div>")),
    ("html depth: stray end tags", _depth(16), _line("", "<div></span>")),
    ("html depth: unterminated comments", _depth(16), _line("", "<!--<b>")),
    ("html depth: unterminated scripts", _depth(16), _line("", "<script><i>")),
    ("html depth: closing everything", _depth(16), _line("<a>", "<b><i></a>")),
    # --- PDF cleanup (each rule runs on a page's lines; a line can be long)
    ("pdf: dot leaders without a number", pdf_clean.is_leader_line, _line("x", ". ")),
    ("pdf: dot leaders, numbers", pdf_clean.is_leader_line, _line("", "...1,", "x")),
    ("pdf: page number shape", pdf_clean.is_bare_page_number, _line("- ", "1")),
    ("pdf: marked hyphens", lambda t: pdf_clean.Hyphens([]).marked(t), _line("", "ab\ufffe")),
    ("pdf: letters, one mark", lambda t: pdf_clean.Hyphens([]).marked(t), _line("", "a", "\ufffe")),
    ("pdf: hyphen join", lambda t: pdf_clean.Hyphens([t]).join([t, "next"]), _line("", "a", "-")),
    ("pdf: underscore join", lambda t: pdf_clean.Hyphens([]).join([t, "x_y"]), _line("", "a_")),
    ("pdf: page shape", lambda t: pdf_clean._shape(t, "7"), _line("", "7 a1 ")),
    # --- decoding
    ("decode: invalid UTF-8", _decode_latin1, _line("", "\xff\xc3(")),
]


@pytest.mark.parametrize(("fn", "make"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_linear(fn: Callable[[str], object], make: Callable[[int], str]) -> None:
    assert_linear(fn, make)


def test_the_timing_check_catches_a_quadratic_pattern() -> None:
    """The method works: the old ATX heading regex fails it."""
    import re

    old_atx = re.compile(r" {0,3}(#{1,6})(?:[ \t]+(.*?))?(?:[ \t]+#+)?[ \t]*$")
    make = _line("# a", " ", "b")
    small, large = make(1_000), make(10_000)
    t_small, t_large = _time(old_atx.match, small), _time(old_atx.match, large)
    assert t_large > MAX_RATIO * max(t_small, 1e-4)
