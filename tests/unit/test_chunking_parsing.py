"""Parsing (plain, Markdown, HTML, PDF), normalisation and sections."""

from __future__ import annotations

import pytest
from markdown_it import MarkdownIt

from benchmarks.chunking_data import english_text, make_pdf
from services.chunking import parsing
from services.chunking.normalize import normalize_inline, normalize_text
from services.common.errors import InvalidArgument


def test_normalize_nfkc_and_whitespace() -> None:
    raw = "\ufeffＦｕｌｌ\u00a0width ﬁne\t\t tabs  \r\n\r\n\r\n\r\nnext\u2028line \x00\u200b   \n"
    assert normalize_text(raw) == "Full width fine tabs\n\nnext\nline"
    assert normalize_text("你好！世界？") == "你好!世界?"  # NFKC: full-width punctuation
    assert normalize_inline("  A\n  heading\t ") == "A heading"


def test_assemble_sections_and_offsets() -> None:
    doc = parsing.assemble(
        parsing.Parsed(
            [
                parsing.Block("intro  text"),
                parsing.Block("A", 1),
                parsing.Block("body a"),
                parsing.Block("B", 2),
                parsing.Block("body b"),
                parsing.Block("C", 1),
                parsing.Block("   "),
            ]
        )
    )
    assert doc.text == "intro text\n\nA\n\nbody a\n\nB\n\nbody b\n\nC"
    assert [(doc.text[s.start : s.end], s.heading_path) for s in doc.sections] == [
        ("intro text", ()),
        ("A\n\nbody a", ("A",)),
        ("B\n\nbody b", ("A", "B")),
        ("C", ("C",)),
    ]
    assert doc.title == "A"


MARKDOWN_CASES = [
    "# One\n\ntext\n\n## Two ##\n\nmore\n\n### Three\n",
    "Setext one\n==========\n\npara\n\nSetext two\n----------\n\nx",
    "```\n# not a heading\n```\n\n# real\n\n~~~python\n## nope\n~~~\n",
    "    # indented code\n\n#no space\n\n####### seven\n\n# ok",
    "para line\n# interrupts\n- item\n---\n\n> # quoted\n\n* * *\n",
    "multi\nline para\n===\n\n#\n\n## trailing #s ###\n",
]


@pytest.mark.parametrize("source", MARKDOWN_CASES)
def test_markdown_headings_match_markdown_it(source: str) -> None:
    """The fast line scanner finds the same top-level headings as markdown-it-py."""
    tokens = MarkdownIt("commonmark").parse(source)
    expected = [
        (int(tok.tag[1]), " ".join(tokens[i + 1].content.split()))
        for i, tok in enumerate(tokens)
        if tok.type == "heading_open" and tok.level == 0
    ]
    lines = source.split("\n")
    found = [
        (level, " ".join(text.split())) for _, _, level, text in parsing._markdown_headings(lines)
    ]
    assert found == expected


def test_markdown_heading_paths_and_title() -> None:
    doc = parsing.assemble(
        parsing.parse_markdown("# Guide\n\nIntro.\n\n## Install\n\nRun it.\n\n## Use\n\nCall it.")
    )
    assert doc.title == "Guide"
    paths = [s.heading_path for s in doc.sections]
    assert paths == [("Guide",), ("Guide", "Install"), ("Guide", "Use")]
    assert doc.text.startswith("# Guide\n\nIntro.")  # the Markdown source is the text


HTML = """<!doctype html><html><head><title> The  Page </title>
<style>p { color: red }</style><script>var secret = 1;</script></head>
<body><noscript>enable js</noscript><h1>Top <em>level</em></h1>
<p>First   paragraph
   spans lines.</p><div>Block<br>two</div>
<h2>Sub</h2><ul><li>one</li><li>two</li></ul><!-- a comment -->
<template><p>hidden</p></template>
<h3>Deeper</h3><table><tr><td>a</td><td>b</td></tr></table>
<h2>Other</h2><pre>keep   this</pre></body></html>"""


def test_html_drops_scripts_and_keeps_heading_paths() -> None:
    doc = parsing.assemble(parsing.parse_html(HTML))
    assert doc.title == "The Page"
    for hidden in ("secret", "color", "enable js", "hidden", "a comment"):
        assert hidden not in doc.text
    assert "First paragraph spans lines." in doc.text
    assert "Block\ntwo" in doc.text
    assert "one\ntwo" in doc.text
    assert [s.heading_path for s in doc.sections] == [
        ("Top level",),
        ("Top level", "Sub"),
        ("Top level", "Sub", "Deeper"),
        ("Top level", "Other"),
    ]


def test_html_deeply_nested_does_not_recurse() -> None:
    html = "<div>" * 5000 + "deep text" + "</div>" * 5000
    doc = parsing.assemble(parsing.parse_html(html))
    assert doc.text == "deep text"


def test_pdf_text_and_title() -> None:
    pages = [english_text(2, seed=s) for s in range(3)]
    doc = parsing.assemble(parsing.parse_pdf(make_pdf(pages, title="My (PDF) Title")))
    assert doc.title == "My (PDF) Title"
    words = pages[2].split()
    assert " ".join(words[:5]) in doc.text.replace("\n", " ")


@pytest.mark.parametrize(
    "data",
    [
        b"%PDF-1.4\nthis is not a pdf at all",
        make_pdf(["some text"])[:120],  # truncated
        b"%PDF-1.7\n" + bytes(range(256)) * 8,
    ],
)
def test_corrupt_pdf(data: bytes) -> None:
    with pytest.raises(InvalidArgument) as exc:
        parsing.assemble(parsing.parse_pdf(data))
    assert exc.value.reason == "CORRUPT_DOCUMENT"


def test_empty_markdown_heading_opens_no_section() -> None:
    doc = parsing.assemble(parsing.parse_markdown("# Top\n\nA.\n\n##\n\nB."))
    assert [s.heading_path for s in doc.sections] == [("Top",)]
    assert doc.text == "# Top\n\nA.\n\n##\n\nB."
