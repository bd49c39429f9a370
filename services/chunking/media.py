"""Media types: which one a document really is, and decoding text bytes.

A declared media type is checked against the content (a "PDF" without a
`%PDF-` header, binary bytes declared as text): a lie is INVALID_ARGUMENT /
MEDIA_TYPE_MISMATCH, never a parse of garbage. Without a declared type the
file name's extension and the content decide.
"""

from __future__ import annotations

import codecs
from dataclasses import dataclass
from pathlib import PurePosixPath

from services.common.errors import InvalidArgument

PLAIN = "text/plain"
MARKDOWN = "text/markdown"
HTML = "text/html"
PDF = "application/pdf"
DOCX = "application/vnd.openxmlformats-officedocument.wordprocessingml.document"
ODT = "application/vnd.oasis.opendocument.text"
SUPPORTED = (PLAIN, MARKDOWN, HTML, PDF, DOCX, ODT)
TEXT_TYPES = (PLAIN, MARKDOWN, HTML)
#: Formats in a ZIP container
OFFICE_TYPES = (DOCX, ODT)

_ALIASES = {
    "text/x-markdown": MARKDOWN,
    "text/md": MARKDOWN,
    "application/xhtml+xml": HTML,
    "application/x-pdf": PDF,
}
_EXTENSIONS = {
    ".txt": PLAIN,
    ".text": PLAIN,
    ".log": PLAIN,
    ".md": MARKDOWN,
    ".markdown": MARKDOWN,
    ".html": HTML,
    ".htm": HTML,
    ".xhtml": HTML,
    ".pdf": PDF,
    ".docx": DOCX,
    ".odt": ODT,
}
# Signatures of common binary formats that are never text.
_MAGIC = {
    b"\x89PNG": "a PNG image",
    b"\xff\xd8\xff": "a JPEG image",
    b"GIF8": "a GIF image",
    b"PK\x03\x04": "a ZIP archive (or an Office document)",
    b"\x1f\x8b": "gzip data",
    b"\x7fELF": "an ELF executable",
    b"\xd0\xcf\x11\xe0": "an OLE2 file (legacy Office document)",
    b"Rar!": "a RAR archive",
    b"7z\xbc\xaf": "a 7-Zip archive",
}
_BOMS = (
    (codecs.BOM_UTF32_LE, "utf-32"),  # before UTF-16 LE: it starts with the same bytes
    (codecs.BOM_UTF32_BE, "utf-32"),
    (codecs.BOM_UTF8, "utf-8-sig"),
    (codecs.BOM_UTF16_LE, "utf-16"),
    (codecs.BOM_UTF16_BE, "utf-16"),
)
SNIFF_BYTES = 8192
# The PDF header may follow some junk, but within the first 1024 bytes (PDF 32000-1 annex H).
_PDF_HEADER_WINDOW = 1024
# Control bytes that text files don't contain (tab, newlines, form feed and ESC do occur).
_CONTROL_BYTES = bytes(b for b in range(32) if b not in (9, 10, 12, 13, 27))
_UTF8_NAMES = {"utf-8", "utf8", "us-ascii", "ascii"}
# Codec names (codecs.lookup(...).name) that are not character sets of documents.
_NOT_CHARSETS = frozenset(
    ["punycode", "idna", "unicode-escape", "raw-unicode-escape", "undefined", "mbcs", "oem"]
)


@dataclass(frozen=True)
class MediaType:
    essence: str  # one of SUPPORTED
    charset: str | None = None  # from a `; charset=` parameter


def parse_declared(declared: str) -> MediaType | None:
    """`text/plain; charset=latin-1` → MediaType; empty → None (detect)."""
    value = declared.strip()
    if not value:
        return None
    essence, *params = (part.strip() for part in value.split(";"))
    essence = essence.lower()
    essence = _ALIASES.get(essence, essence)
    if essence not in SUPPORTED:
        raise InvalidArgument(
            f"unsupported media type {declared!r}; supported: {', '.join(SUPPORTED)}",
            reason="UNSUPPORTED_MEDIA_TYPE",
            metadata={"media_type": declared[:200]},
        )
    charset = None
    for param in params:
        key, _, val = param.partition("=")
        if key.strip().lower() == "charset" and val.strip():
            charset = val.strip().strip('"').lower()
    if charset is not None and essence in TEXT_TYPES:
        try:
            info = codecs.lookup(charset)
        except LookupError:
            info = None
        # Python also names transforms (base64, zlib, rot13) and escape or IDNA codecs
        # (punycode decodes in quadratic time) as codecs: none is a document charset.
        if (
            info is None
            or not getattr(info, "_is_text_encoding", True)
            or info.name in _NOT_CHARSETS
        ):
            raise InvalidArgument(
                f"unknown charset {charset!r} in media type {declared!r}",
                reason="UNSUPPORTED_CHARSET",
                metadata={"charset": charset[:100]},
            ) from None
    return MediaType(essence, charset)


def _bom_encoding(data: bytes) -> str | None:
    for bom, encoding in _BOMS:
        if data.startswith(bom):
            return encoding
    return None


def office_kind(data: bytes) -> str | None:
    """DOCX or ODT when the content is such a ZIP container, else None.

    An ODT's first entry is `mimetype`, stored uncompressed, holding its media
    type; a DOCX names `word/document.xml` in its (uncompressed) central directory.
    """
    if not data.startswith(b"PK\x03\x04"):
        return None
    if data[30:38] == b"mimetype" and data[38:].startswith(ODT.encode()):
        rest = data[38 + len(ODT) : 39 + len(ODT)]
        return ODT if rest != b"-" else None  # not ...opendocument.text-template
    if b"word/document.xml" in data:
        return DOCX
    return None


