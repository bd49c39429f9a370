"""Word (.docx) and OpenDocument text (.odt) documents to blocks: headings with
their levels (heading paths), paragraphs, tables as rows.

The XML is read straight from the ZIP container with the standard library;
python-docx and odfpy were measured to load every referenced part (a 1 GiB
image cost them 2 GB and 8 s) and give no offsets. Limits, checked before
anything is inflated and again while streaming:

- at most `MAX_ENTRIES` entries (read from the end-of-central-directory record
  before `zipfile` builds its list);
- only the parts that hold text are opened (`word/document.xml` and
  `word/styles.xml`; `content.xml`): images and embedded objects are never
  inflated, so a huge or bomb image costs nothing;
- a part may declare at most `MAX_PART_BYTES` and a ratio of at most
  `MAX_RATIO`:1, and is read in 64 KiB pieces and abandoned past
  `MAX_PART_BYTES` whatever its header said (`zipfile` also checks the CRC);
- an encrypted part is ENCRYPTED_DOCUMENT;
- XML with a DOCTYPE or an entity declaration (billion laughs, external
  entities: Office parts never have one) is refused before parsing; parsing is
  streaming (`iterparse`), each element cleared when it closes.

DOCX: paragraph styles named "heading N" (or with an outline level) are
headings, "Title" is the title; `w:del`, field codes and table-of-contents
content controls are skipped; headers and footers (separate parts) are not
read. ODT: `text:h` with its outline level; tables of contents, indexes, notes,
annotations and tracked changes are skipped. Nested tables fold into their
outer cell. `number-columns-repeated` is capped.
"""

from __future__ import annotations

import io
import re
import struct
import zipfile
from collections.abc import Iterator
from typing import Any
from xml.etree import ElementTree as ET

from services.chunking import media
from services.chunking.blocks import TABLE, Block, Parsed
from services.common.errors import InvalidArgument

MAX_ENTRIES = 10_000
MAX_PART_BYTES = 64 * 1024 * 1024
MAX_RATIO = 200  # document.xml compresses 5-30:1; a bomb of zeros ~1000:1
MAX_REPEATED_COLUMNS = 64
_PIECE = 64 * 1024
_EOCD = b"PK\x05\x06"
_DTD = re.compile(rb"<!(?:DOCTYPE|ENTITY)", re.IGNORECASE)

W = "{http://schemas.openxmlformats.org/wordprocessingml/2006/main}"
TEXT = "{urn:oasis:names:tc:opendocument:xmlns:text:1.0}"
TABLE_NS = "{urn:oasis:names:tc:opendocument:xmlns:table:1.0}"
OFFICE = "{urn:oasis:names:tc:opendocument:xmlns:office:1.0}"


def _too_complex(message: str, limit: str, **metadata: Any) -> InvalidArgument:
    return InvalidArgument(
        message, reason="DOCUMENT_TOO_COMPLEX", metadata={"limit": limit, **metadata}
    )


def _corrupt(message: str) -> InvalidArgument:
    return InvalidArgument(f"corrupt document: {message}", reason="CORRUPT_DOCUMENT")


def declared_entries(data: bytes) -> int | None:
    """The entry count of the end-of-central-directory record (None if none found)."""
    at = data.rfind(_EOCD, max(0, len(data) - 65_557))
    if at < 0 or at + 22 > len(data):
        return None
    return int(struct.unpack_from("<H", data, at + 10)[0])


def open_zip(data: bytes) -> zipfile.ZipFile:
    declared = declared_entries(data)
    if declared is not None and declared > MAX_ENTRIES:
        raise _too_complex(
            f"the container has {declared} entries; at most {MAX_ENTRIES} are read",
            "zip_entries",
            entries=declared,
        )
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except (zipfile.BadZipFile, ValueError, NotImplementedError) as exc:
        raise _corrupt(f"not a readable ZIP container ({exc})") from None
    count = len(archive.infolist())
    if count > MAX_ENTRIES:  # ZIP64 or a lying record
        raise _too_complex(
            f"the container has {count} entries; at most {MAX_ENTRIES} are read",
            "zip_entries",
            entries=count,
        )
    return archive


