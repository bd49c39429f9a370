"""Parsing documents into normalised text with heading sections and a title.

Every parser yields a list of `Block`s (a heading or a run of body text);
`assemble` normalises each block, joins them with a blank line, and records
the sections: a section starts at a heading (or at the top of the document)
and carries the heading path above it. Chunks never cross a section.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from dataclasses import dataclass, field

from services.chunking import media, office, pdf_clean, pdf_extract
from services.chunking.blocks import CODE, Block, Parsed
from services.chunking.fields import fit_heading_path, truncate_title
from services.chunking.html_parse import parse_html
from services.chunking.normalize import normalize_code, normalize_inline, normalize_text
from services.chunking.pages import PageSpan

__all__ = ["Block", "Document", "ParseLimits", "Parsed", "Section", "assemble", "parse"]

log = logging.getLogger("ragmesh.chunking")


@dataclass(frozen=True)
class Section:
    start: int
    end: int
    heading_path: tuple[str, ...]


@dataclass(frozen=True)
class ParseLimits:
    """Structural limits checked while parsing (settings RAGMESH_CHUNKING_MAX_*)."""

    max_pdf_pages: int = 10_000
    max_html_depth: int = 10_000


@dataclass
class Document:
    """The normalised text that chunk offsets point into."""

    text: str
    sections: list[Section] = field(default_factory=list)
    title: str = ""
    #: where each page's text lies (paginated formats only)
    pages: list[PageSpan] = field(default_factory=list)


BLOCK_SEPARATOR = "\n\n"


def assemble(parsed: Parsed, fallback_title: str = "") -> Document:
    parts: list[str] = []
    sections: list[Section] = []
    stack: list[tuple[int, str]] = []  # (level, heading) from outermost
    pos = 0
    section_start: int | None = None
    path: tuple[str, ...] = ()
    first_heading = ""
    end_of_last = 0
    pages: list[PageSpan] = []
    for block in parsed.blocks:
        text = normalize_code(block.text) if block.kind == CODE else normalize_text(block.text)
        if not text:
            continue
        if parts:
            pos += len(BLOCK_SEPARATOR)
        start = pos
        parts.append(text)
        pos += len(text)
        if block.page:
            label = block.page_label or str(block.page)
            if pages and pages[-1].number == block.page:
                pages[-1] = PageSpan(pages[-1].start, pos, block.page, label)
            else:
                pages.append(PageSpan(start, pos, block.page, label))
        heading = normalize_inline(block.heading_text or text) if block.heading_level else ""
        if heading:  # an empty heading (`#` alone) opens no section
            first_heading = first_heading or heading
            if section_start is not None:
                sections.append(Section(section_start, end_of_last, path))
            while stack and stack[-1][0] >= block.heading_level:
                stack.pop()
            stack.append((block.heading_level, heading))
            path = fit_heading_path(tuple(h for _, h in stack))
            section_start = start
        elif section_start is None:
            section_start = start
        end_of_last = pos
    if section_start is not None:
        sections.append(Section(section_start, pos, path))
    title = normalize_inline(parsed.title) or first_heading or normalize_inline(fallback_title)
    return Document(BLOCK_SEPARATOR.join(parts), sections, truncate_title(title), pages)


# --- plain text ------------------------------------------------------------


def parse_plain(text: str) -> Parsed:
    return Parsed([Block(text)])


# --- Markdown ----------------------------------------------------------------
#
# A line scanner for the CommonMark block structure that decides headings:
# ATX (`## x`) and setext (`x` over `===`/`---`) headings, fenced code blocks
# (``` and ~~~, where `#` lines are code) and indented code. markdown-it-py
# parses the same headings (tests/unit/test_chunking_parsing.py checks the two
# agree) but at ~0.3 MB/s on this machine; this is two orders of magnitude
# faster, which matters for 32 MiB documents.

_LIST_OR_QUOTE = re.compile(r" {0,3}(?:[-+*>]|\d{1,9}[.)])(?:[ \t]|$)")
# Lines are otherwise read with string operations, linear on any line
# (tests/unit/test_chunking_linear.py): the regex `[ \t]+(.*?)(?:[ \t]+#+)?[ \t]*$`
# this scanner used for ATX headings backtracked quadratically over a run of
# spaces (`# a` + 16,000 spaces + `b`: 2.3 s).


def _unindented(line: str) -> str:
    """The line without its indentation of up to 3 spaces; "" if indented more."""
    body = line.lstrip(" ")
    return body if len(line) - len(body) <= 3 else ""


def _atx_heading(line: str) -> tuple[int, str] | None:
    """(level, text) of an ATX heading line (`## text ##`), or None."""
    body = _unindented(line)
    if not body.startswith("#"):
        return None
    rest = body.lstrip("#")
    level = len(body) - len(rest)
    if level > 6 or (rest and rest[0] not in " \t"):
        return None
    text = rest.strip(" \t")
    unclosed = text.rstrip("#")
    # A closing run of #s counts only after a space (or as the whole content).
    if not unclosed or unclosed[-1] in " \t":
        text = unclosed.rstrip(" \t")
    return level, text.strip()


def _setext_level(line: str) -> int:
    """1 for a `===` underline, 2 for `---`, else 0."""
    body = _unindented(line)
    if not body or body[0] not in "=-":
        return 0
    if body.rstrip(" \t").lstrip(body[0]):
        return 0
    return 1 if body[0] == "=" else 2


def _fence(line: str) -> tuple[str, str] | None:
    """(fence, info string) of a line opening a fenced code block, or None."""
    body = _unindented(line)
    if not body or body[0] not in "`~":
        return None
    info = body.lstrip(body[0])
    run = len(body) - len(info)
    return (body[:run], info) if run >= 3 else None


def _thematic_break(line: str) -> bool:
    """`***`, `- - -`, `___`: three or more of one marker, spaces and tabs between."""
    body = _unindented(line)
    if not body or body[0] not in "-*_":
        return False
    marks = body.replace(" ", "").replace("\t", "")
    return len(marks) >= 3 and not marks.lstrip(body[0])


def _markdown_headings(lines: list[str]) -> Iterator[tuple[int, int, int, str]]:
    """(first line, line after, level, heading text) for each heading."""
    fence: str | None = None
    para_start: int | None = None  # first line of the paragraph being read
    for i, line in enumerate(lines):
        if fence is not None:
            stripped = line.strip()
            if stripped.startswith(fence) and set(stripped) == {fence[0]}:
                fence = None
            continue
        opened = _fence(line)
        if opened is not None and not (opened[0][0] == "`" and "`" in opened[1]):
            fence = opened[0]
            para_start = None
            continue
        if not line.strip():
            para_start = None
            continue
        if para_start is None and (line.startswith("    ") or line.startswith("\t")):
            continue  # indented code (cannot interrupt a paragraph)
        atx = _atx_heading(line)
        if atx is not None:
            yield i, i + 1, atx[0], atx[1]
            para_start = None
            continue
        level = _setext_level(line)
        if level and para_start is not None:
            text = " ".join(x.strip() for x in lines[para_start:i])
            yield para_start, i + 1, level, text
            para_start = None
            continue
        if _thematic_break(line) or _LIST_OR_QUOTE.match(line):
            # A list item or quote is not a paragraph a setext underline can turn
            # into a heading (the underline would be inside the container).
            para_start = None
            continue
        if para_start is None:
            para_start = i


def parse_markdown(text: str) -> Parsed:
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    blocks: list[Block] = []
    title = ""
    at = 0
    for first, after, level, heading in _markdown_headings(lines):
        if first > at:
            blocks.append(Block("\n".join(lines[at:first])))
        blocks.append(Block("\n".join(lines[first:after]), level, heading or " "))
        if level == 1 and not title:
            title = heading
        at = after
    if at < len(lines):
        blocks.append(Block("\n".join(lines[at:])))
    return Parsed(blocks, title)


# --- PDF -------------------------------------------------------------------------


def parse_pdf(data: bytes, max_pages: int = ParseLimits.max_pdf_pages) -> Parsed:
    """A block per page, after the cleanup rules (services/chunking/pdf_clean.py)."""
    pages, title = pdf_extract.extract(data, max_pages)
    cleaned = pdf_clean.clean(pages)
    blocks = [Block(p.text, page=p.page.number, page_label=p.page.label) for p in cleaned.pages]
    return Parsed(blocks, title, dict(cleaned.stats))


def parse(
    content: bytes | str,
    media_type: str,
    charset: str | None = None,
    limits: ParseLimits | None = None,
) -> tuple[Parsed, int]:
    """Parse by media type; returns the blocks and the invalid-UTF-8 replacement count."""
    limits = limits or ParseLimits()
    if media_type == media.PDF:
        assert isinstance(content, bytes)
        return parse_pdf(content, limits.max_pdf_pages), 0
    if media_type in (media.DOCX, media.ODT):
        assert isinstance(content, bytes)
        return office.parse_office(content, media_type), 0
    if isinstance(content, bytes):
        text, replaced = media.decode_text(content, charset)
    else:
        text, replaced = content, 0
    if media_type == media.MARKDOWN:
        return parse_markdown(text), replaced
    if media_type == media.HTML:
        return parse_html(text, limits.max_html_depth), replaced
    return parse_plain(text), replaced
