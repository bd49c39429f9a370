"""Text normalisation: Unicode NFKC and whitespace.

The normalised text is what chunk offsets point into. Rules, in order:
NFKC (full-width letters and digits, ligatures, non-breaking and ideographic
spaces become their plain forms); every line break style becomes "\\n";
control and invisible format characters (NUL, BOM, zero-width space, soft
hyphen) are dropped; runs of spaces and tabs become one space; lines are
stripped; more than one blank line becomes one; the text is stripped.
Paragraphs are therefore separated by exactly "\\n\\n".
"""

from __future__ import annotations

import re
import unicodedata

_LINE_BREAK_CHARS = "\r\x0b\x0c\x85\u2028\u2029"
_LINE_BREAKS = re.compile(r"\r\n?|[\x0b\x0c\x85\u2028\u2029]")
_INVISIBLE = re.compile(r"[\x00-\x08\x0e-\x1f\x7f-\x84\x86-\x9f\u00ad\u200b\ufeff]")
_BLANK_LINES = re.compile(r"\n{3,}")
_ANY_SPACE = re.compile(r"\s+")


def normalize_text(text: str) -> str:
    """A block of text with its line structure (paragraphs, lines) kept."""
    if not text.isascii():  # ASCII is already NFKC
        text = unicodedata.normalize("NFKC", text)
    if any(c in text for c in _LINE_BREAK_CHARS):  # a membership test is a fast scan
        text = _LINE_BREAKS.sub("\n", text)
    text = _INVISIBLE.sub("", text)
    # Per line, str.split() collapses every run of whitespace and strips the ends.
    text = "\n".join(" ".join(line.split()) for line in text.split("\n"))
    text = _BLANK_LINES.sub("\n\n", text)
    return text.strip()


def normalize_inline(text: str) -> str:
    """A single line (a heading, a title): all whitespace becomes one space."""
    text = unicodedata.normalize("NFKC", text)
    text = _INVISIBLE.sub("", text)
    return _ANY_SPACE.sub(" ", text).strip()
