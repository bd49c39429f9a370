"""Parsing documents into normalised text with heading sections and a title.

Every parser yields a list of `Block`s (a heading or a run of body text);
`assemble` normalises each block, joins them with a blank line, and records
the sections: a section starts at a heading (or at the top of the document)
and carries the heading path above it. Chunks never cross a section.
"""

from __future__ import annotations

import io
import logging
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from services.chunking import html_depth, media
from services.chunking.fields import fit_heading_path, truncate_title
from services.chunking.normalize import normalize_inline, normalize_text
from services.common.errors import InvalidArgument

if TYPE_CHECKING:
    from pypdf import PdfReader
    from selectolax.lexbor import LexborHTMLParser

log = logging.getLogger("ragmesh.chunking")


@dataclass
class Block:
    text: str
    #: 1-6 for a heading, 0 for body text
    heading_level: int = 0
    #: the heading's own words (without Markdown markers); defaults to `text`
    heading_text: str = ""


@dataclass
class Parsed:
    blocks: list[Block]
    title: str = ""


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
    for block in parsed.blocks:
        text = normalize_text(block.text)
        if not text:
            continue
        if parts:
            pos += len(BLOCK_SEPARATOR)
        start = pos
        parts.append(text)
        pos += len(text)
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
    return Document(BLOCK_SEPARATOR.join(parts), sections, truncate_title(title))


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


# --- HTML ----------------------------------------------------------------------

_DROPPED = ["script", "style", "noscript", "template", "svg", "iframe", "object", "head"]
_HEADINGS = {"h1": 1, "h2": 2, "h3": 3, "h4": 4, "h5": 5, "h6": 6}
_PARAGRAPH_TAGS = frozenset(
    [
        "p",
        "div",
        "section",
        "article",
        "main",
        "header",
        "footer",
        "nav",
        "aside",
        "blockquote",
        "pre",
        "table",
        "ul",
        "ol",
        "dl",
        "figure",
        "figcaption",
        "form",
        "fieldset",
        "address",
        "details",
        "summary",
        "hr",
        "body",
    ]
)
_LINE_TAGS = frozenset(["li", "tr", "dt", "dd", "caption", "option"])
_CELL_TAGS = frozenset(("td", "th"))
_WS = re.compile(r"\s+")


def _html_tree(text: str, max_depth: int) -> LexborHTMLParser:
    from selectolax.lexbor import LexborHTMLParser, SelectolaxError

    if html_depth.exceeds(text, max_depth):
        raise InvalidArgument(
            f"the HTML nests elements more than {max_depth} deep "
            "(RAGMESH_CHUNKING_MAX_HTML_DEPTH); parsing it would take too long",
            reason="DOCUMENT_TOO_COMPLEX",
            metadata={"limit": "max_html_depth", "max_html_depth": max_depth},
        )
    try:
        return LexborHTMLParser(text)
    except SelectolaxError as exc:  # lexbor parses any markup; it fails only out of memory
        raise InvalidArgument(
            f"the HTML parser gave up on this document ({exc}): it needs more memory "
            "than a chunking worker has (RAGMESH_CHUNKING_WORKER_MEMORY_MB)",
            reason="DOCUMENT_TOO_COMPLEX",
            metadata={"limit": "worker_memory_mb"},
        ) from None


def parse_html(text: str, max_depth: int = ParseLimits.max_html_depth) -> Parsed:  # noqa: C901 - one walk over the HTML tree, a case per element kind
    tree = _html_tree(text, max_depth)
    title_node = tree.css_first("title")
    title = title_node.text(deep=True) if title_node is not None else ""
    tree.strip_tags(_DROPPED)
    root = tree.body or tree.root
    blocks: list[Block] = []
    if root is None:
        return Parsed(blocks, title)
    buffer: list[str] = []

    def flush() -> None:
        if buffer:
            blocks.append(Block("".join(buffer)))
            buffer.clear()

    # Iterative depth-first walk: deeply nested HTML must not hit the recursion limit.
    stack: list[tuple[object, bool]] = [(root, False)]
    pre_depth = 0
    while stack:
        node, leaving = stack.pop()
        tag: str = node.tag  # type: ignore[attr-defined]
        if leaving:
            if tag == "pre":
                pre_depth -= 1
            if tag in _PARAGRAPH_TAGS:
                buffer.append("\n\n")
            elif tag in _LINE_TAGS:
                buffer.append("\n")
            continue
        if tag == "-text":
            value: str = node.text(deep=False)  # type: ignore[attr-defined]
            buffer.append(value if pre_depth else _WS.sub(" ", value))
            continue
        if tag.startswith("-"):  # comments, doctype
            continue
        level = _HEADINGS.get(tag)
        if level:
            flush()
            heading = node.text(deep=True, separator=" ")  # type: ignore[attr-defined]
            blocks.append(Block(heading, level))
            continue
        if tag == "br":
            buffer.append("\n")
            continue
        if tag in _CELL_TAGS:
            buffer.append(" ")
        elif tag in _PARAGRAPH_TAGS:
            buffer.append("\n\n")
        elif tag in _LINE_TAGS and buffer and not buffer[-1].endswith("\n"):
            buffer.append("\n")  # one line break between list items, not two
        if tag == "pre":
            pre_depth += 1
        stack.append((node, True))
        children = list(node.iter(include_text=True))  # type: ignore[attr-defined]
        stack.extend((child, False) for child in reversed(children))
    flush()
    return Parsed(blocks, title)


