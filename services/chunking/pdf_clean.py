"""Cleaning a PDF's page text before chunking (docs/chunking.md, "PDF cleanup").

Input: the pages' lines in content order with their boxes (pdf_extract.py).
Output: one text per page, with

1. **running headers and footers** removed: a line among the two topmost or two
   bottommost of its page whose shape (lowercased, digit runs and the page's own
   label as `#`) repeats at the same edge and the same height (±2 pt) on at
   least 3 pages (2 when it carries the page's number at one end), or that sits
   at the height of the running lines already found at that edge and carries
   the page's number (a chapter one page long); it must also stand apart from
   the body (a gap of ≥ 1.4 line pitches), so a body line that happens to repeat
   at a page's edge stays;
2. **bare page numbers** removed (`3`, `iv`, `T-1`, `- 3 -`, `Page 3 of 9`, `3 / 9`
   at a page's edge);
3. **dot-leader lines** removed: table-of-contents and index entries, text then a
   run of three or more leader dots then page references; on a page that is
   mostly such lines, the one- and two-letter group headings of an index too;
4. **table rows drawn cell by cell** (a wrapped cell's lines, then a jump back
   up and to the right for the next cell) joined into one line `a | b | c`;
5. **words hyphenated across a line break** joined (`man-`/`agement` →
   `management`; PDFium marks such hyphens U+FFFE), keeping the hyphen when the
   document spells the hyphenated form more often than the closed one, and
   identifiers broken after `_` (`asn1_der_` / `decoding()`) joined without a space.

Every rule works on whole lines, so the page texts are plain text again and the
normalised text (what chunk offsets point into) is built from them as for any
other format. Linear in the number of lines (sorting aside).
"""

from __future__ import annotations

import re
import statistics
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from itertools import pairwise

from services.chunking.pdf_extract import Line, Page

_BARE_PAGE_NUMBER = re.compile(
    r"(?i)\s*(?:page\s+)?[-\u2013\u2014]?\s*(?:\d{1,5}|[ivxlcdm]{1,7}|[A-Z]-\d{1,4})\s*"
    r"[-\u2013\u2014]?(?:\s*(?:/|of)\s*\d{1,5})?\s*"
)
# Text, then >= 3 leader dots (spaced or not), then page references, at the line's end.
_LEADER = re.compile(
    r"(?:\.[ \t]?){3,}[ \t]*"
    r"(?:[0-9ivxlcdmIVXLCDM]{1,7}|[A-Z]-\d{1,4})"
    r"(?:[ \t]?[-\u2013,][ \t]?(?:[0-9ivxlcdmIVXLCDM]{1,7}|[A-Z]-\d{1,4})){0,20}[ \t]*$"
)
_DIGITS = re.compile(r"\d+")
_WORD = re.compile(r"[A-Za-z\u00c0-\u024f]+(?:-[A-Za-z\u00c0-\u024f]+)*")
_TAIL_HYPHEN = re.compile(r"([A-Za-z\u00c0-\u024f]{2,})-$")
#: Rules that search from the end of a line look at this many characters only
#: (a regex searched over a whole line would be quadratic on a hostile line).
TAIL_CHARS = 160
_HEAD_WORD = re.compile(r"([a-z\u00df-\u024f]+|[A-Z]+(?=[^a-z]))(\S*)\s*")
_UNDERSCORE_TAIL = re.compile(r"[A-Za-z0-9]_$")
_UNDERSCORE_HEAD = re.compile(r"[A-Za-z0-9_]+(?:\(\))?[,.;:]?")

#: Edge lines looked at on each page (top and bottom).
EDGE_LINES = 2
#: Pages a running line's shape must repeat on (fewer in a short document).
MIN_REPEATS = 3
#: Height tolerance of a repeat (pt).
SAME_Y = 2.0
#: Gap between a running line and the body, in line pitches.
GAP_FACTOR = 1.4


@dataclass
class CleanPage:
    page: Page
    text: str


@dataclass
class CleanResult:
    pages: list[CleanPage]
    stats: Counter[str] = field(default_factory=Counter)
    removed: dict[str, list[tuple[str, str]]] = field(default_factory=lambda: defaultdict(list))


