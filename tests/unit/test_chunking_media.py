"""Media type detection, lie detection and text decoding."""

from __future__ import annotations

import pytest

from benchmarks.chunking_data import make_pdf
from services.chunking import media
from services.common.errors import InvalidArgument

PDF = make_pdf(["hello"])


@pytest.mark.parametrize(
    ("content", "declared", "file_name", "expected"),
    [
        (b"hello", "text/plain", "", media.PLAIN),
        (b"hello", "TEXT/Markdown; charset=utf-8", "", media.MARKDOWN),
        (b"hello", "text/x-markdown", "", media.MARKDOWN),
        (b"<p>hi</p>", "application/xhtml+xml", "", media.HTML),
        (PDF, "application/pdf", "", media.PDF),
        (PDF, "", "", media.PDF),
        (PDF, "", "notes.txt", media.PDF),  # the content wins over the name
        (b"# x", "", "notes.md", media.MARKDOWN),
        (b"x", "", "page.HTM", media.HTML),
        (b"  <!DOCTYPE html><html><body>x</body></html>", "", "", media.HTML),
        (b"just words", "", "", media.PLAIN),
        (b"just words", "", "data.unknown", media.PLAIN),
        ("\ufeffbom text".encode("utf-16"), "text/plain", "", media.PLAIN),
    ],
)
def test_resolve(content: bytes, declared: str, file_name: str, expected: str) -> None:
    assert media.resolve(content, declared, file_name).essence == expected


@pytest.mark.parametrize(
    ("content", "declared", "file_name", "reason"),
    [
        (b"plain text, not a pdf", "application/pdf", "", "MEDIA_TYPE_MISMATCH"),
        (b"plain text", "", "report.pdf", "MEDIA_TYPE_MISMATCH"),
        (PDF, "text/plain", "", "MEDIA_TYPE_MISMATCH"),
        (bytes(range(256)) * 4, "text/plain", "", "MEDIA_TYPE_MISMATCH"),
        (b"\x89PNG\r\n\x1a\n" + b"x" * 50, "text/markdown", "", "MEDIA_TYPE_MISMATCH"),
        (b"\x89PNG\r\n\x1a\n" + b"x" * 50, "", "", "UNSUPPORTED_MEDIA_TYPE"),
        (b"PK\x03\x04 zip", "", "a.zip", "UNSUPPORTED_MEDIA_TYPE"),
        (b"plain text", "", "a.docx", "MEDIA_TYPE_MISMATCH"),
        (b"hello", "image/png", "", "UNSUPPORTED_MEDIA_TYPE"),
        (b"hello", "application/msword", "", "UNSUPPORTED_MEDIA_TYPE"),
        (b"hello", "not a type", "", "UNSUPPORTED_MEDIA_TYPE"),
        (b"hello", "text/plain; charset=no-such-codec", "", "UNSUPPORTED_CHARSET"),
    ],
)
def test_resolve_rejects(content: bytes, declared: str, file_name: str, reason: str) -> None:
    with pytest.raises(InvalidArgument) as exc:
        media.resolve(content, declared, file_name)
    assert exc.value.reason == reason
    assert exc.value.message


def test_binary_kind_accepts_text_with_a_few_bad_bytes() -> None:
    text = ("Ordinary text with a stray byte \xff here.\n" * 100).encode("latin-1")
    assert media.binary_kind(text) is None
    assert media.binary_kind("多字节文本".encode() * 3000) is None
    assert media.binary_kind(b"a\x00b") is not None


def test_decode_counts_replacements_but_not_genuine_fffd() -> None:
    raw = "ok \ufffd already".encode() + b" \xff\xfe bad \xc3"
    text, replaced = media.decode_text(raw)
    assert replaced == 3
    assert text.count("\ufffd") == 4
    assert media.decode_text("fine ✓".encode()) == ("fine ✓", 0)


def test_decode_honours_charset_and_bom() -> None:
    assert media.decode_text("café".encode("latin-1"), "iso-8859-1") == ("café", 0)
    assert media.decode_text("\ufeffhi".encode("utf-8")) == ("hi", 0)
    assert media.decode_text("hé".encode("utf-16")) == ("hé", 0)