def read_part(archive: zipfile.ZipFile, name: str) -> bytes | None:
    """A part's bytes within the limits, or None when the container has no such part."""
    try:
        info = archive.getinfo(name)
    except KeyError:
        return None
    if info.flag_bits & 0x1:
        raise InvalidArgument(
            f"the document is encrypted ({name}) and cannot be read", reason="ENCRYPTED_DOCUMENT"
        )
    if info.file_size > MAX_PART_BYTES:
        raise _too_complex(
            f"{name} declares {info.file_size} bytes; at most {MAX_PART_BYTES} are read",
            "zip_part_bytes",
            part=name,
        )
    if info.compress_size and info.file_size / info.compress_size > MAX_RATIO:
        raise _too_complex(
            f"{name} declares a compression ratio over {MAX_RATIO}:1 (a decompression bomb)",
            "zip_ratio",
            part=name,
        )
    out = bytearray()
    try:
        with archive.open(info) as part:
            while piece := part.read(_PIECE):
                out += piece
                if len(out) > MAX_PART_BYTES:
                    raise _too_complex(
                        f"{name} inflates past {MAX_PART_BYTES} bytes", "zip_part_bytes", part=name
                    )
    except (zipfile.BadZipFile, EOFError, OSError, ValueError, NotImplementedError) as exc:
        raise _corrupt(f"{name}: {exc}") from None
    return bytes(out)


def _events(xml: bytes) -> Iterator[tuple[str, ET.Element]]:
    if _DTD.search(xml):
        raise _corrupt("an Office part with a DOCTYPE or entity declaration")
    try:
        yield from ET.iterparse(io.BytesIO(xml), events=("start", "end"))
    except ET.ParseError as exc:
        raise _corrupt(f"malformed XML ({exc})") from None


# ------------------------------------------------------------------ DOCX


def docx_heading_styles(styles: bytes | None) -> dict[str, int]:
    """styleId → heading level (names "heading N", outline levels); -1 for "Title"."""
    levels: dict[str, int] = {}
    if not styles:
        return levels
    for event, el in _events(styles):
        if event != "end" or el.tag != f"{W}style":
            continue
        if el.get(f"{W}type") == "paragraph":
            style_id = el.get(f"{W}styleId") or ""
            name_el = el.find(f"{W}name")
            name = (name_el.get(f"{W}val") if name_el is not None else "") or ""
            outline = el.find(f"{W}pPr/{W}outlineLvl")
            heading = re.fullmatch(r"(?i)heading\s*([1-9])", name)
            if heading:
                levels[style_id] = int(heading.group(1))
            elif name.lower() == "title":
                levels[style_id] = -1
            elif outline is not None and (outline.get(f"{W}val") or "9") in "012345678":
                levels[style_id] = int(outline.get(f"{W}val") or "9") + 1
        el.clear()
    return levels


class _Tables:
    """Rows of the outermost table being read (nested tables fold into their cell)."""

    def __init__(self) -> None:
        self.depth = 0
        self.rows: list[str] = []
        self.row: list[str] = []
        self.cell: list[str] = []

    def open_table(self) -> None:
        self.depth += 1
        if self.depth == 1:
            self.rows = []

    def close_table(self, blocks: list[Block]) -> None:
        self.depth -= 1
        if self.depth == 0 and self.rows:
            blocks.append(Block("\n".join(self.rows), kind=TABLE))

    def close_cell(self, repeat: int = 1) -> None:
        value = " ".join(t.strip() for t in self.cell if t.strip())
        self.row.extend([value] * (repeat if value else 1))
        self.cell = []

    def close_row(self) -> None:
        while self.row and not self.row[-1]:
            self.row.pop()
        if any(self.row):
            self.rows.append(" | ".join(self.row))
        self.row = []


_DOCX_SKIPPED = frozenset({f"{W}del", f"{W}instrText", f"{W}delText"})


def parse_docx(data: bytes) -> Parsed:  # noqa: C901, PLR0912, PLR0915 - one streaming pass, a case per element
    archive = open_zip(data)
    document = read_part(archive, "word/document.xml")
    if document is None:
        raise _corrupt("a Word document without word/document.xml")
    styles = docx_heading_styles(read_part(archive, "word/styles.xml"))
    blocks: list[Block] = []
    tables = _Tables()
    para: list[str] = []
    level = 0
    skip = 0
    toc: list[bool] = []  # per open content control: is it a table of contents?
    title = ""
    for event, el in _events(document):
        tag = el.tag
        if event == "start":
            if tag in _DOCX_SKIPPED:
                skip += 1
            elif tag == f"{W}sdt":
                toc.append(False)
            elif tag == f"{W}docPartGallery" and toc and not toc[-1]:
                if "table of contents" in (el.get(f"{W}val") or "").lower():
                    toc[-1] = True
                    skip += 1
            elif tag == f"{W}p":
                para, level = [], 0
            elif tag == f"{W}tbl":
                tables.open_table()
            continue
        if tag in _DOCX_SKIPPED:
            skip -= 1
        elif tag == f"{W}sdt":
            if toc and toc.pop():
                skip -= 1
        elif skip:
            pass
        elif tag == f"{W}t":
            para.append(el.text or "")
        elif tag == f"{W}tab":
            para.append("\t")
        elif tag in (f"{W}br", f"{W}cr"):
            para.append("\n")
        elif tag == f"{W}noBreakHyphen":
            para.append("-")
        elif tag == f"{W}pStyle":
            level = styles.get(el.get(f"{W}val") or "", 0)
        elif tag == f"{W}outlineLvl" and (el.get(f"{W}val") or "9") in "012345678":
            level = int(el.get(f"{W}val") or "9") + 1
        elif tag == f"{W}p":
            text = "".join(para)
            if tables.depth:
                tables.cell.append(text)
            elif level == -1:
                title = title or text.strip()
                blocks.append(Block(text))
            elif text.strip():
                blocks.append(Block(text, max(0, min(level, 6))))
        elif tag == f"{W}tc" and tables.depth == 1:
            tables.close_cell()
        elif tag == f"{W}tr" and tables.depth == 1:
            tables.close_row()
        elif tag == f"{W}tbl":
            tables.close_table(blocks)
        el.clear()
    return Parsed(blocks, title)