def is_leader_line(text: str) -> bool:
    return _LEADER.search(text[-TAIL_CHARS:]) is not None


def is_bare_page_number(text: str) -> bool:
    return len(text) <= 40 and _BARE_PAGE_NUMBER.fullmatch(text) is not None


def _is_letter(c: str) -> bool:
    return ("A" <= c <= "Z") or ("a" <= c <= "z") or ("\u00c0" <= c <= "\u024f")


def _shape(text: str, label: str) -> str:
    """The line modulo page numbers: digit runs and the page's own label become '#'."""
    words = text.lower().split()
    own = label.lower()
    return " ".join(_DIGITS.sub("#", "#" if w == own else w) for w in words)


def _carries_number(text: str, page: Page, offset: int | None = None) -> bool:
    """The line starts or ends with the page's label or physical number (or the
    printed number: physical + `offset`, learnt for PDFs without /PageLabels)."""
    words = text.split()
    if not words:
        return False
    ends = {words[0], words[-1]}
    if page.label in ends or str(page.number) in ends:
        return True
    return offset is not None and str(page.number + offset) in ends


def _printed_offset(lines: list[tuple[Page, Line]]) -> int | None:
    """The mode of (number printed at an end of a running line) - (physical number)."""
    votes: Counter[int] = Counter()
    for page, line in lines:
        words = line.text.split()
        for word in {words[0], words[-1]} if words else ():
            if word.isdigit() and len(word) < 6:
                votes[int(word) - page.number] += 1
    if not votes:
        return None
    offset, count = votes.most_common(1)[0]
    return offset if count >= 3 else None


def _y(line: Line, edge: str) -> float:
    return line.top if edge == "top" else line.bottom


def _edges(page: Page) -> dict[str, list[Line]]:
    top = sorted(page.lines, key=lambda ln: (-ln.top, ln.order))[:EDGE_LINES]
    bottom = sorted(page.lines, key=lambda ln: (ln.bottom, -ln.order))[:EDGE_LINES]
    return {"top": top, "bottom": bottom}


def document_pitch(pages: list[Page]) -> float:
    """The usual baseline-to-baseline distance: the mode of consecutive line gaps."""
    gaps: Counter[float] = Counter()
    for page in pages:
        tops = sorted({round(ln.top * 2) / 2 for ln in page.lines}, reverse=True)
        gaps.update(round(a - b, 1) for a, b in pairwise(tops) if 4 < a - b < 40)
    return gaps.most_common(1)[0][0] if gaps else 12.0


Key = tuple[int, int, str]  # (page index, line order, edge)


def _candidates(pages: list[Page]) -> list[tuple[str, Page, Line, str]]:
    return [
        (edge, page, line, _shape(line.text, page.label))
        for page in pages
        for edge, lines in _edges(page).items()
        for line in lines
    ]


def _repeated(
    cands: list[tuple[str, Page, Line, str]], need: int
) -> tuple[dict[Key, str], dict[str, list[float]]]:
    """Bare page numbers and shapes repeated at the same edge and height."""
    heights: dict[tuple[str, str], list[float]] = defaultdict(list)
    for edge, _page, line, shape in cands:
        heights[(edge, shape)].append(_y(line, edge))
    median = {key: statistics.median(ys) for key, ys in heights.items()}
    repeats: dict[tuple[str, str], set[int]] = defaultdict(set)
    for edge, page, line, shape in cands:
        if abs(_y(line, edge) - median[(edge, shape)]) <= SAME_Y:
            repeats[(edge, shape)].add(page.index)
    found: dict[Key, str] = {}
    band: dict[str, list[float]] = defaultdict(list)
    for edge, page, line, shape in cands:
        key = (page.index, line.order, edge)
        if is_bare_page_number(line.text):
            found[key] = "page_number"
            continue
        if abs(_y(line, edge) - median[(edge, shape)]) > SAME_Y:
            continue
        count = len(repeats[(edge, shape)])
        if count >= need or (count >= 2 and _carries_number(line.text, page)):
            found[key] = f"running_{edge}"
            band[edge].append(_y(line, edge))
    return found, band


