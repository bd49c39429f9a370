"""The page map of a paginated document (PDF): which pages a span of the
normalised text lies on, and how a citation names them ("22", "22–23").

`assemble` records one `PageSpan` per page that kept text: its [start, end)
in the normalised text, its physical number and its label (the PDF's own
/PageLabels, else the physical number). A chunk's pages are the spans its
offsets overlap; the label text is the first page's label, or "first–last"
when the chunk runs onto later pages.
"""

from __future__ import annotations

from bisect import bisect_right
from dataclasses import dataclass

EN_DASH = "\u2013"


@dataclass(frozen=True)
class PageSpan:
    start: int
    end: int
    #: physical page number, 1-based
    number: int
    label: str


@dataclass(frozen=True)
class PageRange:
    """Pages a span lies on: physical numbers (0 when unknown) and the label text."""

    start: int = 0
    end: int = 0
    label: str = ""


NO_PAGES = PageRange()


def page_label(first: str, last: str) -> str:
    return first if first == last else f"{first}{EN_DASH}{last}"


class PageMap:
    """The page spans of a document, searchable by offset."""

    def __init__(self, spans: list[PageSpan]) -> None:
        self.spans = spans
        self._starts = [s.start for s in spans]

    def range(self, start: int, end: int) -> PageRange:
        """The pages [start, end) overlaps (a binary search on the page map)."""
        spans = self.spans
        if not spans:
            return NO_PAGES
        i = max(0, bisect_right(self._starts, start) - 1)
        first: PageSpan | None = None
        last: PageSpan | None = None
        while i < len(spans) and spans[i].start < max(end, start + 1):
            if spans[i].end > start:
                first = first or spans[i]
                last = spans[i]
            i += 1
        if first is None or last is None:
            return NO_PAGES
        return PageRange(first.number, last.number, page_label(first.label, last.label))


def citation_pages(page_start: int, page_end: int, label: str) -> str:
    """ "p. 22" or "pp. 22–23" ("" without pages)."""
    if not page_start:
        return ""
    text = label or page_label(str(page_start), str(page_end or page_start))
    return f"pp. {text}" if EN_DASH in text else f"p. {text}"
