"""Media type guessing of the SDK (content first where unambiguous, then the name)."""

from __future__ import annotations

import pytest

from ragmesh.client.media import (
    HTML,
    MARKDOWN,
    OCTET_STREAM,
    PDF,
    PLAIN,
    guess_media_type,
    is_supported_file,
    looks_binary,
)


@pytest.mark.parametrize(
    ("name", "head", "expected"),
    [
        ("notes.md", b"# Title\n\ntext", MARKDOWN),
        ("NOTES.MARKDOWN", b"# Title", MARKDOWN),
        ("page.htm", b"<p>hi</p>", HTML),
        ("page.HTML", b"plain words", HTML),
        ("report.pdf", b"%PDF-1.7\n...", PDF),
        # A PDF signature wins over a misleading name.
        ("report.txt", b"%PDF-1.4\n", PDF),
        ("scan", b"junk\n%PDF-1.4\n", PDF),
        # A .pdf without the header keeps its declared type: the server rejects it precisely.
        ("broken.pdf", b"this is not a pdf", PDF),
        ("readme", b"just some words", PLAIN),
        ("index", b"  <!DOCTYPE html><html><body>x</body></html>", HTML),
        ("data.txt", "中文文本。".encode(), PLAIN),
        ("image", b"\x89PNG\r\n\x1a\n\x00\x00", OCTET_STREAM),
        ("blob", b"abc\x00def", OCTET_STREAM),
        ("empty", b"", PLAIN),
    ],
)
def test_guess_media_type(name: str, head: bytes, expected: str) -> None:
    assert guess_media_type(name, head) == expected


def test_utf16_text_with_bom_is_not_binary() -> None:
    assert not looks_binary("héllo".encode("utf-16"))
    assert looks_binary(b"PK\x03\x04rest")


@pytest.mark.parametrize(
    ("name", "supported"),
    [
        ("a.md", True),
        ("b.PDF", True),
        ("c.html", True),
        ("d.txt", True),
        ("e.png", False),
        ("Makefile", False),
        ("f.docx", True),
        ("f.odt", True),
        ("f.doc", False),
    ],
)
def test_is_supported_file(name: str, supported: bool) -> None:
    assert is_supported_file(name) is supported
