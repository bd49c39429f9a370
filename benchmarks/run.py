"""`make bench`: run every benchmark module and write docs/benchmarks.md.

Each module `benchmarks/bench_<area>.py` exposes `run() -> str`, returning a
Markdown section (starting with `## `) with its figures and, for every target,
the ratio against a baseline measured in the same run. A module with
`DOC = "reliability.md"` writes into that file of docs/ instead.
`python -m benchmarks.run embedding chunking` runs a subset and updates only
those sections of the file.
"""

from __future__ import annotations

import importlib
import os
import platform
import re
import signal
import sys
import time
import traceback
from pathlib import Path

ORDER = [
    "chunking",
    "documents",
    "embedding",
    "models",
    "retrieval",
    "quality",
    "generation",
    "admission",
    "pipeline",
    "ingest",
    "eval",
    "answers",
    "uploads",
    "web",
]
DOCS = Path(__file__).resolve().parents[1] / "docs"
OUT = DOCS / "benchmarks.md"
HEADER = """# Benchmarks

Written by `make bench` (`python -m benchmarks.run [area ...]`). Every ratio is
against a baseline measured in the same run on the same machine; absolute
figures vary with the machine and its load. Sections are replaced one by one,
so a partial run leaves the others as they were.
"""
MARK = "<!-- section:{name} -->"


def _sections(text: str) -> dict[str, str]:
    parts = re.split(r"<!-- section:([a-z_]+) -->\n", text)
    return {parts[i]: parts[i + 1].rstrip() + "\n" for i in range(1, len(parts) - 1, 2)}


def _doc_of(name: str) -> Path:
    module = importlib.import_module(f"benchmarks.bench_{name}")
    return DOCS / str(getattr(module, "DOC", "benchmarks.md"))


def main(argv: list[str]) -> int:
    wanted = argv or [n for n in ORDER if (Path(__file__).parent / f"bench_{n}.py").exists()]
    failed = False
    by_doc: dict[Path, dict[str, str]] = {}
    for name in wanted:
        print(f"== bench {name}", flush=True)
        start = time.perf_counter()
        try:
            doc = _doc_of(name)
            sections = by_doc.setdefault(doc, _sections(doc.read_text()) if doc.exists() else {})
            module = importlib.import_module(f"benchmarks.bench_{name}")
            body = module.run().rstrip() + "\n"
        except Exception:
            failed = True
            traceback.print_exc()
            continue
        stamp = (
            f"\n_Run {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} on "
            f"{platform.machine()}, {os.cpu_count()} cores, Python "
            f"{platform.python_version()}, {time.perf_counter() - start:.0f} s._\n"
        )
        sections[name] = body + stamp
        print(body, flush=True)
    for doc, sections in by_doc.items():
        ordered = [n for n in ORDER if n in sections] + [n for n in sections if n not in ORDER]
        header = HEADER if doc == OUT else _header_of(doc)
        doc.parent.mkdir(parents=True, exist_ok=True)
        doc.write_text(header + "".join(f"\n{MARK.format(name=n)}\n{sections[n]}" for n in ordered))
        print(f"wrote {doc}")
    return 1 if failed else 0


def _header_of(doc: Path) -> str:
    """What precedes the first generated section of a document (kept as written)."""
    text = doc.read_text() if doc.exists() else f"# {doc.stem.title()}\n"
    return text.split("\n<!-- section:", 1)[0].rstrip() + "\n"


def _exit_on_sigterm(signum: int, frame: object) -> None:
    # SystemExit unwinds the running benchmark's `finally` blocks, which stop the
    # stacks and servers it started; the default SIGTERM action would orphan them.
    raise SystemExit(128 + signum)


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    sys.exit(main(sys.argv[1:]))
