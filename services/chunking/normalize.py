"""Text normalisation: Unicode NFKC and whitespace.

The normalised text is what chunk offsets point into. Rules, in order:
NFKC (full-width letters and digits, ligatures, non-breaking and ideographic
spaces become their plain forms); every line break style becomes "\\n";
control and invisible format characters (NUL, BOM, zero-width space, soft
hyphen) are dropped; runs of spaces and tabs become one space; lines are
stripped; more than one blank line becomes one; the text is stripped.
Paragraphs are therefore separated by exactly "\\n\\n".

Every step is linear in the text's length, whatever the text. CPython's NFKC
puts combining marks in canonical order with an insertion sort, quadratic in
the length of a run of marks (200,000 alternating marks took 48 s): runs of
more than 30 non-starters are first broken with U+034F COMBINING GRAPHEME
JOINER, as the Unicode "Stream-Safe Text Format" (UAX #15, section 13) does.
Real text never has such runs; it is left unchanged. Lone surrogates (which
cannot be encoded as UTF-8) become U+FFFD.
"""

from __future__ import annotations

import re
import unicodedata

_LINE_BREAK_CHARS = "\r\x0b\x0c\x85\u2028\u2029"
_LINE_BREAKS = re.compile(r"\r\n?|[\x0b\x0c\x85\u2028\u2029]")
_INVISIBLE = re.compile(r"[\x00-\x08\x0e-\x1f\x7f-\x84\x86-\x9f\u00ad\u200b\ufeff]")
_BLANK_LINES = re.compile(r"\n{3,}")
_ANY_SPACE = re.compile(r"\s+")
# Lone surrogates (a PDF's ToUnicode map can produce them) cannot be sent as UTF-8.
_SURROGATES = re.compile("[\ud800-\udfff]")

#: UAX #15: at most 30 non-starters in a row; U+034F, a starter that composes with
#: nothing, breaks a longer run.
MAX_NON_STARTERS = 30
CGJ = "\u034f"
# No combining mark or decomposable character is assigned above plane 3.
_SCAN_LIMIT = 0x40000


def _non_starter_counts() -> dict[str, tuple[int, int, bool]]:
    """char → (leading, trailing, all) non-starters of its NFKD decomposition, where
    `all` says that the whole decomposition is non-starters. Only characters with a
    non-starter are listed."""
    counts: dict[str, tuple[int, int, bool]] = {}
    for cp in range(_SCAN_LIMIT):
        c = chr(cp)
        if not unicodedata.combining(c) and not unicodedata.decomposition(c):
            continue
        marks = [unicodedata.combining(x) != 0 for x in unicodedata.normalize("NFKD", c)]
        if not any(marks):
            continue
        leading = next((i for i, m in enumerate(marks) if not m), len(marks))
        trailing = next((i for i, m in enumerate(reversed(marks)) if not m), len(marks))
        counts[c] = (leading, trailing, all(marks))
    return counts


_COUNTS = _non_starter_counts()
_STARTER = (0, 0, False)


def _char_class(chars: list[str]) -> str:
    ranges: list[list[int]] = []
    for cp in sorted(map(ord, chars)):
        if ranges and ranges[-1][1] == cp - 1:
            ranges[-1][1] = cp
        else:
            ranges.append([cp, cp])
    return "".join(
        re.escape(chr(a)) if a == b else f"{re.escape(chr(a))}-{re.escape(chr(b))}"
        for a, b in ranges
    )


# Candidate runs: a superset (every astral character, so that the class stays a
# bitmap plus one range, which `re` scans fast); `_break_run` counts exactly.
_CANDIDATE_RUN = re.compile(
    f"[{_char_class([c for c in _COUNTS if ord(c) < 0x10000])}\U00010000-\U0010ffff]"
    f"{{{MAX_NON_STARTERS + 1},}}"
)


def _break_run(match: re.Match[str]) -> str:
    """UAX #15's algorithm over one candidate run (the character before it has no
    trailing non-starter: every such character is a candidate)."""
    out: list[str] = []
    run = 0
    for c in match.group():
        leading, trailing, only_marks = _COUNTS.get(c, _STARTER)
        if run + leading > MAX_NON_STARTERS:
            out.append(CGJ)
            run = 0
        run = run + leading if only_marks else trailing
        out.append(c)
    return "".join(out)


def stream_safe(text: str) -> str:
    """`text` with no run of more than 30 non-starters (UAX #15 stream-safe format)."""
    if text.isascii() or _CANDIDATE_RUN.search(text) is None:
        return text
    return _CANDIDATE_RUN.sub(_break_run, text)


def nfkc(text: str) -> str:
    """Unicode NFKC in linear time (see the module's docstring); lone surrogates
    become U+FFFD."""
    if text.isascii():  # ASCII is already NFKC
        return text
    if _SURROGATES.search(text) is not None:
        text = _SURROGATES.sub("\ufffd", text)
    return unicodedata.normalize("NFKC", stream_safe(text))


def normalize_text(text: str) -> str:
    """A block of text with its line structure (paragraphs, lines) kept."""
    text = nfkc(text)
    if any(c in text for c in _LINE_BREAK_CHARS):  # a membership test is a fast scan
        text = _LINE_BREAKS.sub("\n", text)
    text = _INVISIBLE.sub("", text)
    # Per line, str.split() collapses every run of whitespace and strips the ends.
    text = "\n".join(" ".join(line.split()) for line in text.split("\n"))
    text = _BLANK_LINES.sub("\n\n", text)
    return text.strip()


def normalize_inline(text: str) -> str:
    """A single line (a heading, a title): all whitespace becomes one space."""
    text = nfkc(text)
    text = _INVISIBLE.sub("", text)
    return _ANY_SPACE.sub(" ", text).strip()


def normalize_code(text: str) -> str:
    """A code block: as `normalize_text` but indentation and blank lines inside are kept
    (lines are only right-stripped; runs of blank lines become one)."""
    text = nfkc(text)
    if any(c in text for c in _LINE_BREAK_CHARS):
        text = _LINE_BREAKS.sub("\n", text)
    text = _INVISIBLE.sub("", text)
    text = "\n".join(line.rstrip() for line in text.split("\n"))
    text = _BLANK_LINES.sub("\n\n", text)
    return text.strip("\n")
