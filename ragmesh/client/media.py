"""Guessing a document's media type from its content and file name.

The gateway accepts text/plain, text/markdown, text/html, application/pdf,
Word (.docx) and OpenDocument text (.odt).
Content signatures win over the extension where they are unambiguous (a PDF
starts with `%PDF-`); otherwise the extension decides, and unnamed text is
sniffed for HTML. A file named `.pdf` without the header keeps
application/pdf so that the server rejects it with a precise reason rather
than parsing garbage as text.
"""

from __future__ import annotations

from pathlib import PurePath

PLAIN = "text/plain"
MARKDOWN = "text/markdown"
HTML = "text/html"
PDF = "application/pdf"
DOCX = "application/vnd.openxmlformats-officedocument.wordprocessingml.document"
ODT = "application/vnd.oasis.opendocument.text"
OCTET_STREAM = "application/octet-stream"
SUPPORTED_MEDIA_TYPES = (PLAIN, MARKDOWN, HTML, PDF, DOCX, ODT)

EXTENSIONS: dict[str, str] = {
    ".txt": PLAIN,
    ".text": PLAIN,
    ".log": PLAIN,
    ".md": MARKDOWN,
    ".markdown": MARKDOWN,
    ".mdown": MARKDOWN,
    ".html": HTML,
    ".htm": HTML,
    ".xhtml": HTML,
    ".pdf": PDF,
    ".docx": DOCX,
    ".odt": ODT,
}
# How many leading bytes `guess_media_type` needs to see.
SNIFF_BYTES = 4096
_BINARY_MAGIC = (b"\x89PNG", b"\xff\xd8\xff", b"GIF8", b"PK\x03\x04", b"\x1f\x8b", b"\x7fELF")
_TEXT_BOMS = (b"\xef\xbb\xbf", b"\xff\xfe", b"\xfe\xff")


def looks_binary(head: bytes) -> bool:
    """True when the leading bytes are not text (NUL bytes, known binary magic)."""
    if head.startswith(_TEXT_BOMS):
        return False
    if head.startswith(_BINARY_MAGIC):
        return True
    return b"\x00" in head[:SNIFF_BYTES]


def looks_like_html(head: bytes) -> bool:
    text = head[:1024].lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    return text.startswith((b"<!doctype html", b"<html")) or b"<html" in text[:256]


def media_type_from_name(file_name: str) -> str | None:
    return EXTENSIONS.get(PurePath(file_name).suffix.lower())


def guess_media_type(file_name: str, head: bytes) -> str:
    """The media type of a document from its name and its first SNIFF_BYTES bytes."""
    if b"%PDF-" in head[:1024]:
        return PDF
    by_name = media_type_from_name(file_name)
    if by_name is not None:
        return by_name
    odt = head[38:].startswith(ODT.encode()) and head[38 + len(ODT) : 39 + len(ODT)] != b"-"
    if head.startswith(b"PK\x03\x04") and head[30:38] == b"mimetype" and odt:
        return ODT
    if looks_binary(head):
        return OCTET_STREAM
    if looks_like_html(head):
        return HTML
    return PLAIN


def is_supported_file(file_name: str) -> bool:
    """Whether a folder walk should pick this file up (by extension)."""
    return media_type_from_name(file_name) is not None
