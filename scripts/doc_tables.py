"""Regenerate the tables in README.md and docs/*.md that are generated from the
code: the settings tables (from the settings classes) and the error reasons
(from services/common/reasons.py).

A generated section sits between `<!-- generated:NAME -->` and
`<!-- /generated:NAME -->`, where NAME is `config` (every setting),
`config:OWNER[,OWNER]` (the settings of those packages) or `errors`.
`python -m scripts.doc_tables` rewrites them; tests/unit/test_doc_tables.py
fails when one has drifted.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

from scripts.config_table import markdown
from scripts.errors_doc import render

REPO = Path(__file__).resolve().parents[1]
SECTION = re.compile(
    r"(<!-- generated:(?P<name>[a-z:,]+) -->\n)(?P<body>.*?)(\n<!-- /generated:(?P=name) -->)",
    re.DOTALL,
)


def generate(name: str) -> str:
    if name == "config":
        return markdown()
    if name.startswith("config:"):
        return markdown(set(name.split(":", 1)[1].split(",")))
    if name == "errors":
        return render()
    raise ValueError(f"unknown generated section {name!r}")


def documents() -> Iterator[Path]:
    yield REPO / "README.md"
    yield from sorted((REPO / "docs").glob("*.md"))


def rewritten(text: str) -> str:
    return SECTION.sub(lambda m: m.group(1) + generate(m.group("name")) + m.group(4), text)


def drifted() -> list[str]:
    """`file: section` for every generated section that is not up to date."""
    out = []
    for path in documents():
        text = path.read_text()
        for m in SECTION.finditer(text):
            if m.group("body") != generate(m.group("name")):
                out.append(f"{path.relative_to(REPO)}: {m.group('name')}")
    return out


def main() -> None:
    for path in documents():
        text = path.read_text()
        new = rewritten(text)
        if new != text:
            path.write_text(new)
            print(f"updated {path.relative_to(REPO)}")


if __name__ == "__main__":
    main()
