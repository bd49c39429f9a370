"""Hostile shapes in process: each parses to chunks or to a precise reason.

The budgets that bound what these checks cannot (time, memory) are enforced by
the worker processes (tests/unit/test_chunking_pool.py) and tested against the
real service in tests/integration/test_chunking_hostile.py.
"""

from __future__ import annotations

import time
import unicodedata

import pytest

from benchmarks.chunking_data import english_text, make_pdf
from benchmarks.hostile_data import (
    empty_pages_pdf,
    flate_bomb_pdf,
    image_bomb_pdf,
    image_only_pdf,
    mark_soup,
    nested_divs,
    pdf_from_objects,
)
from services.chunking import html_depth, media, normalize, parsing
from services.chunking.chunker import Chunker, ChunkRequest, load_counter
from services.chunking.config import ChunkingSettings
from services.common.errors import InvalidArgument, ServiceError


@pytest.fixture(scope="module")
def chunker() -> Chunker:
    settings = ChunkingSettings()
    return Chunker(settings, load_counter(settings))


def _reason(chunker: Chunker, req: ChunkRequest) -> str:
    with pytest.raises(ServiceError) as exc:
        chunker.chunk(req)
    return exc.value.reason


# ----------------------------------------------------------------- HTML nesting


def test_hundred_thousand_nested_divs_are_refused_up_front(chunker: Chunker) -> None:
    req = ChunkRequest(content=nested_divs(100_000), media_type="text/html")
    with pytest.raises(InvalidArgument) as exc:
        chunker.chunk(req)
    assert exc.value.reason == "DOCUMENT_TOO_COMPLEX"
    assert exc.value.metadata["limit"] == "max_html_depth"


def test_nesting_under_the_limit_parses() -> None:
    doc = parsing.assemble(parsing.parse_html(nested_divs(2000).decode(), max_depth=4096))
    assert doc.text == "deep"
    with pytest.raises(InvalidArgument):
        parsing.parse_html(nested_divs(2000).decode(), max_depth=1000)


@pytest.mark.parametrize(
    "html",
    [
        "<br>" * 5000 + "<img src=x>" * 5000 + "<p>para" * 5000 + "<li>item" * 5000,
        "<div><font>x<b>y</div>" * 5000,  # sloppy: closed by the parent's end tag
        "<a href=x>link " * 5000,  # an <a> closes the open <a>
        "<h1>a<h2>b" * 5000,
        "<table><tr><td>" * 300 + "x",
        "<svg>" + "<path d='M0'/>" * 5000 + "</svg>",
        "<script>" + "document.write('<div>');" * 5000 + "</script>",
        "<!--" + "<div>" * 5000 + "-->",
        "<DIV>" * 500 + "</div>" * 500,
    ],
    ids=["voids", "sloppy", "anchors", "headings", "tables", "svg", "script", "comment", "case"],
)
def test_the_depth_estimate_never_refuses_real_markup(html: str) -> None:
    assert not html_depth.exceeds(html, 1000)


@pytest.mark.parametrize(
    "html",
    ["<div>" * 1001, "<section><span>" * 501, "<div></span>" * 1001, "<my-el>" * 1001],
)
def test_the_depth_estimate_sees_deep_nesting(html: str) -> None:
    assert html_depth.exceeds(html, 1000)


def test_the_vectorised_bound_is_at_least_the_scan() -> None:
    for html in ["<div>" * 50 + "</div>" * 20 + "<span>" * 30, "<p><b><i>" * 40, "<x></y>" * 9]:
        depth = next(d for d in range(200) if not html_depth.exceeds(html, d))
        assert html_depth._upper_bound(html) >= depth


# --------------------------------------------------------------------------- PDF


def test_pdf_decompression_bomb(chunker: Chunker) -> None:
    req = ChunkRequest(content=flate_bomb_pdf(), media_type="application/pdf")
    assert _reason(chunker, req) == "DOCUMENT_TOO_COMPLEX"


def test_pdf_image_streams_are_never_inflated() -> None:
    # A 256 MiB Flate image (a large scan) is legitimate: only text streams are checked.
    data = image_bomb_pdf(256 * 1024 * 1024)
    started = time.perf_counter()
    blocks = parsing.parse_pdf(data).blocks
    assert time.perf_counter() - started < 2
    assert blocks[0].text == "A scanned page with a caption"


def test_pdf_with_too_many_pages_is_refused_before_reading_them() -> None:
    with pytest.raises(InvalidArgument) as exc:
        parsing.parse_pdf(empty_pages_pdf(100_000))
    assert exc.value.reason == "DOCUMENT_TOO_COMPLEX"
    assert exc.value.metadata["pages"] == "100000"


