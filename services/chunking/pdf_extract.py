"""Reading a PDF's text with its geometry: pypdfium2 (PDFium, Apache-2.0/BSD-3).

Each page becomes a list of `Line`s in content order, each with the box of its
first and last character, plus the page's label (the PDF's /PageLabels, e.g.
"22" for the 25th page of a manual with roman front matter; the physical page
number where the PDF defines none). The cleanup rules (services/chunking/
pdf_clean.py) use the geometry to find running headers and footers, page
numbers and tables drawn cell by cell.

Why PDFium: the same words as pypdf on real manuals, 7-10x faster, and it gives
character boxes, page labels and marked line-end hyphens (U+FFFE). It has no
decompression limits of its own and aborts the process when an allocation
fails, so it only runs inside a chunking worker process (services/chunking/
pool.py), under the worker's memory cap and time budget; and before PDFium
sees the file, `check_streams` inflates every Flate stream once, bounded, so
that a decompression bomb is refused in a fraction of a second with a precise
reason instead of a killed worker.
"""

from __future__ import annotations

import logging
import re
import zlib
from dataclasses import dataclass, field
from typing import Any

from services.common.errors import InvalidArgument

log = logging.getLogger("ragmesh.chunking")

#: The most bytes one stream may inflate to (pypdf's own limit is 75 MB).
MAX_STREAM_BYTES = 75 * 1024 * 1024
#: ... and all streams together.
MAX_INFLATED_BYTES = 1024 * 1024 * 1024
_STREAM = re.compile(rb"stream\r?\n")
_IMAGE = re.compile(rb"/Subtype\s*/Image")
#: How far back from a `stream` keyword its dictionary is looked for.
_DICT_WINDOW = 4096
_PIECE = 64 * 1024
_LINE_SPLIT = re.compile(r"\r\n|\n|\r")


@dataclass
class Line:
    """One line of a page in content order; PDF user space (y grows upwards)."""

    text: str
    x0: float = 0.0
    x1: float = 0.0
    top: float = 0.0
    bottom: float = 0.0
    order: int = 0


@dataclass
class Page:
    index: int  # 0-based physical page
    label: str  # /PageLabels label, else str(index + 1)
    lines: list[Line] = field(default_factory=list)

    @property
    def number(self) -> int:
        """The physical page number, 1-based."""
        return self.index + 1


def too_complex(detail: str, **metadata: Any) -> InvalidArgument:
    return InvalidArgument(
        f"the PDF is too complex to read: {detail}",
        reason="DOCUMENT_TOO_COMPLEX",
        metadata={"limit": "pdf_structure", **metadata},
    )


def _inflated_size(data: bytes, start: int, limit: int) -> int:
    """How many bytes the zlib stream at `start` inflates to, stopping past `limit`
    (-1 when it is not a zlib stream). Constant memory: the output is dropped."""
    inflater = zlib.decompressobj()
    total = 0
    pos = start
    end = len(data)
    while pos < end:
        piece = data[pos : pos + _PIECE]
        pos += len(piece)
        try:
            out = inflater.decompress(piece, _PIECE)
            total += len(out)
            while inflater.unconsumed_tail and total <= limit:
                out = inflater.decompress(inflater.unconsumed_tail, _PIECE)
                total += len(out)
        except zlib.error:
            return total if total else -1
        if total > limit or inflater.eof:
            return total
    return total


def check_streams(
    data: bytes, max_stream: int = MAX_STREAM_BYTES, max_total: int = MAX_INFLATED_BYTES
) -> None:
    """Refuse a PDF whose Flate streams inflate past the limits (DOCUMENT_TOO_COMPLEX).

    Every `stream` keyword starts a candidate; a candidate that is not zlib data
    (an uncompressed stream) costs one failed header check. Image streams are
    skipped: text extraction never decodes them, and a large scanned page is a
    legitimate image. Streams inside object streams are inside a Flate stream and
    are counted with it.
    """
    total = 0
    for match in _STREAM.finditer(data):
        start = match.end()
        header = data[start : start + 2]
        if len(header) < 2 or (header[0] & 0x0F) != 8 or (header[0] << 8 | header[1]) % 31:
            continue  # not a zlib header: JPEG data, an uncompressed stream
        head = data[max(0, match.start() - _DICT_WINDOW) : match.start()]
        if _IMAGE.search(head, max(0, head.rfind(b"obj"))):
            continue  # an image's pixels: never decoded to read text
        size = _inflated_size(data, start, max_stream)
        if size > max_stream:
            raise too_complex(
                f"a stream inflates past {max_stream} bytes (a decompression bomb)",
                max_stream_bytes=max_stream,
            )
        total += max(size, 0)
        if total > max_total:
            raise too_complex(
                f"its streams inflate past {max_total} bytes in all", max_inflated_bytes=max_total
            )