def is_pdf(data: bytes) -> bool:
    return b"%PDF-" in data[:_PDF_HEADER_WINDOW]


def binary_kind(data: bytes) -> str | None:
    """What non-text the content looks like, or None if it looks like text.

    Only the first SNIFF_BYTES are read: NUL bytes, many control bytes or
    mostly invalid UTF-8 mean binary. Text with a UTF-16/32 byte-order mark is
    text (it is decoded with that encoding).
    """
    for magic, kind in _MAGIC.items():
        if data.startswith(magic):
            return kind
    if _bom_encoding(data) is not None:
        return None
    sample = data[:SNIFF_BYTES]
    if not sample:
        return None
    if b"\x00" in sample:
        return "binary data (NUL bytes)"
    controls = len(sample) - len(sample.translate(None, _CONTROL_BYTES))
    if controls > len(sample) * 0.05:
        return "binary data (control bytes)"
    decoded = sample.decode("utf-8", errors="replace")
    replaced = decoded.count("\ufffd") - sample.count(b"\xef\xbf\xbd")
    # A sample cut inside a multi-byte character costs one replacement: allow it.
    if replaced > 1 and replaced > len(decoded) * 0.25:
        return "binary data (not UTF-8 text)"
    return None


def _looks_like_html(data: bytes) -> bool:
    head = data[:1024].lstrip().lower()
    if head.startswith(codecs.BOM_UTF8):
        head = head[len(codecs.BOM_UTF8) :].lstrip()
    return head.startswith((b"<!doctype html", b"<html")) or b"<html" in head[:256]


def _office_mismatch(declared: str, content: bytes) -> InvalidArgument:
    kind = binary_kind(content)
    what = "a PDF" if is_pdf(content) else (kind or "text")
    return InvalidArgument(
        f"declared {declared} but the content is {what}, not such a document",
        reason="MEDIA_TYPE_MISMATCH",
        metadata={"declared": declared},
    )


def resolve(content: bytes, declared: str, file_name: str) -> MediaType:  # noqa: C901 - one case per kind of lie
    """The media type to parse `content` as; raises InvalidArgument on a lie."""
    media = parse_declared(declared)
    pdf = is_pdf(content)
    office = None if pdf else office_kind(content)
    if media is None:
        by_name = _EXTENSIONS.get(PurePosixPath(file_name.strip()).suffix.lower())
        if pdf:
            return MediaType(PDF)
        if by_name in OFFICE_TYPES and content.startswith(b"PK\x03\x04"):
            return MediaType(by_name)  # a container the parser checks
        if office is not None:
            return MediaType(office)
        kind = binary_kind(content)
        if by_name == PDF or by_name in OFFICE_TYPES:
            raise InvalidArgument(
                f"file {file_name!r} is named as a PDF but its content has no %PDF- header"
                if by_name == PDF
                else f"file {file_name!r} is named as {by_name} but its content is no ZIP container"
                + (f" (it looks like {kind})" if kind else ""),
                reason="MEDIA_TYPE_MISMATCH",
                metadata={"file_name": file_name[:200]},
            )
        if kind is not None:
            raise InvalidArgument(
                f"cannot detect a supported media type: the content is {kind}; "
                f"supported: {', '.join(SUPPORTED)}",
                reason="UNSUPPORTED_MEDIA_TYPE",
            )
        if by_name is not None:
            return MediaType(by_name)
        return MediaType(HTML if _looks_like_html(content) else PLAIN)
    if media.essence == PDF:
        if not pdf:
            kind = binary_kind(content)
            raise InvalidArgument(
                "declared application/pdf but the content has no %PDF- header"
                + (f"; it looks like {kind}" if kind else "; it looks like text"),
                reason="MEDIA_TYPE_MISMATCH",
                metadata={"declared": PDF},
            )
        return media
    if media.essence in OFFICE_TYPES:
        if pdf or not content.startswith(b"PK\x03\x04"):
            raise _office_mismatch(media.essence, content)
        if office is not None and office != media.essence:
            raise InvalidArgument(
                f"declared {media.essence} but the content is {office}",
                reason="MEDIA_TYPE_MISMATCH",
                metadata={"declared": media.essence, "detected": office},
            )
        return media
    if pdf:
        raise InvalidArgument(
            f"declared {media.essence} but the content is a PDF (use application/pdf)",
            reason="MEDIA_TYPE_MISMATCH",
            metadata={"declared": media.essence, "detected": PDF},
        )
    kind = binary_kind(content)
    if kind is not None:
        raise InvalidArgument(
            f"declared {media.essence} but the content is {kind}",
            reason="MEDIA_TYPE_MISMATCH",
            metadata={"declared": media.essence},
        )
    return media


def decode_text(content: bytes, charset: str | None = None) -> tuple[str, int]:
    """Bytes → str and the number of U+FFFD inserted for undecodable bytes.

    Invalid UTF-8 is replaced, not rejected (docs/chunking.md): one bad byte
    in a large file should not lose the document, and the count is reported.
    A byte-order mark picks UTF-8/16/32; a declared charset is honoured.
    """
    encoding = _bom_encoding(content)
    if encoding is None:
        encoding = "utf-8" if charset is None or charset in _UTF8_NAMES else charset
    try:
        return content.decode(encoding), 0
    except UnicodeDecodeError:
        pass
    text = content.decode(encoding, errors="replace")
    if encoding.startswith("utf-8"):
        # U+FFFD already present in the input is valid UTF-8 (EF BF BD): don't count it.
        # A valid sequence is always decoded whole, so the subtraction is exact.
        replaced = text.count("\ufffd") - content.count(b"\xef\xbf\xbd")
    else:
        replaced = text.count("\ufffd") - content.decode(encoding, errors="ignore").count("\ufffd")
    return text, replaced
