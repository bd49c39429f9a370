"""Long titles, heading paths and file names are truncated to what the retrieval
service stores, on a character boundary, instead of failing the document."""

from __future__ import annotations

import json

import pytest

from services.chunking import fields, parsing
from services.chunking.chunker import Chunker, ChunkRequest, load_counter
from services.chunking.config import ChunkingSettings
from services.retrieval.schema import F_HEADING_PATH, F_TITLE, VARCHAR_LIMITS
from services.retrieval.validation import check_varchar


@pytest.fixture(scope="module")
def chunker() -> Chunker:
    settings = ChunkingSettings()
    return Chunker(settings, load_counter(settings))


def _json_bytes(path: tuple[str, ...] | list[str]) -> int:
    return len(json.dumps(list(path), ensure_ascii=False).encode())


def test_limits_are_the_retrieval_service_s() -> None:
    assert VARCHAR_LIMITS[F_TITLE] == fields.TITLE_MAX_BYTES
    assert VARCHAR_LIMITS[F_HEADING_PATH] == fields.HEADING_PATH_MAX_BYTES


@pytest.mark.parametrize("char", ["a", "é", "中", "😀"])
@pytest.mark.parametrize("limit", [3, 4, 5, 10, 1024])
def test_truncate_on_a_character_boundary(char: str, limit: int) -> None:
    text = char * 2000
    cut = fields.truncate_utf8(text, limit)
    assert len(cut.encode()) <= limit
    assert cut.endswith(fields.ELLIPSIS)
    assert text.startswith(cut[: -len(fields.ELLIPSIS)])
    # As long as possible: one more character would not fit.
    assert len((cut[:-1] + char + fields.ELLIPSIS).encode()) > limit


def test_short_text_is_unchanged() -> None:
    assert fields.truncate_utf8("Guide", 1024) == "Guide"
    assert fields.truncate_utf8("é" * 512, 1024) == "é" * 512  # exactly 1024 bytes
    assert fields.truncate_utf8("word " * 300, 23) == "word word word word…"  # no space before …


def test_heading_path_fits_as_json() -> None:
    short = ("Guide", "Install")
    assert fields.fit_heading_path(short) == short
    long_one = ("Guide", "x" * 10_000, "Use")
    fitted = fields.fit_heading_path(long_one)
    assert fitted[0] == "Guide" and fitted[2] == "Use"
    assert fitted[1].startswith("xxx") and fitted[1].endswith(fields.ELLIPSIS)
    assert _json_bytes(fitted) <= fields.HEADING_PATH_MAX_BYTES
    assert _json_bytes(fitted) > fields.HEADING_PATH_MAX_BYTES - 16  # uses the room


@pytest.mark.parametrize(
    "path",
    [
        tuple(f"{level}" + "中" * 3000 for level in range(6)),
        ('"quoted\\"' * 2000, "b"),  # JSON escapes take two bytes
        ("a" * 5000, "é" * 5000, "😀" * 5000, "short"),
    ],
)
def test_heading_paths_of_any_shape_fit(path: tuple[str, ...]) -> None:
    fitted = fields.fit_heading_path(path)
    assert len(fitted) == len(path)
    assert _json_bytes(fitted) <= fields.HEADING_PATH_MAX_BYTES
    for original, cut in zip(path, fitted, strict=True):
        assert cut == original or original.startswith(cut[: -len(fields.ELLIPSIS)])


def test_long_title_and_headings_are_truncated_not_refused(chunker: Chunker) -> None:
    huge = "Título muy largo " * 5000
    quotes = '"' * 9000
    html = (
        f"<html><head><title>{huge}</title></head><body>"
        f"<h1>{huge}</h1><p>intro</p><h2>{quotes}</h2><p>body</p></body></html>"
    )
    result = chunker.chunk(ChunkRequest(content=html.encode(), media_type="text/html"))
    assert len(result.title.encode()) <= fields.TITLE_MAX_BYTES
    assert result.title.startswith("Título muy largo")
    check_varchar("title", result.title)
    for chunk in result.chunks:
        check_varchar("heading_path", json.dumps(list(chunk.heading_path), ensure_ascii=False))
    # The heading's text itself stays whole in the chunks.
    assert sum(len(c.text) for c in result.chunks) >= len(huge.strip())


def test_long_file_name_as_title(chunker: Chunker) -> None:
    name = "ž" * 600 + ".txt"  # 1,204 bytes: the gateway allows 512+ characters
    result = chunker.chunk(ChunkRequest(content=b"hello", file_name=name))
    assert result.title.startswith("žž") and result.title.endswith(fields.ELLIPSIS)
    check_varchar("title", result.title)


def test_long_markdown_heading() -> None:
    doc = parsing.assemble(parsing.parse_markdown("# " + "word " * 3000 + "\n\nbody"))
    assert doc.title.endswith(fields.ELLIPSIS)
    assert len(doc.title.encode()) <= fields.TITLE_MAX_BYTES
    assert _json_bytes(doc.sections[0].heading_path) <= fields.HEADING_PATH_MAX_BYTES
