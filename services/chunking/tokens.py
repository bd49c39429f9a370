"""Token counting with the embedding model's own tokenizer (HF `tokenizers`).

A document is tokenised once, with character offsets; the splitter then
counts the tokens of any span by bisecting those offsets instead of
re-tokenising it.

Tokenising once is itself made cheap. A BERT tokenizer first cuts the text
into pre-tokens at whitespace, punctuation and CJK characters, then
tokenises each pre-token on its own. So the text is cut at those same
boundaries here (a regex), each *distinct* piece is given to the real
tokenizer once (`encode_batch`), and the offsets are assembled with numpy.
Natural text repeats its words, so this is several times faster than
encoding the whole text, and exact: which characters are boundaries is not
assumed but measured against the tokenizer when it is loaded (`_calibrate`),
and a piece that holds a boundary we did not know about is still tokenised
correctly by the tokenizer itself. Counts add up across a boundary; a chunk
cut inside a word is re-tokenised on its own (`count`).
"""

from __future__ import annotations

import functools
import re
import unicodedata
from array import array
from dataclasses import dataclass
from itertools import chain
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer

#: Characters per window of work: bounds the memory of the per-piece lists.
WINDOW_CHARS = 1 << 20
#: Longer runs without a boundary are cut (recorded as forced cuts): WordPiece
#: makes a word over 100 characters one [UNK] anyway, and a 10 MB run of one
#: letter becomes 1024-character pieces that are all the same.
LONG_PIECE_CHARS = 1024
#: Distinct pieces remembered across documents (words recur between documents too).
CACHE_LIMIT = 500_000
_ENCODE_BATCH = 8192
COUNT_CACHE_SIZE = 1024

# Candidates; `_calibrate` keeps those the tokenizer really treats as boundaries.
_CJK_RANGES = ((0x3400, 0x4DBF), (0x4E00, 0x9FFF), (0xF900, 0xFAFF))
_SCAN_LIMIT = 0x20000  # no punctuation or whitespace is assigned above this
#: Runs of spaces, one isolated character, or a run of anything else (in translated text).
_PIECES = re.compile(r" +|\.|[^ .]+")


@dataclass
class TokenOffsets:
    """Start and end character offsets of every token of a text, in order."""

    starts: array[int]
    ends: array[int]
    #: positions inside a word where the text was cut for tokenising (sorted)
    forced_cuts: list[int]

    def __len__(self) -> int:
        return len(self.starts)


