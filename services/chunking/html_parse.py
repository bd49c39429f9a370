"""HTML to blocks: the page's main content, headings, code blocks whole, tables as rows.

Rules, in order (docs/chunking.md, "HTML"):

1. `script`, `style`, `noscript`, `template`, `svg`, `iframe`, `object`,
   `canvas` and `head` are dropped;
2. the content root is `<main>` (or `[role=main]`), else the only `<article>`,
   else `<body>`;
3. inside it, boilerplate goes: `nav`, `aside`, `form`, `dialog`, `button`,
   `select`; `header`/`footer` unless inside an `article`, `main` or `section`
   (an article's own header carries its title); ARIA roles navigation, banner,
   contentinfo, complementary, search, menu, menubar, toolbar; `aria-hidden=true`
   and `hidden`; tables whose summary says navigation (DocBook); elements whose
   class or id has a whole token such as `nav`, `sidebar`, `breadcrumb`, `toc`,
   `footer` (`BOILERPLATE_TOKENS`) unless they contain a heading;
4. then link farms go: a block with >= 3 links and >= 80 % of its text in links,
   or >= 2 links, >= 60 % and < 200 characters ("Next: X, Previous: Y, Up: Z");
   undone when it would remove more than 90 % of the page (an index page stays);
5. `h1`-`h6` become headings; each `<pre>` one code block with its whitespace
   kept; a data table (no table inside it) one block with a line per row, cells
   joined by ` | `; layout tables are walked like `div`s; other block elements
   become paragraph or line breaks.

Every pass is iterative and linear in the tree (text and link sizes are summed
bottom-up once per pass): deeply nested markup neither hits the recursion limit
nor costs a query per element. The nesting depth is checked before parsing
(html_depth.py; lexbor is quadratic in it).
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from services.chunking import html_depth
from services.chunking.blocks import Block, Parsed
from services.common.errors import InvalidArgument

if TYPE_CHECKING:
    from selectolax.lexbor import LexborHTMLParser

DROPPED = ["script", "style", "noscript", "template", "svg", "iframe", "object", "head", "canvas"]
BOILERPLATE_TAGS = frozenset({"nav", "aside", "form", "dialog", "button", "select"})
EDGE_TAGS = frozenset({"header", "footer"})
ARTICLE_TAGS = frozenset({"article", "main", "section"})
BOILERPLATE_ROLES = frozenset(
    {"navigation", "banner", "contentinfo", "complementary", "search", "menu", "menubar", "toolbar"}
)
BOILERPLATE_TOKENS = frozenset(
    [
        "nav", "navbar", "navheader", "navfooter", "navigation", "nav-panel", "menu",
        "sidebar", "sphinxsidebar", "sphinxsidebarwrapper", "related", "breadcrumb",
        "breadcrumbs", "toc", "gtoc", "header", "footer", "skip", "skiplink", "skip-link",
        "pagination", "pager", "cookie", "cookies", "banner", "share", "social", "searchbox",
        "search", "advert", "ads", "masthead", "site-header", "site-footer", "topbar",
        "tagline", "logo", "nosearch", "searchmenu", "mainmenu", "submenu",
    ]
)  # fmt: skip
HEADINGS = {"h1": 1, "h2": 2, "h3": 3, "h4": 4, "h5": 5, "h6": 6}
PARAGRAPH_TAGS = frozenset(
    [
        "p", "div", "section", "article", "main", "header", "footer", "nav", "aside",
        "blockquote", "pre", "table", "ul", "ol", "dl", "figure", "figcaption", "form",
        "fieldset", "address", "details", "summary", "hr", "body", "center",
    ]
)  # fmt: skip
LINE_TAGS = frozenset(["li", "tr", "dt", "dd", "caption", "option"])
FARM_TAGS = frozenset({"p", "div", "ul", "ol", "table", "td", "dl", "center"})
_WS = re.compile(r"\s+")

# Per element: (text chars, link text chars, links, has a <pre> or heading, has a <table>).
Sizes = tuple[int, int, int, bool, bool]
_EMPTY: Sizes = (0, 0, 0, False, False)


def html_tree(text: str, max_depth: int) -> LexborHTMLParser:
    from selectolax.lexbor import LexborHTMLParser, SelectolaxError

    if html_depth.exceeds(text, max_depth):
        raise InvalidArgument(
            f"the HTML nests elements more than {max_depth} deep "
            "(RAGMESH_CHUNKING_MAX_HTML_DEPTH); parsing it would take too long",
            reason="DOCUMENT_TOO_COMPLEX",
            metadata={"limit": "max_html_depth", "max_html_depth": max_depth},
        )
    try:
        return LexborHTMLParser(text)
    except SelectolaxError as exc:  # lexbor parses any markup; it fails only out of memory
        raise InvalidArgument(
            f"the HTML parser gave up on this document ({exc}): it needs more memory "
            "than a chunking worker has (RAGMESH_CHUNKING_WORKER_MEMORY_MB)",
            reason="DOCUMENT_TOO_COMPLEX",
            metadata={"limit": "worker_memory_mb"},
        ) from None


def _sizes(root: Any) -> dict[int, Sizes]:
    """One post-order pass over the elements below `root` (iterative)."""
    out: dict[int, Sizes] = {}
    stack: list[tuple[Any, bool]] = [(root, False)]
    while stack:
        node, done = stack.pop()
        if not done:
            stack.append((node, True))
            stack.extend((c, False) for c in node.iter(include_text=False))
            continue
        text = link = links = 0
        special = node.tag == "pre" or node.tag in HEADINGS
        table = False
        for child in node.iter(include_text=True):
            if child.tag == "-text":
                text += len(child.text(deep=False).strip())
            elif not child.tag.startswith("-"):
                t, lt, n, sp, tb = out.get(child.mem_id, _EMPTY)
                text, link, links = text + t, link + lt, links + n
                special = special or sp
                table = table or tb or child.tag == "table"
        if node.tag == "a":
            link, links = text, links + 1
        out[node.mem_id] = (text, link, links, special, table)
    return out


def _inside(node: Any, tags: frozenset[str], stop: Any) -> bool:
    parent = node.parent
    while parent is not None and parent.mem_id != stop.mem_id:
        if parent.tag in tags:
            return True
        parent = parent.parent
    return False


def _boilerplate(node: Any, root: Any, sizes: dict[int, Sizes]) -> bool:
    tag = node.tag
    attrs = node.attributes
    if tag in BOILERPLATE_TAGS:
        return True
    if tag in EDGE_TAGS and not _inside(node, ARTICLE_TAGS, root):
        return True
    if (attrs.get("role") or "").lower() in BOILERPLATE_ROLES:
        return True
    if (attrs.get("aria-hidden") or "").lower() == "true" or "hidden" in attrs:
        return True
    if tag == "table" and "navigation" in (attrs.get("summary") or "").lower():
        return True
    tokens = {t.lower() for key in ("class", "id") for t in (attrs.get(key) or "").split()}
    if tokens & BOILERPLATE_TOKENS and tag not in HEADINGS:
        return not sizes.get(node.mem_id, _EMPTY)[3]  # kept when it holds a heading or <pre>
    return False


def _link_farm(node: Any, sizes: dict[int, Sizes]) -> bool:
    if node.tag not in FARM_TAGS:
        return False
    text, link, links, special, _ = sizes.get(node.mem_id, _EMPTY)
    if special or not text:
        return False
    density = link / text
    return (links >= 3 and density >= 0.8) or (links >= 2 and density >= 0.6 and text < 200)


def _prune(root: Any) -> None:
    """Structural boilerplate always goes; link farms unless that empties the page."""
    for phase in (1, 2):
        sizes = _sizes(root)
        removed: list[Any] = []
        stack = [root]
        while stack:
            node = stack.pop()
            for child in node.iter(include_text=False):
                gone = _boilerplate(child, root, sizes) if phase == 1 else _link_farm(child, sizes)
                (removed if gone else stack).append(child)
        total = sizes.get(root.mem_id, _EMPTY)[0]
        lost = sum(sizes.get(n.mem_id, _EMPTY)[0] for n in removed)
        if phase == 2 and total and lost > 0.9 * total:
            continue  # an index page: its links are its content
        for node in removed:
            node.decompose()


def _choose_root(tree: LexborHTMLParser) -> Any:
    def has_text(node: Any) -> bool:
        return node is not None and bool(node.text(deep=True).strip())

    main = tree.css_first("main") or tree.css_first('[role="main"]')
    if has_text(main):
        return main
    articles = tree.css("article")
    if len(articles) == 1 and has_text(articles[0]):
        return articles[0]
    return tree.body or tree.root


def _table_rows(table: Any) -> list[str]:
    rows = []
    caption = table.css_first("caption")
    if caption is not None:
        rows.append(_WS.sub(" ", caption.text(deep=True)).strip())
    for tr in table.css("tr"):
        cells = [
            _WS.sub(" ", c.text(deep=True, separator=" ")).strip()
            for c in tr.iter()
            if c.tag in ("td", "th")
        ]
        if any(cells):
            rows.append(" | ".join(cells))
    return [r for r in rows if r]


def _code(pre: Any) -> str:
    codes = [c for c in pre.iter(include_text=False) if c.tag == "code"]
    if len(codes) > 1:  # alternative listings side by side (Node's mjs/cjs)
        return "\n\n".join(str(c.text(deep=True)).strip("\n") for c in codes)
    return str(pre.text(deep=True)).strip("\n")


def parse_html(text: str, max_depth: int = 10_000) -> Parsed:  # noqa: C901 - one walk, a case per element kind
    tree = html_tree(text, max_depth)
    title_node = tree.css_first("title")
    title = title_node.text(deep=True) if title_node is not None else ""
    tree.strip_tags(DROPPED)
    root = _choose_root(tree)
    blocks: list[Block] = []
    if root is None:
        return Parsed(blocks, title)
    _prune(root)
    tables = _sizes(root)
    buffer: list[str] = []

    def flush() -> None:
        if buffer:
            blocks.append(Block("".join(buffer)))
            buffer.clear()

    stack: list[tuple[Any, bool]] = [(root, False)]
    while stack:
        node, leaving = stack.pop()
        tag: str = node.tag
        if leaving:
            buffer.append("\n\n" if tag in PARAGRAPH_TAGS else "\n")
            continue
        if tag == "-text":
            buffer.append(_WS.sub(" ", node.text(deep=False)))
            continue
        if tag.startswith("-"):  # comments, doctype
            continue
        level = HEADINGS.get(tag)
        if level:
            flush()
            blocks.append(Block(node.text(deep=True, separator=" "), level))
        elif tag == "pre":
            flush()
            blocks.append(Block(_code(node), kind="code"))
        elif tag == "table" and not tables.get(node.mem_id, _EMPTY)[4]:
            flush()
            blocks.append(Block("\n".join(_table_rows(node)), kind="table"))
        elif tag == "br":
            buffer.append("\n")
        else:
            if tag in ("td", "th"):
                buffer.append(" ")
            elif tag in PARAGRAPH_TAGS:
                buffer.append("\n\n")
            elif tag in LINE_TAGS and buffer and not buffer[-1].endswith("\n"):
                buffer.append("\n")  # one line break between list items, not two
            if tag in PARAGRAPH_TAGS or tag in LINE_TAGS:
                stack.append((node, True))
            stack.extend((c, False) for c in reversed(list(node.iter(include_text=True))))
    flush()
    return Parsed(blocks, title)
