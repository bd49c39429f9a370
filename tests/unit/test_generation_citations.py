"""Citation markers: recognised forms, validation against the passages, removal of the
invalid ones, and the streaming filter giving the same result however the text is split."""

from __future__ import annotations

import random

import pytest

from services.generation.citations import CitationFilter, parse_citations

# (answer as the model wrote it, passages, cleaned answer, valid numbers, invalid numbers)
CASES = [
    ("Paris is the capital [1].", 3, "Paris is the capital [1].", (1,), ()),
    ("Paris[1] and Berlin[2].", 3, "Paris[1] and Berlin[2].", (1, 2), ()),
    ("Both [1, 2] agree.", 3, "Both [1, 2] agree.", (1, 2), ()),
    ("Both [1,3;2] agree.", 3, "Both [1,3;2] agree.", (1, 3, 2), ()),
    ("Adjacent [2][1][2].", 3, "Adjacent [2][1][2].", (2, 1), ()),
    ("A range [1-3].", 3, "A range [1-3].", (1, 2, 3), ()),
    ("En dash [2–3].", 3, "En dash [2–3].", (2, 3), ()),
    ("Footnote style [^2].", 3, "Footnote style [^2].", (2,), ()),
    ("Worded [Passage 3] and [source 1].", 3, "Worded [Passage 3] and [source 1].", (3, 1), ()),
    ("Spaces [ 1 , 2 ] ok.", 3, "Spaces [ 1 , 2 ] ok.", (1, 2), ()),
    ("北京是中国的首都[1]。", 2, "北京是中国的首都[1]。", (1,), ()),
    ("全角【2】和［1］。", 2, "全角【2】和［1］。", (2, 1), ()),
    ("中文顿号[1、2]。", 2, "中文顿号[1、2]。", (1, 2), ()),
    # invalid numbers are removed, with the space before them when punctuation follows
    ("Rome [7].", 3, "Rome.", (), (7,)),
    ("Rome [7] is old.", 3, "Rome is old.", (), (7,)),
    ("Rome[7] is old.", 3, "Rome is old.", (), (7,)),
    ("Zero [0] is no passage.", 3, "Zero is no passage.", (), (0,)),
    ("Mixed [1, 7] list.", 3, "Mixed [1] list.", (1,), (7,)),
    ("Mixed [7, 1, 1, 9] list.", 3, "Mixed [1] list.", (1,), (7, 9)),
    ("Range past the end [2-5].", 3, "Range past the end [2, 3].", (2, 3), (4, 5)),
    ("Adjacent bad [9][1].", 3, "Adjacent bad [1].", (1,), (9,)),
    ("Line end [9]\nNext line.", 3, "Line end\nNext line.", (), (9,)),
    ("At the very end [9]", 3, "At the very end", (), (9,)),
    ("No passages at all [1].", 0, "No passages at all.", (), (1,)),
    ("中文无效[5]。", 2, "中文无效。", (), (5,)),
    ("全角无效【5】。", 2, "全角无效。", (), (5,)),
    # not citations: left exactly as written
    ("A link [1](https://example.com) stays.", 3, "A link [1](https://example.com) stays.", (), ()),
    ("Code `xs[9]` and ```\nys[8]\n``` stay.", 3, "Code `xs[9]` and ```\nys[8]\n``` stay.", (), ()),
    ("Words [a] [note] [1x] [] [12345] stay.", 3, "Words [a] [note] [1x] [] [12345] stay.", (), ()),
    ("Unclosed [1 at the end", 3, "Unclosed [1 at the end", (), ()),
    ("Nested [[1]] works.", 3, "Nested [[1]] works.", (1,), ()),
    ("Brackets [passage] only.", 3, "Brackets [passage] only.", (), ()),
]


@pytest.mark.parametrize(("raw", "count", "clean", "valid", "invalid"), CASES)
def test_markers_are_parsed_validated_and_cleaned(
    raw: str, count: int, clean: str, valid: tuple[int, ...], invalid: tuple[int, ...]
) -> None:
    parsed = parse_citations(raw, count)
    assert parsed.answer == clean
    assert parsed.cited == valid
    assert parsed.invalid == invalid


@pytest.mark.parametrize(("raw", "count", "clean", "valid", "invalid"), CASES)
def test_streaming_gives_the_same_result_for_every_split(
    raw: str, count: int, clean: str, valid: tuple[int, ...], invalid: tuple[int, ...]
) -> None:
    """Deltas add up to the cleaned answer wherever the token boundaries fall."""
    splits: list[list[str]] = [list(raw)]  # one character at a time
    splits += [[raw[:i], raw[i:]] for i in range(1, len(raw))]  # every single cut
    rng = random.Random(len(raw))
    for _ in range(20):  # random multi-way cuts
        cuts = sorted(rng.sample(range(1, len(raw)), k=min(len(raw) - 1, 4)))
        splits.append([raw[a:b] for a, b in zip([0, *cuts], [*cuts, len(raw)], strict=True)])
    for pieces in splits:
        f = CitationFilter(count)
        out = "".join(f.feed(piece) for piece in pieces) + f.finish()
        assert out == clean, pieces
        assert f.answer == clean
        assert tuple(f.cited) == valid
        assert tuple(f.invalid) == invalid


def test_filter_holds_back_only_a_possible_marker() -> None:
    """Plain text is released at once; a pending `[1` waits for its bracket."""
    f = CitationFilter(2)
    assert f.feed("Paris is ") == "Paris is"  # the trailing space waits: a marker may follow
    assert f.feed("the capital [") == " the capital"
    assert f.feed("1") == ""
    assert f.feed("]") == ""  # one character more decides it is not a Markdown link
    assert f.feed(".") == " [1]."
    assert f.finish() == ""
    assert f.cited == [1]


def test_long_bracketed_text_is_released_as_text() -> None:
    f = CitationFilter(2)
    out = f.feed("[" + "1," * 30)
    assert out.startswith("[1,")  # longer than any marker: released
    assert out + f.feed("2]") + f.finish() == "[" + "1," * 30 + "2]"