class TokenCounter:
    def __init__(self, tokenizer_file: Path, name: str) -> None:
        tokenizer = Tokenizer.from_file(str(tokenizer_file))
        # tokenizer.json ships with truncation at 128 and padding: counts must see everything.
        tokenizer.no_truncation()
        tokenizer.no_padding()
        self._tokenizer = tokenizer
        self.name = name
        #: [CLS] and [SEP] for BERT: added to every chunk the model embeds
        self.special_tokens = len(tokenizer.encode("", add_special_tokens=True).ids)
        self.spaces, self.isolated = self._calibrate()
        # Pieces are found on a translated copy of the text where every space is
        # " " and every isolated character "." (a regex with these thousands of
        # characters in its classes runs several times slower).
        self._classes = str.maketrans(
            {**dict.fromkeys(self.spaces, " "), **dict.fromkeys(self.isolated, ".")}
        )
        self._separators = self.spaces | self.isolated
        self._cache: dict[str, tuple[tuple[int, ...], tuple[int, ...]]] = {}
        # Chunks cut inside a word are counted on their own; repeated content
        # (a run of one character, boilerplate) is counted once.
        self._count = functools.lru_cache(maxsize=COUNT_CACHE_SIZE)(self._encode_count)

    def _calibrate(self) -> tuple[frozenset[str], frozenset[str]]:
        """The characters this tokenizer splits on (dropped) and isolates (own pre-token).

        Candidates are whitespace, punctuation and CJK ideographs; each is put
        between two letters and kept only if the tokenizer agrees.
        """
        spaces, isolated = [], []
        for cp in range(_SCAN_LIMIT):
            c = chr(cp)
            if c.isspace():
                spaces.append(c)
            elif unicodedata.category(c)[0] == "P" or (33 <= cp <= 126 and not c.isalnum()):
                isolated.append(c)
        isolated.extend(chr(cp) for lo, hi in _CJK_RANGES for cp in range(lo, hi + 1))
        probes = [f"a{c}b" for c in chain(spaces, isolated)]
        found = [
            e.offsets
            for k in range(0, len(probes), _ENCODE_BATCH)
            for e in self._tokenizer.encode_batch(
                probes[k : k + _ENCODE_BATCH], add_special_tokens=False
            )
        ]
        n = len(spaces)
        return (
            frozenset(c for c, o in zip(spaces, found[:n], strict=True) if o == [(0, 1), (2, 3)]),
            frozenset(
                c for c, o in zip(isolated, found[n:], strict=True) if o == [(0, 1), (1, 2), (2, 3)]
            ),
        )

    def count(self, text: str) -> int:
        """Tokens of `text` as the embedding model sees it, special tokens included."""
        return self._count(text)

    def _encode_count(self, text: str) -> int:
        return len(self._tokenizer.encode(text, add_special_tokens=True).ids)

    def is_boundary(self, text: str, pos: int) -> bool:
        """Whether the tokenizer's pre-tokens never straddle position `pos`.

        True at the text's ends and next to whitespace, punctuation or a CJK
        character: token counts add up across it.
        """
        if pos <= 0 or pos >= len(text):
            return True
        return text[pos - 1] in self._separators or text[pos] in self._separators

    def offsets(self, text: str) -> TokenOffsets:
        """Offsets of the tokens of `text` (no special tokens), as `encode` gives them."""
        starts: array[int] = array("i")
        ends: array[int] = array("i")
        forced: list[int] = []
        pos, n = 0, len(text)
        while pos < n:
            end = min(n, pos + WINDOW_CHARS)
            if end < n:
                cut = max(text.rfind(" ", pos, end), text.rfind("\n", pos, end))
                if cut > pos:
                    end = cut
            self._window(text[pos:end], pos, starts, ends, forced)
            if end < n and not self.is_boundary(text, end):
                forced.append(end)
            pos = end
        forced.sort()
        return TokenOffsets(starts, ends, forced)

    def _window(
        self, text: str, base: int, starts: array[int], ends: array[int], forced: list[int]
    ) -> None:
        # Runs of other characters are the text itself; spaces give no tokens and an
        # isolated character is exactly one token (calibrated), whichever it is.
        pieces: list[str] = _PIECES.findall(text.translate(self._classes))
        lengths = np.fromiter(map(len, pieces), dtype=np.int64, count=len(pieces))
        if len(lengths) and lengths.max() > LONG_PIECE_CHARS:
            pieces, lengths = self._cut_long(pieces, lengths, base, forced)
        piece_starts = np.cumsum(lengths) - lengths + base
        cache = self._cache
        distinct = list(dict.fromkeys(pieces))
        unknown = [p for p in distinct if p not in cache]
        if len(cache) + len(unknown) > CACHE_LIMIT:
            cache.clear()
            unknown = distinct
        for k in range(0, len(unknown), _ENCODE_BATCH):
            batch = unknown[k : k + _ENCODE_BATCH]
            for piece, enc in zip(
                batch,
                self._tokenizer.encode_batch(batch, add_special_tokens=False),
                strict=True,
            ):
                offs = enc.offsets
                cache[piece] = (tuple(a for a, _ in offs), tuple(b for _, b in offs))
        index = {p: i for i, p in enumerate(distinct)}
        entries = [cache[p] for p in distinct]
        counts = np.fromiter((len(s) for s, _ in entries), dtype=np.int64, count=len(entries))
        rel_starts = np.fromiter(chain.from_iterable(s for s, _ in entries), dtype=np.int64)
        rel_ends = np.fromiter(chain.from_iterable(e for _, e in entries), dtype=np.int64)
        first_of = np.cumsum(counts) - counts  # where each distinct piece's tokens begin
        ids = np.fromiter(map(index.__getitem__, pieces), dtype=np.int64, count=len(pieces))
        per_piece = counts[ids]
        total = int(per_piece.sum())
        if total == 0:
            return
        # Token t belongs to piece p(t) and is its k-th token: its offsets are the
        # piece's start plus the k-th relative offset of that distinct piece.
        owner_start = np.repeat(piece_starts, per_piece)
        nth = np.arange(total) - np.repeat(np.cumsum(per_piece) - per_piece, per_piece)
        src = np.repeat(first_of[ids], per_piece) + nth
        starts.frombytes((owner_start + rel_starts[src]).astype(np.int32).tobytes())
        ends.frombytes((owner_start + rel_ends[src]).astype(np.int32).tobytes())

    @staticmethod
    def _cut_long(
        pieces: list[str], lengths: np.ndarray, base: int, forced: list[int]
    ) -> tuple[list[str], np.ndarray]:
        out: list[str] = []
        pos = base
        for piece in pieces:
            if len(piece) > LONG_PIECE_CHARS:
                for k in range(0, len(piece), LONG_PIECE_CHARS):
                    if k:
                        forced.append(pos + k)
                    out.append(piece[k : k + LONG_PIECE_CHARS])
            else:
                out.append(piece)
            pos += len(piece)
        return out, np.fromiter(map(len, out), dtype=np.int64, count=len(out))
