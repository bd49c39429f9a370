"""Splitting: token limits from the real tokenizer, offsets, overlap, CJK, determinism."""

from __future__ import annotations

import random

import pytest

from benchmarks.chunking_data import chinese_text, english_pdf, english_text
from services.chunking.chunker import ChunkedDocument, Chunker, ChunkRequest, load_counter
from services.chunking.config import ChunkingSettings
from services.chunking.tokens import TokenCounter
from services.common.errors import InvalidArgument, ResourceExhausted


@pytest.fixture(scope="module")
def counter() -> TokenCounter:
    return load_counter(ChunkingSettings())


@pytest.fixture(scope="module")
def chunker(counter: TokenCounter) -> Chunker:
    return Chunker(ChunkingSettings(), counter, 40 * 1024 * 1024)


def check_invariants(result: ChunkedDocument, counter: TokenCounter, max_tokens: int) -> None:
    """Offsets point into the normalised text, counts are the tokenizer's, limits hold."""
    assert result.chunks
    previous_start = -1
    for i, chunk in enumerate(result.chunks):
        assert chunk.index == i
        assert result.text[chunk.start : chunk.end] == chunk.text
        assert chunk.text == chunk.text.strip()
        assert chunk.token_count == counter.count(chunk.text)
        assert chunk.token_count <= max_tokens
        assert chunk.start > previous_start
        previous_start = chunk.start
    assert result.total_tokens == sum(c.token_count for c in result.chunks)


def covered(result: ChunkedDocument) -> bool:
    """Every non-space character of the text is in some chunk (nothing dropped)."""
    mask = bytearray(len(result.text))
    for c in result.chunks:
        mask[c.start : c.end] = b"\x01" * (c.end - c.start)
    return all(mask[i] or ch.isspace() for i, ch in enumerate(result.text))


@pytest.mark.parametrize("max_tokens", [8, 32, 128, 256])
def test_english_limits_and_offsets(
    chunker: Chunker, counter: TokenCounter, max_tokens: int
) -> None:
    text = english_text(30)
    result = chunker.chunk(ChunkRequest(text=text, max_tokens=max_tokens, overlap_tokens=0))
    check_invariants(result, counter, max_tokens)
    assert covered(result)
    # Without overlap, chunks tile the text in order without repeating anything.
    for a, b in zip(result.chunks, result.chunks[1:], strict=False):
        assert a.end <= b.start
    if max_tokens == 256:
        assert sum(c.token_count for c in result.chunks) / len(result.chunks) > 150


def test_chunks_end_at_sentences_when_they_can(chunker: Chunker) -> None:
    result = chunker.chunk(ChunkRequest(text=english_text(40), max_tokens=128))
    ends = [c.text[-1] for c in result.chunks[:-1]]
    assert sum(e in ".?!" for e in ends) >= 0.9 * len(ends)


def test_heading_stays_with_its_text(chunker: Chunker, counter: TokenCounter) -> None:
    md = "# Guide\n\n## Install\n\n" + english_text(6) + "\n\n## Use\n\nShort."
    result = chunker.chunk(
        ChunkRequest(content=md.encode(), media_type="text/markdown", max_tokens=64)
    )
    check_invariants(result, counter, 64)
    assert result.title == "Guide"
    install = [c for c in result.chunks if c.heading_path == ("Guide", "Install")]
    assert install[0].text.startswith("## Install\n\n")
    assert len(install[0].text) > 40  # not a chunk of just the heading
    assert result.chunks[-1].heading_path == ("Guide", "Use")
    assert result.chunks[-1].text == "## Use\n\nShort."


@pytest.mark.parametrize("overlap", [1, 16, 60])
def test_overlap(chunker: Chunker, counter: TokenCounter, overlap: int) -> None:
    result = chunker.chunk(
        ChunkRequest(text=english_text(20), max_tokens=64, overlap_tokens=overlap)
    )
    check_invariants(result, counter, 64)
    assert covered(result)
    overlapping = 0
    for a, b in zip(result.chunks, result.chunks[1:], strict=False):
        assert b.start > a.start and b.end > a.end
        if b.start < a.end:
            overlapping += 1
            repeated = result.text[b.start : a.end]
            assert counter.count(repeated) - counter.special_tokens <= overlap
    assert overlapping >= len(result.chunks) // 2


def test_chinese_splits_at_sentence_marks(chunker: Chunker, counter: TokenCounter) -> None:
    text = chinese_text(200)
    result = chunker.chunk(ChunkRequest(text=text, max_tokens=64, overlap_tokens=0))
    check_invariants(result, counter, 64)
    assert covered(result)
    # NFKC keeps 。 and turns ！？； into !?;
    ends = [c.text[-1] for c in result.chunks[:-1]]
    assert sum(e in "。!?;" for e in ends) >= 0.9 * len(ends)


def test_chinese_without_punctuation_splits_by_characters(
    chunker: Chunker, counter: TokenCounter
) -> None:
    text = "检索增强生成系统" * 500
    result = chunker.chunk(ChunkRequest(text=text, max_tokens=50))
    check_invariants(result, counter, 50)
    assert "".join(c.text for c in result.chunks) == text
    assert all(c.token_count == 50 for c in result.chunks[:-1])