def _too_many_pages(count: int, max_pages: int) -> InvalidArgument:
    return InvalidArgument(
        f"the PDF has {count} pages; at most {max_pages} are read (RAGMESH_CHUNKING_MAX_PDF_PAGES)",
        reason="DOCUMENT_TOO_COMPLEX",
        metadata={"limit": "max_pdf_pages", "pages": count, "max_pdf_pages": max_pages},
    )


def _open(data: bytes) -> Any:
    import pypdfium2 as pdfium
    from pypdfium2 import raw

    try:
        return pdfium.PdfDocument(data)
    except pdfium.PdfiumError as exc:
        code = getattr(exc, "err_code", None)
        if code in (raw.FPDF_ERR_PASSWORD, raw.FPDF_ERR_SECURITY):
            raise InvalidArgument(
                f"the PDF is encrypted and cannot be read: {exc}", reason="ENCRYPTED_DOCUMENT"
            ) from None
        raise InvalidArgument(f"corrupt PDF: {exc}", reason="CORRUPT_DOCUMENT") from None


def _page_lines(textpage: Any) -> list[Line]:
    """The page's lines in content order with their boxes (PDFium's text index is
    its character index, generated line breaks included)."""
    text: str = textpage.get_text_range()
    lines: list[Line] = []
    pos = 0
    for order, raw_line in enumerate(_LINE_SPLIT.split(text)):
        start = pos
        pos += len(raw_line)
        if text.startswith("\r\n", pos):
            pos += 2
        elif pos < len(text):
            pos += 1
        stripped = raw_line.strip()
        if not stripped:
            continue
        first = start + (len(raw_line) - len(raw_line.lstrip()))
        last = start + len(raw_line.rstrip()) - 1
        try:
            lx0, lb, _, lt = textpage.get_charbox(first)
            _, rb, rx1, rt = textpage.get_charbox(last)
        except Exception:  # a box PDFium cannot give: the line keeps no geometry
            lx0 = lb = rx1 = lt = rb = rt = 0.0
        lines.append(Line(raw_line, lx0, rx1, max(lt, rt), min(lb, rb), order))
    return lines


def extract(data: bytes, max_pages: int) -> tuple[list[Page], str]:
    """(pages with their lines, metadata title). Raises InvalidArgument."""
    check_streams(data)
    pdf = _open(data)
    try:
        count = len(pdf)
        if count > max_pages:
            raise _too_many_pages(count, max_pages)
        pages: list[Page] = []
        for index in range(count):
            try:
                page = pdf[index]
                textpage = page.get_textpage()
                try:
                    lines = _page_lines(textpage)
                finally:
                    textpage.close()
                    page.close()
            except Exception as exc:
                raise InvalidArgument(
                    f"corrupt PDF: page {index + 1} of {count}: {type(exc).__name__}: {exc}",
                    reason="CORRUPT_DOCUMENT",
                    metadata={"page": index + 1},
                ) from None
            label = ""
            try:
                label = pdf.get_page_label(index) or ""
            except Exception:  # a broken /PageLabels tree only loses the label
                label = ""
            pages.append(Page(index, label.strip()[:32] or str(index + 1), lines))
        title = ""
        try:
            title = str(pdf.get_metadata_dict().get("Title") or "")
        except Exception:
            log.info("PDF metadata unreadable; title falls back")
        return pages, title
    finally:
        pdf.close()
