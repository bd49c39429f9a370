"""Validation of EmbedTexts requests with the model's real tokenizer: every bad input
gives INVALID_ARGUMENT with a precise reason, never a silent truncation."""

from __future__ import annotations

import pytest

from services.common import errors
from services.common.models import minilm_model_dir
from services.embedding.config import EmbeddingSettings
from services.embedding.core import DEFAULT_INPUT_TYPE, EmbeddingCore, InputType
from services.embedding.server import input_type_of
from services.embedding.tokens import TokenCounter

MAX_TOKENS = 256


@pytest.fixture(scope="module")
def counter() -> TokenCounter:
    return TokenCounter(minilm_model_dir() / "tokenizer.json")


@pytest.fixture(scope="module")
def core(counter: TokenCounter) -> EmbeddingCore:
    # The local embedder loads its model lazily: validation alone never loads it.
    return EmbeddingCore(
        EmbeddingSettings(max_texts_per_call=4, max_text_chars=5000), counter=counter
    )


def reason_of(core: EmbeddingCore, texts: list[str], truncate: bool = False) -> str:
    with pytest.raises(errors.InvalidArgument) as caught:
        core.validate(texts, truncate, MAX_TOKENS)
    return caught.value.reason


def test_token_counts_include_cls_and_sep(counter: TokenCounter) -> None:
    assert counter.count(["hello world", "Hello, World!"]) == [4, 6]
    # The tokenizer file pads to 128; counting must not.
    assert counter.count(["word " * 300]) == [302]


def test_valid_texts_return_their_token_counts(core: EmbeddingCore) -> None:
    assert core.validate(["hello world", "a b c"], False, MAX_TOKENS) == [4, 5]


def test_empty_list(core: EmbeddingCore) -> None:
    assert reason_of(core, []) == "NO_TEXTS"


@pytest.mark.parametrize("blank", ["", "   ", "\n\t"])
def test_empty_or_blank_text(core: EmbeddingCore, blank: str) -> None:
    with pytest.raises(errors.InvalidArgument) as caught:
        core.validate(["fine", blank], False, MAX_TOKENS)
    assert caught.value.reason == "EMPTY_TEXT"
    assert caught.value.metadata == {"index": "1"}
    assert "texts[1]" in caught.value.message


def test_too_many_texts(core: EmbeddingCore) -> None:
    with pytest.raises(errors.InvalidArgument) as caught:
        core.validate(["a"] * 5, False, MAX_TOKENS)
    assert caught.value.reason == "TOO_MANY_TEXTS"
    assert caught.value.metadata == {"count": "5", "max": "4"}


def test_text_over_the_token_limit_is_rejected_without_truncate(core: EmbeddingCore) -> None:
    with pytest.raises(errors.InvalidArgument) as caught:
        core.validate(["ok", "word " * 255], False, MAX_TOKENS)
    assert caught.value.reason == "TEXT_TOO_LONG"
    assert caught.value.metadata == {"index": "1", "tokens": "257", "max_tokens": "256"}


def test_text_at_the_limit_is_accepted(core: EmbeddingCore) -> None:
    assert core.validate(["word " * 254], False, MAX_TOKENS) == [256]


def test_truncate_accepts_and_reports_the_tokens_kept(core: EmbeddingCore) -> None:
    assert core.validate(["word " * 1000, "short"], True, MAX_TOKENS) == [256, 3]


def test_huge_text_is_refused_even_with_truncate(core: EmbeddingCore) -> None:
    assert reason_of(core, ["x" * 5001], truncate=True) == "TEXT_TOO_LARGE"


def test_prefix_counts_towards_the_limit(core: EmbeddingCore) -> None:
    assert core.validate(["word " * 254], False, MAX_TOKENS, prefix="") == [256]
    with pytest.raises(errors.InvalidArgument):
        core.validate(["word " * 254], False, MAX_TOKENS, prefix="query: ")


def test_input_types() -> None:
    assert input_type_of(0) is None
    assert DEFAULT_INPUT_TYPE is InputType.DOCUMENT
    assert input_type_of(1) is InputType.QUERY
    assert input_type_of(2) is InputType.DOCUMENT
    with pytest.raises(errors.InvalidArgument) as caught:
        input_type_of(7)
    assert caught.value.reason == "UNKNOWN_INPUT_TYPE"


def test_truncate_cuts_at_a_token_boundary_within_the_limit(counter: TokenCounter) -> None:
    text = "unbelievably " * 200 + "tail"
    cut = counter.truncate(text, 50)
    assert text.startswith(cut)
    assert 45 <= counter.count([cut])[0] <= 50
    assert counter.truncate("short text", 50) == "short text"
    chinese = "向量数据库。" * 100
    cut = counter.truncate(chinese, 20)
    assert counter.count([cut])[0] <= 20 and chinese.startswith(cut) and len(cut) >= 15