def test_long_line_without_spaces(chunker: Chunker, counter: TokenCounter) -> None:
    """A word longer than WordPiece's 100 characters is one [UNK]: the character cap splits it."""
    text = "x" * 50_000
    result = chunker.chunk(ChunkRequest(text=text))
    check_invariants(result, counter, 256)
    assert "".join(c.text for c in result.chunks) == text
    assert max(len(c.text) for c in result.chunks) <= ChunkingSettings().max_chunk_chars


def test_long_subword_line(chunker: Chunker, counter: TokenCounter) -> None:
    """A word cut inside: counts come from the tokenizer and still fit."""
    rng = random.Random(3)
    word = "".join(rng.choice("abcdefghij") for _ in range(95))
    text = " ".join([word] * 40).replace(" ", "")[:3000] + " tail"
    result = chunker.chunk(ChunkRequest(text=text, max_tokens=40))
    check_invariants(result, counter, 40)
    assert "".join(c.text for c in result.chunks).replace(" ", "") == text.replace(" ", "")


def test_pdf_chunks(chunker: Chunker, counter: TokenCounter) -> None:
    result = chunker.chunk(ChunkRequest(content=english_pdf(3), file_name="r.pdf"))
    assert result.media_type == "application/pdf"
    assert result.title == "Generated report"
    check_invariants(result, counter, 256)


def test_deterministic(chunker: Chunker) -> None:
    md = ("# A\n\n" + english_text(8) + "\n\n## B\n\n" + chinese_text(40)).encode()
    runs = [
        chunker.chunk(
            ChunkRequest(content=md, media_type="text/markdown", max_tokens=48, overlap_tokens=8)
        )
        for _ in range(3)
    ]
    for other in runs[1:]:
        assert other.chunks == runs[0].chunks
        assert other.text == runs[0].text


def test_title_falls_back_to_file_name(chunker: Chunker) -> None:
    result = chunker.chunk(ChunkRequest(content=b"no headings here", file_name="notes.txt"))
    assert result.title == "notes.txt"
    assert result.media_type == "text/plain"


@pytest.mark.parametrize(
    ("max_tokens", "overlap", "reason"),
    [
        (257, 0, "MAX_TOKENS_OUT_OF_RANGE"),
        (-1, 0, "MAX_TOKENS_OUT_OF_RANGE"),
        (2, 0, "MAX_TOKENS_OUT_OF_RANGE"),
        (64, 64, "OVERLAP_TOO_LARGE"),
        (64, 62, "OVERLAP_TOO_LARGE"),
        (64, -2, "INVALID_OVERLAP"),
    ],
)
def test_bad_limits(chunker: Chunker, max_tokens: int, overlap: int, reason: str) -> None:
    with pytest.raises(InvalidArgument) as exc:
        chunker.chunk(ChunkRequest(text="hello", max_tokens=max_tokens, overlap_tokens=overlap))
    assert exc.value.reason == reason


def test_defaults(chunker: Chunker) -> None:
    assert chunker.limits(0, -1) == (256, 0)
    assert chunker.limits(10, 7) == (10, 7)


@pytest.mark.parametrize(
    ("request_", "reason"),
    [
        (ChunkRequest(content=b""), "EMPTY_DOCUMENT"),
        (ChunkRequest(text=""), "EMPTY_DOCUMENT"),
        (ChunkRequest(), "EMPTY_DOCUMENT"),
        (ChunkRequest(content=b" \n\t \n"), "NO_TEXT_CONTENT"),
        (ChunkRequest(content=b"<script>x()</script>", media_type="text/html"), "NO_TEXT_CONTENT"),
    ],
)
def test_empty(chunker: Chunker, request_: ChunkRequest, reason: str) -> None:
    with pytest.raises(InvalidArgument) as exc:
        chunker.chunk(request_)
    assert exc.value.reason == reason


def test_size_limits(counter: TokenCounter) -> None:
    small = Chunker(ChunkingSettings(max_document_bytes=1000), counter, 40 * 1024 * 1024)
    with pytest.raises(ResourceExhausted) as exc:
        small.chunk(ChunkRequest(content=b"x" * 1001))
    assert exc.value.reason == "DOCUMENT_TOO_LARGE"
    with pytest.raises(ResourceExhausted):
        small.chunk(ChunkRequest(text="é" * 501))  # counted in UTF-8 bytes
    tight = Chunker(ChunkingSettings(), counter, 4000)
    with pytest.raises(ResourceExhausted) as exc:
        tight.chunk(ChunkRequest(text=english_text(10), max_tokens=16, overlap_tokens=12))
    assert exc.value.reason == "RESPONSE_TOO_LARGE"


def test_invalid_utf8_is_replaced_and_counted(chunker: Chunker) -> None:
    result = chunker.chunk(
        ChunkRequest(content=b"caf\xe9 ok \xff\xfe end", media_type="text/plain")
    )
    assert result.invalid_utf8_replacements == 3
    assert result.text == "caf\ufffd ok \ufffd\ufffd end"


def test_cancellation_hook_stops_work(chunker: Chunker) -> None:
    class Stop(Exception):
        pass

    def check() -> None:
        raise Stop

    with pytest.raises(Stop):
        chunker.chunk(ChunkRequest(text=english_text(5)), check)
