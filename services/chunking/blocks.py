"""What every parser yields: blocks of text (a heading, a paragraph run, a code
block, a table, a PDF page) and the document's title. `parsing.assemble`
normalises them into the text that chunk offsets point into."""

from __future__ import annotations

from dataclasses import dataclass, field

TEXT = "text"
#: whitespace kept: lines are only right-stripped (normalize.normalize_code)
CODE = "code"
#: one line per row, cells joined by " | "
TABLE = "table"


@dataclass
class Block:
    text: str
    #: 1-6 for a heading, 0 for body text
    heading_level: int = 0
    #: the heading's own words (without Markdown markers); defaults to `text`
    heading_text: str = ""
    kind: str = TEXT
    #: the physical page (1-based) the block is on, 0 when the format has no pages
    page: int = 0
    #: the page's label (a PDF's /PageLabels), else str(page)
    page_label: str = ""


@dataclass
class Parsed:
    blocks: list[Block]
    title: str = ""
    #: what cleanup rules removed or changed (counts, for logs and benchmarks)
    stats: dict[str, int] = field(default_factory=dict)
