"""Token counting with the model's own tokenizer (the `tokenizers` package)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from tokenizers import Tokenizer


def load_tokenizer(path: Path) -> Tokenizer:
    """A fresh tokenizer from tokenizer.json with the file's own truncation and padding
    switched off (all-MiniLM-L6-v2's file pads and cuts everything to 128 tokens, while
    the model takes 256)."""
    tokenizer = Tokenizer.from_file(str(path))
    tokenizer.no_truncation()
    tokenizer.no_padding()
    return tokenizer


class TokenCounter:
    """Counts tokens as the model sees them: word pieces plus [CLS] and [SEP]."""

    def __init__(self, tokenizer_json: Path) -> None:
        self._tokenizer = load_tokenizer(tokenizer_json)

    def count(self, texts: Sequence[str]) -> list[int]:
        encodings = self._tokenizer.encode_batch(list(texts), add_special_tokens=True)
        return [len(e.ids) for e in encodings]

    def truncate(self, text: str, max_tokens: int) -> str:
        """The longest prefix of `text` that is at most `max_tokens` tokens (special tokens
        included), cut at a token boundary; for backends without a truncate option."""
        encoding = self._tokenizer.encode(text, add_special_tokens=True)
        if len(encoding.ids) <= max_tokens:
            return text
        budget = max_tokens - 2
        while budget > 0:
            end = encoding.offsets[budget][1]  # offsets[0] is [CLS]
            cut = text[:end]
            if self.count([cut])[0] <= max_tokens:
                return cut
            budget -= 1  # a word cut mid-way can tokenise into more pieces
        return ""
