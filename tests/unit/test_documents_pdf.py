"""PDF cleanup rules and the page map, on the real manuals of eval/realworld
(libtasn1: /PageLabels with roman front matter; Nettle: no labels, one-page
chapters; bzip2: FOP layout, a table) and ReportLab tables drawn cell by cell."""

from __future__ import annotations

import re
from functools import cache
from pathlib import Path

import pytest

from services.chunking import pdf_clean, pdf_extract
from services.chunking.chunker import Chunker, ChunkRequest, load_counter
from services.chunking.config import ChunkingSettings
from services.chunking.convert import to_response
from services.chunking.pages import PageMap, PageSpan, citation_pages
from services.chunking.parsing import Document, assemble, parse_pdf
from services.chunking.pdf_extract import Line, Page

REPO = Path(__file__).resolve().parents[2]
DOCS = REPO / "eval" / "realworld" / "documents"
DATA = REPO / "tests" / "data" / "documents"
LEADER_RUN = re.compile(r"(?:\. ?){5,}")


@cache
def document(name: str) -> Document:
    return assemble(parse_pdf((DOCS / name).read_bytes()))


@cache
def cleaned(name: str) -> pdf_clean.CleanResult:
    pages, _ = pdf_extract.extract((DOCS / name).read_bytes(), 10_000)
    return pdf_clean.clean(pages)


def page_text(doc: Document, number: int) -> str:
    span = next(s for s in doc.pages if s.number == number)
    return doc.text[span.start : span.end]


# ------------------------------------------------------------------ page labels


def test_page_labels_come_from_the_pdf() -> None:
    doc = document("libtasn1.pdf")
    labels = {s.number: s.label for s in doc.pages}
    assert labels[25] == "22"  # the example: the page labelled 22 is the 25th
    assert labels[3] == "i"
    bzip2 = {s.number: s.label for s in document("bzip2-manual.pdf").pages}
    assert bzip2[8] == "5"


def test_without_labels_pages_are_physical_numbers() -> None:
    assert all(s.label == str(s.number) for s in document("nettle.pdf").pages)


def test_the_function_entry_is_cited_on_its_labelled_page() -> None:
    settings = ChunkingSettings()
    chunker = Chunker(settings, load_counter(settings))
    req = ChunkRequest(content=(DOCS / "libtasn1.pdf").read_bytes(), media_type="application/pdf")
    result = chunker.chunk(req)
    resp = to_response(result, req)
    entry = next(c for c in resp.chunks if "int asn1_decode_simple_der (" in c.text)
    assert (entry.page_start, entry.page_end, entry.page_label) == (25, 25, "22")
    for chunk in resp.chunks:  # offsets stay exact against the stored text
        assert result.text[chunk.start_offset : chunk.end_offset] == chunk.text
        assert chunk.page_start and chunk.page_end >= chunk.page_start


# ------------------------------------------------------------------ removal rules


@pytest.mark.parametrize("name", ["libtasn1.pdf", "nettle.pdf", "bzip2-manual.pdf"])
def test_no_dot_leader_line_is_left(name: str) -> None:
    text = document(name).text
    assert not [ln for ln in text.split("\n") if LEADER_RUN.search(ln)]
    assert cleaned(name).stats["dot_leader"] > 50  # their tables of contents and indexes


@pytest.mark.parametrize(
    ("name", "header"),
    [
        ("libtasn1.pdf", "Chapter 2: ASN.1 structure handling 3"),
        ("nettle.pdf", "Chapter 7: Reference 8"),
    ],
)
def test_running_headers_are_removed(name: str, header: str) -> None:
    removed = {
        t for why, items in cleaned(name).removed.items() for _, t in items if "running" in why
    }
    assert header in removed
    lines = set(document(name).text.split("\n"))
    assert not removed & lines


def test_one_page_chapters_lose_their_header_too() -> None:
    assert cleaned("nettle.pdf").stats["running_top_band"] > 0


@pytest.mark.parametrize("name", ["libtasn1.pdf", "bzip2-manual.pdf"])
def test_bare_page_numbers_are_removed(name: str) -> None:
    doc = document(name)
    assert cleaned(name).stats["page_number"] > 0
    for span in doc.pages:  # the page's own number never ends its text
        last = doc.text[span.start : span.end].split("\n")[-1].strip()
        assert last not in {span.label, str(span.number)}