def test_pdf_whose_page_count_lies() -> None:
    # PDFium trusts the page tree's /Count: pages beyond it are never read.
    data = empty_pages_pdf(50).replace(b"/Count 50", b"/Count 1 ")
    assert len(parsing.parse_pdf(data, max_pages=10).blocks) <= 1


def test_empty_pages_under_the_limit_have_no_text(chunker: Chunker) -> None:
    req = ChunkRequest(content=empty_pages_pdf(2000), media_type="application/pdf")
    assert _reason(chunker, req) == "NO_TEXT_CONTENT"


def test_pdf_with_only_images(chunker: Chunker) -> None:
    req = ChunkRequest(content=image_only_pdf(), media_type="application/pdf")
    assert _reason(chunker, req) == "NO_TEXT_CONTENT"


def test_pdf_nested_deeper_than_the_recursion_limit() -> None:
    deep = b"[" * 50_000 + b"]" * 50_000
    content = b"BT " + deep + b" TJ ET"
    data = pdf_from_objects(
        [
            b"<< /Type /Catalog /Pages 2 0 R >>",
            b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
            b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 10 10] "
            b"/Resources << /Font << /F1 5 0 R >> >> /Contents 4 0 R >>",
            b"<< /Length %d >>\nstream\n" % len(content) + content + b"\nendstream",
            b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
        ]
    )
    # PDFium's content parser is iterative: 50,000 nested arrays read in linear time.
    started = time.perf_counter()
    blocks = parsing.parse_pdf(data).blocks
    assert time.perf_counter() - started < 5
    assert not "".join(b.text for b in blocks).strip()


def test_a_normal_pdf_still_reads(chunker: Chunker) -> None:
    pdf = make_pdf([english_text(2, seed=s) for s in range(3)], title="Fine")
    result = chunker.chunk(ChunkRequest(content=pdf, media_type="application/pdf"))
    assert result.title == "Fine" and result.chunks


# --------------------------------------------------------------- text encodings


@pytest.mark.parametrize(
    "charset", ["punycode", "idna", "unicode_escape", "raw-unicode-escape", "rot13", "base64"]
)
def test_codecs_that_are_not_charsets_are_refused(charset: str) -> None:
    with pytest.raises(InvalidArgument) as exc:
        media.parse_declared(f"text/plain; charset={charset}")
    assert exc.value.reason == "UNSUPPORTED_CHARSET"


@pytest.mark.parametrize("charset", ["latin-1", "cp1252", "utf-16", "gb18030", "shift_jis"])
def test_real_charsets_are_accepted(charset: str) -> None:
    declared = media.parse_declared(f"text/plain; charset={charset}")
    assert declared is not None and declared.charset == charset


def test_unordered_combining_marks(chunker: Chunker) -> None:
    text = mark_soup(200_000).decode()
    result = chunker.chunk(ChunkRequest(text=text, include_normalized_text=True))
    assert result.chunks
    assert normalize.CGJ in result.text
    # What the stream-safe pass changed is only where runs were broken.
    assert unicodedata.normalize("NFKC", text[:31]) == unicodedata.normalize(
        "NFKC", result.text[:31]
    )


def test_real_accented_text_is_untouched() -> None:
    text = unicodedata.normalize("NFD", "Ça été très élégant, ồ ỗ ộ " * 1000)
    assert normalize.stream_safe(text) == text
    zalgo = "".join(c + "\u0301\u0316\u0315" * 10 for c in "zalgo text")
    assert normalize.stream_safe(zalgo) == zalgo  # 30 marks a letter: within the limit


def test_stream_safe_breaks_long_runs_only() -> None:
    run = "e" + "\u0301" * 65
    safe = normalize.stream_safe(run)
    assert safe.replace(normalize.CGJ, "") == run
    assert safe.count(normalize.CGJ) == 2  # after 30 and 60 marks


def test_lone_surrogates_become_replacement_characters(chunker: Chunker) -> None:
    result = chunker.chunk(ChunkRequest(text="bad \ud800 pair \udfff end"))
    assert result.chunks[0].text == "bad \ufffd pair \ufffd end"
    result.chunks[0].text.encode()  # sendable


def test_nul_bytes_and_invalid_utf8(chunker: Chunker) -> None:
    assert _reason(chunker, ChunkRequest(content=b"a\x00b" * 100)) == "UNSUPPORTED_MEDIA_TYPE"
    late = b"text " * 2000 + b"a\x00b " * 100
    result = chunker.chunk(ChunkRequest(content=late, media_type="text/plain"))
    assert "\x00" not in result.text and "ab" in result.text
    result = chunker.chunk(ChunkRequest(content=b"ok \xff\xfd \xc3( end", media_type="text/plain"))
    assert result.invalid_utf8_replacements == 3


def test_zero_bytes(chunker: Chunker) -> None:
    assert _reason(chunker, ChunkRequest(content=b"", media_type="text/markdown")) == (
        "EMPTY_DOCUMENT"
    )