def find_running_lines(pages: list[Page]) -> dict[tuple[int, int], str]:
    """(page index, line order) → why, for running headers, footers and page numbers."""
    n = len(pages)
    if n < 2:
        return {}
    need = min(MIN_REPEATS, max(2, n // 2))
    cands = _candidates(pages)
    found, band = _repeated(cands, need)
    offset = _printed_offset([(p, ln) for e, p, ln, _s in cands if (p.index, ln.order, e) in found])
    for edge, page, line, _shape_key in cands:  # one-page chapters: the band and a number
        key = (page.index, line.order, edge)
        if key in found or not band[edge]:
            continue
        if abs(_y(line, edge) - statistics.median(band[edge])) <= 1.5 and _carries_number(
            line.text, page, offset
        ):
            found[key] = f"running_{edge}_band"
    return _apart_from_body(pages, found, offset)


def _apart_from_body(
    pages: list[Page], found: dict[Key, str], offset: int | None
) -> dict[tuple[int, int], str]:
    """Walking in from each edge, keep the found lines that stand apart from the body."""
    pitch = document_pitch(pages)
    out: dict[tuple[int, int], str] = {}
    for page in pages:
        for edge in ("top", "bottom"):
            seq = sorted(page.lines, key=lambda ln: -ln.top if edge == "top" else ln.top)
            for k, line in enumerate(seq[:EDGE_LINES]):
                why = found.get((page.index, line.order, edge))
                if not why:
                    break
                own_number = why == "page_number" and _carries_number(
                    line.text.strip("-\u2013\u2014 "), page, offset
                )
                if not own_number:  # the page's own number needs no gap
                    rest = [m for m in seq[k + 1 :] if abs(m.top - line.top) > 1.0]
                    gap = abs(rest[0].top - line.top) if rest else float("inf")
                    if gap < GAP_FACTOR * pitch:
                        break
                out[(page.index, line.order)] = why
    return out


# ------------------------------------------------------------------ table rows


def rebuild_rows(lines: list[Line], pitch: float, max_jump: float = 12.0) -> tuple[list[str], int]:
    """Texts of `lines`, with table rows drawn cell by cell merged into `a | b | c`.

    A cell jump is a line that goes back up to the row's top (±0.4 pitch), at
    least 0.9 pitch above the line before and at most `max_jump` pitches (a new
    text column is a page high), and starts right of the previous cell. Lines of
    one cell step down by 0.7-1.5 pitches at the cell's left edge. A row needs
    two cells and one of them wrapped (otherwise the lines are plain text).
    """
    out: list[str] = []
    rows = 0
    i = 0
    while i < len(lines):
        top = lines[i].top
        cells: list[list[Line]] = [[lines[i]]]
        j = i + 1
        while j < len(lines):
            cur, prev = lines[j], lines[j - 1]
            jump = cur.top - prev.top
            if (
                abs(cur.top - top) <= 0.4 * pitch
                and cur.x0 > cells[-1][0].x0 + 1.5 * pitch
                and 0.9 * pitch < jump <= max_jump * pitch
            ):
                cells.append([cur])
            elif (
                0.7 * pitch <= prev.top - cur.top <= 1.5 * pitch
                and abs(cur.x0 - cells[-1][0].x0) <= 1.5 * pitch
            ):
                cells[-1].append(cur)
            else:
                break
            j += 1
        if len(cells) >= 2 and any(len(c) >= 2 for c in cells):
            out.append(" | ".join(" ".join(ln.text.strip() for ln in c) for c in cells))
            rows += 1
            i = j
        else:
            out.append(lines[i].text)
            i += 1
    return out, rows


# ------------------------------------------------------------------ hyphenation


class Hyphens:
    """Joins words hyphenated across line breaks, deciding with the document's vocabulary."""

    def __init__(self, texts: list[str]) -> None:
        self.vocab: Counter[str] = Counter()
        for text in texts:
            self.vocab.update(w.lower() for w in _WORD.findall(text.replace("\ufffe", "")))
        self.stats: Counter[str] = Counter()

    def decide(self, left: str, right: str) -> str:
        closed, hyphened = (left + right).lower(), f"{left}-{right}".lower()
        if self.vocab.get(hyphened, 0) > self.vocab.get(closed, 0):
            self.stats["hyphen_kept"] += 1
            return f"{left}-{right}"
        self.stats["hyphen_joined"] += 1
        return left + right

    def marked(self, line: str) -> str:
        """PDFium's U+FFFE line-end hyphens: `man\ufffeagement` → `management`."""
        if "\ufffe" not in line:
            return line
        out: list[str] = []
        at = 0
        while (mark := line.find("\ufffe", at)) != -1:
            left = mark
            while left > at and _is_letter(line[left - 1]):
                left -= 1
            right = mark + 1
            while right < len(line) and line[right] in " \t":
                right += 1
            word_end = right
            while word_end < len(line) and _is_letter(line[word_end]):
                word_end += 1
            l_word, r_word = line[left:mark], line[right:word_end]
            out.append(line[at:left])
            if not l_word or not r_word:
                out.append(line[left:mark] + "-")
                at = mark + 1
                continue
            if r_word[0].isupper() and not l_word.isupper():  # 'Foo-' 'Bar': a compound
                out.append(f"{l_word}-{r_word}")
            else:
                out.append(self.decide(l_word, r_word))
            at = word_end
        out.append(line[at:])
        return "".join(out)

    def join(self, lines: list[str]) -> list[str]:
        lines = [self.marked(ln) for ln in lines]
        out: list[str] = []
        i = 0
        while i < len(lines):
            cur = lines[i].rstrip()
            while i + 1 < len(lines):
                nxt = lines[i + 1].lstrip()
                under = _UNDERSCORE_TAIL.search(cur[-2:]) and _UNDERSCORE_HEAD.match(nxt)
                tail = None
                if not under and cur.endswith("-"):
                    tail = _TAIL_HYPHEN.search(cur, max(0, len(cur) - TAIL_CHARS))
                head = _HEAD_WORD.match(nxt) if tail else None
                if under:
                    self.stats["underscore_joined"] += 1
                    cur, rest = cur + under.group(0), nxt[under.end() :].lstrip()
                elif tail and head:
                    word = self.decide(tail.group(1), head.group(1))
                    cur, rest = cur[: tail.start()] + word + head.group(2), nxt[head.end() :]
                else:
                    break
                i += 1
                if rest:  # the rest of the next line stays a line of its own
                    out.append(cur)
                    cur = rest.rstrip()
                    break
            out.append(cur)
            i += 1
        return out


# ------------------------------------------------------------------ the pipeline


def clean(pages: list[Page]) -> CleanResult:
    """The pages' texts after every rule (see the module's docstring)."""
    result = CleanResult([])
    stats, removed = result.stats, result.removed
    running = find_running_lines(pages)
    pitch = document_pitch(pages)
    page_lines: list[list[str]] = []
    for page in pages:
        kept: list[Line] = []
        leaders = 0
        for line in page.lines:
            why = running.get((page.index, line.order))
            if why is None and is_leader_line(line.text):
                why = "dot_leader"
                leaders += 1
            if why is not None:
                stats[why] += 1
                removed[why].append((page.label, line.text))
            else:
                kept.append(line)
        if leaders >= 5 and leaders >= 0.4 * len(page.lines):  # an index page: its letters go
            letters = [ln for ln in kept if len(ln.text.strip()) <= 2]
            for line in letters:
                stats["index_letter"] += 1
                removed["index_letter"].append((page.label, line.text))
            kept = [ln for ln in kept if len(ln.text.strip()) > 2]
        texts, rows = rebuild_rows(kept, pitch)
        stats["table_rows_rebuilt"] += rows
        page_lines.append(texts)
    hyphens = Hyphens([t for lines in page_lines for t in lines])
    for page, lines in zip(pages, page_lines, strict=True):
        result.pages.append(CleanPage(page, "\n".join(hyphens.join(lines))))
    stats.update(hyphens.stats)
    return result