def test_body_lines_that_repeat_at_a_page_edge_stay() -> None:
    # "Hash some more data." ends several pages of Nettle at one height, one pitch
    # below its paragraph: not a footer.
    doc = document("nettle.pdf")
    assert page_text(doc, 13).count("Hash some more data.") == 1


def test_index_pages_keep_no_letter_headings() -> None:
    assert cleaned("libtasn1.pdf").stats["index_letter"] > 0


# ------------------------------------------------------------------ joins


def test_hyphenated_words_are_joined() -> None:
    stats = cleaned("libtasn1.pdf").stats
    assert stats["hyphen_joined"] > 20
    text = document("libtasn1.pdf").text
    assert not re.search(r"[a-z]-\n[a-z]", text)
    assert "\ufffe" not in text


def test_identifiers_broken_after_an_underscore_are_joined() -> None:
    assert cleaned("libtasn1.pdf").stats["underscore_joined"] > 0
    assert "asn1_der_decoding_startEnd" in document("libtasn1.pdf").text


def test_hyphen_rules() -> None:
    hyphens = pdf_clean.Hyphens(["self-tests are run", "management"])
    assert hyphens.join(["the man-", "agement of keys"]) == ["the management", "of keys"]
    assert hyphens.join(["run the self-", "tests first"]) == ["run the self-tests", "first"]
    assert hyphens.marked("man\ufffeagement") == "management"
    assert hyphens.marked("Foo\ufffeBar") == "Foo-Bar"  # a compound keeps its hyphen
    assert hyphens.join(["call asn1_der_", "decoding() now"]) == ["call asn1_der_decoding()", "now"]


# ------------------------------------------------------------------ tables


def test_table_rows_drawn_cell_by_cell_come_out_as_rows() -> None:
    text = "\n".join(b.text for b in parse_pdf((DATA / "table_none.pdf").read_bytes()).blocks)
    assert (
        "cherry1x0 kiwi1x0 | mango1x1 quince1x1 damson1x1 lemon1x1 fig1x1 | cherry1x2 nectar1x2 "
        "mango1x2 fig1x2 cherry1x2 lemon1x2 | olive1x3 kiwi1x3 olive1x3 olive1x3 olive1x3 "
        "quince1x3 damson1x3" in text.split("\n")
    )
    rows = [ln for ln in text.split("\n") if " | " in ln]
    assert len(rows) >= 5


def test_tables_the_producer_draws_row_by_row_stay_rows() -> None:
    assert "-9 7600k 3700k 2350k 828642" in document("bzip2-manual.pdf").text.split("\n")


def test_row_rebuild_leaves_plain_text_alone() -> None:
    lines = [Line(f"line {i}", 72, 300, 700 - 12 * i, 690 - 12 * i, i) for i in range(5)]
    assert pdf_clean.rebuild_rows(lines, 12.0) == ([ln.text for ln in lines], 0)


def test_a_running_header_needs_repeats_at_one_height() -> None:
    def page(i: int, header_y: float) -> Page:
        lines = [Line(f"My Manual {i}", 72, 200, header_y, header_y - 10, 0)]
        lines += [
            Line(f"body {i}.{k}", 72, 300, 700 - 14 * k, 690 - 14 * k, k + 1) for k in range(5)
        ]
        return Page(i, str(i + 1), lines)

    steady = pdf_clean.find_running_lines([page(i, 760) for i in range(6)])
    assert all(steady.get((i, 0)) == "running_top" for i in range(6))
    wandering = pdf_clean.find_running_lines([page(i, 720 + 10 * i) for i in range(6)])
    assert not wandering


# ------------------------------------------------------------------ the page map


def test_page_map_and_citation_text() -> None:
    pages = PageMap([PageSpan(0, 10, 25, "22"), PageSpan(12, 30, 26, "23")])
    assert pages.range(2, 8).label == "22"
    where = pages.range(5, 20)
    assert (where.start, where.end, where.label) == (25, 26, "22–23")
    assert PageMap([]).range(0, 5).start == 0
    assert citation_pages(25, 25, "22") == "p. 22"
    assert citation_pages(25, 26, "22–23") == "pp. 22–23"
    assert citation_pages(0, 0, "") == ""
