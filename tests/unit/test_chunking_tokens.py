"""The fast token offsets equal what the tokenizer gives for the whole text."""

from __future__ import annotations

import random

import pytest

from benchmarks.chunking_data import chinese_text, english_text
from services.chunking.chunker import load_counter
from services.chunking.config import ChunkingSettings
from services.chunking.tokens import LONG_PIECE_CHARS, TokenCounter

# Letters, accents, scripts, punctuation of many kinds, symbols, emoji and
# characters the tokenizer drops (controls, format characters, U+FFFD).
ALPHABET = [
    *"abcxyzABC ÉéüßİıçØ.,;:!?'\"()[]-—–…«»“”‘’。！？；，、：中文汉字検索ひらがなカタカナ한국어"
    " \t\n\u00a0\u200b\u200d\u2028\ufeff\ufffd\u0301\u0308≠½²①ﬁ🙂👍🏽\x1c\x85\x0b"
    "@#$%^&*_+=/\\|~`<>{}0123456789\ue000\u0378",
    *("\U0002a700", "\u9ffd", "\U0001f600", "word", "internationalization", "test"),
]


@pytest.fixture(scope="module")
def counter() -> TokenCounter:
    return load_counter(ChunkingSettings())


def reference(counter: TokenCounter, text: str) -> tuple[list[int], list[int]]:
    enc = counter._tokenizer.encode(text, add_special_tokens=False)
    return [a for a, _ in enc.offsets], [b for _, b in enc.offsets]


def test_random_unicode_offsets_match_the_tokenizer(counter: TokenCounter) -> None:
    rng = random.Random(5)
    for _ in range(2000):
        text = "".join(rng.choice(ALPHABET) for _ in range(rng.randint(1, 80)))
        offsets = counter.offsets(text)
        assert (list(offsets.starts), list(offsets.ends)) == reference(counter, text), text
        assert offsets.forced_cuts == []


@pytest.mark.parametrize(
    "text", [english_text(200), chinese_text(500), english_text(20) + chinese_text(50)]
)
def test_document_offsets_match_the_tokenizer(counter: TokenCounter, text: str) -> None:
    offsets = counter.offsets(text)
    assert (list(offsets.starts), list(offsets.ends)) == reference(counter, text)


def test_windows_are_cut_between_words(counter: TokenCounter, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setattr("services.chunking.tokens.WINDOW_CHARS", 1000)
    text = english_text(30)
    offsets = counter.offsets(text)
    assert (list(offsets.starts), list(offsets.ends)) == reference(counter, text)


def test_long_runs_are_cut_and_recorded(counter: TokenCounter) -> None:
    text = "start " + "q" * (LONG_PIECE_CHARS * 3 + 5) + " end"
    offsets = counter.offsets(text)
    assert offsets.forced_cuts == [6 + LONG_PIECE_CHARS * k for k in (1, 2, 3)]
    assert offsets.starts[0] == 0 and offsets.starts[1] == 6


def test_calibration_found_the_boundaries(counter: TokenCounter) -> None:
    assert {" ", "\n", "\t", "\u3000"} <= counter.spaces
    assert "\x1c" not in counter.spaces  # isspace() in Python, dropped by the tokenizer
    assert {".", ",", "。", "、", "!", "中", "文"} <= counter.isolated
    assert "a" not in counter.isolated and "≠" not in counter.isolated


def test_count_includes_special_tokens(counter: TokenCounter) -> None:
    assert counter.special_tokens == 2
    assert counter.count("hello world") == 4
    assert counter.count("") == 2
