"""The parsers ragmesh had before the documents work, as the "before" of
benchmarks/bench_documents.py: pypdf's `extract_text()` page by page (no
cleanup, no pages), and the HTML walk over the whole `<body>` (navigation,
headers and footers included; `<pre>` whitespace collapsed into lines).

Copied from services/chunking/parsing.py at commit 07869ee, trimmed of its
error handling (the benchmark's documents are well-formed).
"""

from __future__ import annotations

import io
import logging
import re

from selectolax.lexbor import LexborHTMLParser

from services.chunking.blocks import Block, Parsed

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


def parse_html(text: str) -> Parsed:  # noqa: C901 - one walk over the HTML tree, a case per element kind
    tree = LexborHTMLParser(text)
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


def parse_pdf(data: bytes) -> Parsed:
    """pypdf's text of each page, one block per page (as before: no cleanup, no pages)."""
    from pypdf import PdfReader

    logging.getLogger("pypdf").setLevel(logging.ERROR)
    reader = PdfReader(io.BytesIO(data), strict=False)
    blocks = [Block(page.extract_text() or "") for page in reader.pages]
    title = str(reader.metadata.title or "") if reader.metadata is not None else ""
    return Parsed(blocks, title)
