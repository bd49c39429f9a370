"""Sentence boundaries in normalised text (English and Chinese), with offsets.

The text is a chunk's, which is a slice of its document's normalised text
(services/chunking/normalize.py: paragraphs separated by exactly "\\n\\n",
lines stripped, runs of spaces collapsed, NFKC — so full-width ！？ are already
ASCII). A sentence ends:

- at 。！？!? (and ．), with the closing quotes or brackets that follow it — in
  Chinese no space follows, so none is required after Chinese punctuation or
  before a Han character;
- at "." followed by a space (or a line end) and something that can start a
  sentence, unless the word before is a known abbreviation ("e.g.", "Dr."), an
  initial ("J. R. R. Tolkien") or itself holds a dot ("U.S.");
- at a paragraph break, and at a line break after a line that does not look like
  hard-wrapped prose (short lines: headings, list items, table rows).

Each sentence is stripped of surrounding whitespace; offsets are code-point
offsets into the text, so text[s.start:s.end] == s.text always holds.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

#: Sentence-final punctuation that needs no following space (Chinese, Japanese,
#: and ASCII ! ? that NFKC made of full-width ones).
_HARD_END = "。！？!?．｡"
#: What may trail the final punctuation and still belong to the sentence.
_CLOSERS = "\"'”’」』）)]】》〉"
#: A line at least this long that ends without punctuation is taken as
#: hard-wrapped prose continuing on the next line.
WRAPPED_LINE_CHARS = 60
#: Words that end in "." without ending the sentence (lower-cased, no dot).
ABBREVIATIONS = frozenset(
    [
        "mr",
        "mrs",
        "ms",
        "dr",
        "prof",
        "sr",
        "jr",
        "st",
        "mt",
        "ft",
        "vs",
        "etc",
        "e.g",
        "i.e",
        "cf",
        "al",
        "fig",
        "figs",
        "no",
        "nos",
        "vol",
        "vols",
        "pp",
        "p",
        "ed",
        "eds",
        "approx",
        "inc",
        "ltd",
        "co",
        "corp",
        "dept",
        "est",
        "jan",
        "feb",
        "mar",
        "apr",
        "jun",
        "jul",
        "aug",
        "sep",
        "sept",
        "oct",
        "nov",
        "dec",
        "gen",
        "col",
        "lt",
        "sgt",
        "capt",
        "rev",
        "gov",
        "sen",
        "rep",
        "ca",
        "resp",
    ]
)

_WORD_BEFORE = re.compile(r"(\S+)$")


@dataclass(frozen=True)
class Sentence:
    text: str
    start: int
    end: int


def _is_han(c: str) -> bool:
    o = ord(c)
    return 0x4E00 <= o <= 0x9FFF or 0x3400 <= o <= 0x4DBF or 0xF900 <= o <= 0xFAFF


def _period_ends(text: str, i: int, after: int) -> bool:
    """Whether the "." at i (its closing quotes or brackets end at `after`,
    followed by whitespace or the end) ends a sentence."""
    before = _WORD_BEFORE.search(text, 0, i)
    word = before.group(1).lower().lstrip("(\"'“‘[") if before else ""
    if not word:
        return True
    if word in ABBREVIATIONS or word.rstrip(".") in ABBREVIATIONS:
        return False
    if len(word) == 1 and word.isalpha():
        return False  # an initial: "J. Smith"
    if "." in word and any(c.isalpha() for c in word):
        return False  # "U.S.", "e.g" — an abbreviation with inner dots
    j = after
    while j < len(text) and text[j] in " \t":
        j += 1
    if j >= len(text) or text[j] == "\n":
        return True
    nxt = text[j]
    # A lower-case word after "." continues the sentence ("approx. five", "5 p.m. on").
    return not nxt.islower()


def _continues_lowercase(text: str, j: int) -> bool:
    """Whether a space and then a lower-case letter follow position j."""
    return j + 1 < len(text) and text[j] == " " and text[j + 1].islower()


def _boundaries(text: str) -> list[int]:
    """Offsets where a sentence ends (exclusive), in order."""
    ends: list[int] = []
    n = len(text)
    i = 0
    line_start = 0
    while i < n:
        c = text[i]
        if c == "\n":
            line = text[line_start:i]
            paragraph = i + 1 < n and text[i + 1] == "\n"
            if paragraph or len(line.rstrip()) < WRAPPED_LINE_CHARS:
                ends.append(i)
            line_start = i + 1
            i += 1
            continue
        if c in _HARD_END or c in {".", "…"}:
            j = i + 1
            while j < n and text[j] in _HARD_END + ".…":
                j += 1  # "?!", "...", "……"
            while j < n and text[j] in _CLOSERS:
                j += 1
            if c in "!?" and _continues_lowercase(text, j):
                pass  # 'He said "Hi!" to me': English, the sentence goes on
            elif c in _HARD_END:
                ends.append(j)
            elif j >= n or text[j] in " \t\n":
                if c == "…" or _period_ends(text, i, j):
                    ends.append(j)
            elif c == "…" and _is_han(text[j]):
                ends.append(j)
            i = j
            continue
        i += 1
    return ends


def split_sentences(text: str) -> list[Sentence]:
    """The sentences of `text`, in order, stripped, with their offsets in it.
    Pieces without a letter or digit (rules, lone punctuation) are left out."""
    out: list[Sentence] = []
    start = 0
    for end in [*_boundaries(text), len(text)]:
        if end <= start:
            continue
        piece = text[start:end]
        lead = len(piece) - len(piece.lstrip())
        stripped = piece.strip()
        if stripped and any(ch.isalnum() for ch in stripped):
            s = start + lead
            out.append(Sentence(stripped, s, s + len(stripped)))
        start = end
    return out