# ------------------------------------------------------------------ ODT

_ODT_SKIPPED = frozenset(
    {
        f"{TEXT}table-of-content",
        f"{TEXT}alphabetical-index",
        f"{TEXT}illustration-index",
        f"{TEXT}table-index",
        f"{TEXT}bibliography",
        f"{TEXT}tracked-changes",
        f"{TEXT}note",
        f"{OFFICE}annotation",
    }
)
_PARAGRAPHS = (f"{TEXT}p", f"{TEXT}h")


def _odt_inline(el: ET.Element) -> str:
    tag = el.tag
    if tag == f"{TEXT}s":
        count = el.get(f"{TEXT}c") or "1"
        return " " * min(int(count) if count.isdigit() else 1, 1024)
    if tag == f"{TEXT}tab":
        return "\t"
    if tag == f"{TEXT}line-break":
        return "\n"
    if tag in _PARAGRAPHS:  # a paragraph in a frame inside a paragraph
        return " " + (el.text or "")
    return el.text or ""


def _odt_text(paragraph: ET.Element) -> str:
    """A paragraph's text in document order: its text, each child's text, children
    and tail (iteratively); skipped elements (notes, annotations) leave their tail."""
    out = [paragraph.text or ""]
    stack: list[ET.Element | str] = list(reversed(list(paragraph)))
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            out.append(item)
            continue
        stack.append(item.tail or "")
        if item.tag in _ODT_SKIPPED:
            continue
        out.append(_odt_inline(item))
        stack.extend(reversed(list(item)))
    return "".join(out)


def parse_odt(data: bytes) -> Parsed:  # noqa: C901, PLR0912 - one streaming pass, a case per element
    archive = open_zip(data)
    content = read_part(archive, "content.xml")
    if content is None:
        raise _corrupt("an OpenDocument text without content.xml")
    blocks: list[Block] = []
    tables = _Tables()
    depth = 0  # open paragraphs: elements inside one are kept until it closes
    skip = 0
    for event, el in _events(content):
        tag = el.tag
        if event == "start":
            if tag in _ODT_SKIPPED and not depth:
                skip += 1
            elif tag in _PARAGRAPHS:
                depth += 1
            elif tag == f"{TABLE_NS}table" and not skip and not depth:
                tables.open_table()
            continue
        if tag in _ODT_SKIPPED and not depth:
            skip -= 1
        elif tag in _PARAGRAPHS:
            depth -= 1
            if depth or skip:
                continue
            text = _odt_text(el)
            outline = el.get(f"{TEXT}outline-level") or "1"
            level = int(outline) if tag == f"{TEXT}h" and outline.isdigit() else 0
            if tables.depth:
                tables.cell.append(text)
            elif text.strip():
                blocks.append(Block(text, max(0, min(level, 6))))
        elif depth or skip:
            continue
        elif tag == f"{TABLE_NS}table-cell" and tables.depth == 1:
            repeat = el.get(f"{TABLE_NS}number-columns-repeated") or "1"
            tables.close_cell(min(int(repeat) if repeat.isdigit() else 1, MAX_REPEATED_COLUMNS))
        elif tag == f"{TABLE_NS}table-row" and tables.depth == 1:
            tables.close_row()
        elif tag == f"{TABLE_NS}table":
            tables.close_table(blocks)
        el.clear()
    return Parsed(blocks, "")


def parse_office(data: bytes, media_type: str) -> Parsed:
    return parse_odt(data) if media_type == media.ODT else parse_docx(data)
