"""HTML main content: boilerplate out, main/article used, tables as rows, code
blocks whole; on SQLite's documentation pages (eval/realworld) and small pages."""

from __future__ import annotations

from pathlib import Path

from services.chunking.blocks import CODE, TABLE
from services.chunking.html_parse import parse_html
from services.chunking.parsing import Document, assemble

DOCS = Path(__file__).resolve().parents[2] / "eval" / "realworld" / "documents"


def doc(html: str) -> Document:
    return assemble(parse_html(html))


def test_sqlite_page_keeps_its_content_and_drops_its_navigation() -> None:
    raw = (DOCS / "sqlite-c3ref-last_insert_rowid.html").read_text()
    assert "Small. Fast. Reliable." in raw and "Download" in raw  # the site's header
    d = doc(raw)
    assert "Small. Fast. Reliable." not in d.text
    assert "Download" not in d.text
    assert "sqlite3_int64 sqlite3_last_insert_rowid(sqlite3*);" in d.text
    assert "usually returns the rowid of the most recent successful INSERT" in d.text
    assert d.sections[-1].heading_path == ("Last Insert Rowid",)


def test_main_element_is_the_content_root() -> None:
    d = doc(
        "<html><head><title>T</title><style>p{}</style></head><body>"
        "<header><a href=/>Home</a> Site header</header>"
        "<nav><ul><li><a href=a>A</a></li><li><a href=b>B</a></li></ul></nav>"
        "<main><h1>Guide</h1><p>The real text.</p>"
        "<article><header><h2>Part</h2></header><p>More text.</p></article></main>"
        "<aside>Related links</aside><footer>Copyright footer</footer>"
        "<script>var x = 1;</script></body></html>"
    )
    assert d.text == "Guide\n\nThe real text.\n\nPart\n\nMore text."
    assert d.title == "T"


def test_a_single_article_is_the_root_without_main() -> None:
    d = doc(
        "<body><div class=sidebar>menu</div><article><h1>Post</h1><p>Body.</p></article>"
        "<div id=footer>foot</div></body>"
    )
    assert d.text == "Post\n\nBody."


def test_boilerplate_by_role_class_and_hidden() -> None:
    d = doc(
        "<body><div role=navigation>Prev Next</div><div class='breadcrumb x'>a / b</div>"
        "<div aria-hidden=true>hidden</div><p hidden>gone</p>"
        "<div class=toc><h2>Kept heading</h2>kept text</div><p>Body text.</p></body>"
    )
    assert "Prev" not in d.text and "a / b" not in d.text and "hidden" not in d.text
    assert "gone" not in d.text
    assert "Kept heading" in d.text and "Body text." in d.text


def test_link_farms_go_but_an_index_page_stays() -> None:
    farm = "<p>" + " ".join(f"<a href=p{i}>Page {i}</a>" for i in range(10)) + "</p>"
    d = doc(f"<body>{farm}<p>{'Real content. ' * 20}</p></body>")
    assert "Page 1" not in d.text and "Real content." in d.text
    index = doc(f"<body><h1>Index</h1>{farm}</body>")
    assert "Page 1" in index.text


def test_tables_become_rows_and_code_blocks_stay_whole() -> None:
    html = (
        "<body><table><caption>Limits</caption><tr><th>Name</th><th>Default</th></tr>"
        "<tr><td>SQLITE_MAX_LENGTH</td><td>1,000,000,000</td></tr></table>"
        "<pre>int main(void) {\n    if (x)\n        return 1;\n\n    return 0;\n}</pre></body>"
    )
    parsed = parse_html(html)
    kinds = [b.kind for b in parsed.blocks]
    assert TABLE in kinds and CODE in kinds
    d = assemble(parsed)
    assert "Limits\nName | Default\nSQLITE_MAX_LENGTH | 1,000,000,000" in d.text
    assert "int main(void) {\n    if (x)\n        return 1;\n\n    return 0;\n}" in d.text


def test_sqlite_limits_page_tables_and_code() -> None:
    d = doc((DOCS / "sqlite-limits.html").read_text())
    assert "The default value of this macro is 1 billion" in d.text
    assert "Small. Fast. Reliable." not in d.text


def test_layout_tables_are_walked_like_divs() -> None:
    d = doc(
        "<body><table><tr><td><table><tr><td>inner cell</td></tr></table></td></tr></table></body>"
    )
    assert "inner cell" in d.text
