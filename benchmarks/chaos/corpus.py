"""The chaos run's documents: small files in four formats (text, Markdown, HTML,
PDF), English and Chinese, so that ingestion stays fast on two cores while
every parser is exercised.

Texts come from ../shared/data (Cranfield abstracts in English, CMRC 2018
passages in Chinese) when it is there, and are generated otherwise (a user's
clone): the run never depends on it. PDFs are English only (the minimal PDF
writer has Helvetica, no CJK font). Two deliberately broken files are added;
they must end FAILED with a permanent reason, never succeed or retry forever.
"""

from __future__ import annotations

import html
import json
import random
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from benchmarks.chunking_data import chinese_text, english_text, make_pdf

FORMATS = ("txt", "md", "html", "pdf")
EN_KB, ZH_KB = "chaos-en", "chaos-zh"


@dataclass(frozen=True)
class Doc:
    knowledge_base_id: str
    document_id: str  # = file name
    data: bytes
    language: str  # "en" | "zh"
    text: str = ""  # what the file says (for new versions)
    # The reason a deliberately broken file must fail with ("" = must succeed).
    expect_failure: str = ""

    @property
    def fmt(self) -> str:
        return self.document_id.rsplit(".", 1)[1]


def _shared_texts(shared: Path | None, name: str, limit: int) -> list[tuple[str, str]]:
    """(title, text) pairs of a corpus.jsonl under shared/data, [] when absent."""
    if shared is None:
        return []
    path = shared / name / "corpus.jsonl"
    if not path.is_file():
        return []
    out = []
    with path.open(encoding="utf-8") as fh:
        for line in fh:
            row = json.loads(line)
            text = str(row.get("text", "")).strip()
            if len(text) >= 40:
                out.append((str(row.get("title", "")).strip()[:80], text[:1500]))
            if len(out) >= limit:
                break
    return out


def _render(fmt: str, title: str, text: str) -> bytes:
    if fmt == "txt":
        return f"{title}\n\n{text}\n".encode()
    if fmt == "md":
        return f"# {title}\n\n{text}\n".encode()
    if fmt == "html":
        return (
            f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}"
            f"</title></head><body><main><h1>{html.escape(title)}</h1><p>{html.escape(text)}"
            "</p></main></body></html>"
        ).encode()
    return make_pdf([text], title=title)


def documents(count: int, shared: Path | None, seed: int = 13) -> list[Doc]:
    """`count` documents, about a third Chinese, formats in turn; plus the two
    broken files."""
    rng = random.Random(seed)
    zh_count = count // 3
    en = _shared_texts(shared, "cranfield", count - zh_count)
    zh = _shared_texts(shared, "cmrc2018-trial", zh_count)
    while len(en) < count - zh_count:
        i = len(en)
        en.append((f"Report {i}", english_text(rng.randint(2, 4), seed=seed * 7919 + i)))
    while len(zh) < zh_count:
        i = len(zh)
        zh.append((f"报告 {i}", chinese_text(rng.randint(4, 10), seed=seed * 104729 + i)))
    docs = []
    for i, (title, text) in enumerate(en):
        fmt = FORMATS[i % 4]
        data = _render(fmt, title or f"Report {i}", text)
        docs.append(Doc(EN_KB, f"en-{i:04d}.{fmt}", data, "en", text))
    for i, (title, text) in enumerate(zh):
        fmt = FORMATS[i % 3]  # no CJK font in the generated PDFs
        data = _render(fmt, title or f"文档 {i}", text)
        docs.append(Doc(ZH_KB, f"zh-{i:04d}.{fmt}", data, "zh", text))
    rng.shuffle(docs)
    return docs + broken()


def broken() -> list[Doc]:
    """Files that deserve to fail: a PDF that is not one, and an empty Markdown file."""
    return [
        Doc(
            EN_KB,
            "broken.pdf",
            b"%PDF-1.4\nthis is not a PDF at all\n" * 4,
            "en",
            "",
            "CORRUPT_DOCUMENT",
        ),
        Doc(EN_KB, "empty.md", b"  \n\n ", "en", "", "NO_TEXT_CONTENT"),
    ]


def new_version(doc: Doc, n: int) -> Doc:
    """Another content of the same document (a re-upload: a new version)."""
    suffix = (
        f" Revision {n} adds a closing note."
        if doc.language == "en"
        else f"第{n}次修订补充了结尾说明。"
    )
    title = f"Revision {n}" if doc.language == "en" else f"修订 {n}"
    text = doc.text + suffix
    data = _render(doc.fmt, title, text)
    return Doc(doc.knowledge_base_id, doc.document_id, data, doc.language, text)


def questions() -> Iterator[tuple[str, str]]:
    """(knowledge base, question) pairs for the clients, cycling forever."""
    en = [
        "What is the effect of the slipstream on the wing lift?",
        "How is heat transfer measured in the boundary layer?",
        "What does the report say about vector search latency?",
    ]
    zh = ["这个游戏是由哪家公司开发的？", "文中提到了哪些城市？", "报告的结论是什么？"]
    i = 0
    while True:
        yield (EN_KB, en[i % len(en)]) if i % 3 else (ZH_KB, zh[i % len(zh)])
        i += 1