# --- PDF -------------------------------------------------------------------------


def _too_complex_pdf(exc: BaseException, where: str = "") -> InvalidArgument:
    """A PDF over pypdf's own limits (a decompression bomb: a stream inflating past
    75 MB) or nested deeper than Python's recursion limit."""
    return InvalidArgument(
        f"the PDF is too complex to read{where}: {type(exc).__name__}: {exc}",
        reason="DOCUMENT_TOO_COMPLEX",
        metadata={"limit": "pdf_structure"},
    )


def _declared_pages(reader: PdfReader) -> int | None:
    """The page tree's /Count, read without loading every page (None if unreadable)."""
    try:
        root: Any = reader.trailer["/Root"]
        return int(root["/Pages"]["/Count"])
    except Exception:
        return None


def _too_many_pages(count: int, max_pages: int) -> InvalidArgument:
    return InvalidArgument(
        f"the PDF has {count} pages; at most {max_pages} are read (RAGMESH_CHUNKING_MAX_PDF_PAGES)",
        reason="DOCUMENT_TOO_COMPLEX",
        metadata={"limit": "max_pdf_pages", "pages": count, "max_pdf_pages": max_pages},
    )


def parse_pdf(data: bytes, max_pages: int = ParseLimits.max_pdf_pages) -> Parsed:  # noqa: C901 - one case per failure kind
    from pypdf import PdfReader
    from pypdf.errors import DependencyError, FileNotDecryptedError, LimitReachedError

    # pypdf logs every recoverable oddity; one summary error is enough here.
    logging.getLogger("pypdf").setLevel(logging.ERROR)
    try:
        reader = PdfReader(io.BytesIO(data), strict=False)
        if reader.is_encrypted:
            try:
                if not reader.decrypt(""):
                    raise FileNotDecryptedError("a password is required")
            except (FileNotDecryptedError, DependencyError, NotImplementedError) as exc:
                raise InvalidArgument(
                    f"the PDF is encrypted and cannot be read: {exc}",
                    reason="ENCRYPTED_DOCUMENT",
                ) from None
        declared = _declared_pages(reader)
        if declared is not None and declared > max_pages:
            raise _too_many_pages(declared, max_pages)
        pages = reader.pages
        count = len(pages)  # loads the page tree: /Count may lie
    except (InvalidArgument, MemoryError):
        raise
    except (LimitReachedError, RecursionError) as exc:
        raise _too_complex_pdf(exc) from None
    except Exception as exc:  # pypdf raises many types on broken files
        raise InvalidArgument(
            f"corrupt PDF: {type(exc).__name__}: {exc}", reason="CORRUPT_DOCUMENT"
        ) from None
    if count > max_pages:
        raise _too_many_pages(count, max_pages)
    blocks: list[Block] = []
    for number in range(count):
        try:
            page_text = pages[number].extract_text()
        except MemoryError:
            raise
        except (LimitReachedError, RecursionError) as exc:
            raise _too_complex_pdf(exc, f" (page {number + 1} of {count})") from None
        except Exception as exc:
            raise InvalidArgument(
                f"corrupt PDF: page {number + 1} of {count}: {type(exc).__name__}: {exc}",
                reason="CORRUPT_DOCUMENT",
                metadata={"page": number + 1},
            ) from None
        blocks.append(Block(page_text or ""))
    title = ""
    try:
        meta = reader.metadata
        title = str(meta.title or "") if meta is not None else ""
    except Exception:  # a broken info dictionary only loses the title
        log.info("PDF metadata unreadable; title falls back")
    return Parsed(blocks, title)


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
    if isinstance(content, bytes):
        text, replaced = media.decode_text(content, charset)
    else:
        text, replaced = content, 0
    if media_type == media.MARKDOWN:
        return parse_markdown(text), replaced
    if media_type == media.HTML:
        return parse_html(text, limits.max_html_depth), replaced
    return parse_plain(text), replaced
