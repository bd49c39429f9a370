"""Sentence boundaries and offsets of verbatim answers (English and Chinese)."""

from __future__ import annotations

import pytest

from services.gateway.answers.sentences import split_sentences


def texts(text: str) -> list[str]:
    sentences = split_sentences(text)
    for s in sentences:  # the offsets always give back the sentence, unchanged
        assert text[s.start : s.end] == s.text
    return [s.text for s in sentences]


def test_english_sentences_and_abbreviations() -> None:
    text = (
        "Dr. Smith met J. R. R. Tolkien in the U.S. in 1950. He said it was fine! "
        "Did he? The value is 3.14, e.g. in a circle. At 5 p.m. he left."
    )
    assert texts(text) == [
        "Dr. Smith met J. R. R. Tolkien in the U.S. in 1950.",
        "He said it was fine!",
        "Did he?",
        "The value is 3.14, e.g. in a circle.",
        "At 5 p.m. he left.",
    ]


def test_quotes_and_brackets_stay_with_their_sentence() -> None:
    assert texts('He wrote "It works." Then (briefly.) it failed.') == [
        'He wrote "It works."',
        "Then (briefly.) it failed.",
    ]
    assert texts('He said "Hi!" to me. Fine.') == ['He said "Hi!" to me.', "Fine."]


def test_chinese_sentences_need_no_space() -> None:
    text = "北京是中国的首都。上海是最大的城市！你知道吗?“好的。”他说……然后走了"
    assert texts(text) == [
        "北京是中国的首都。",
        "上海是最大的城市！",
        "你知道吗?",
        "“好的。”",
        "他说……",
        "然后走了",
    ]


def test_mixed_chinese_and_english() -> None:
    assert texts("SQLite 是一个数据库。It is small. 它很快！") == [
        "SQLite 是一个数据库。",
        "It is small.",
        "它很快！",
    ]


def test_paragraphs_headings_and_list_items_end_sentences() -> None:
    text = "# SQLite FAQ\nSQLite is small. It is fast\n\n- one item\n- another item"
    assert texts(text) == [
        "# SQLite FAQ",
        "SQLite is small.",
        "It is fast",
        "- one item",
        "- another item",
    ]


def test_hard_wrapped_prose_is_one_sentence() -> None:
    line = "This long line of prose is wrapped by the author's editor at the"
    text = f"{line}\nseventieth column and goes on. Next."
    assert texts(text) == [f"{line}\nseventieth column and goes on.", "Next."]


def test_offsets_in_a_text_with_surrounding_space() -> None:
    text = "  First one.   Second one.  \n\n  "
    sentences = split_sentences(text)
    assert [(s.start, s.end) for s in sentences] == [(2, 12), (15, 26)]


@pytest.mark.parametrize("text", ["", "   ", "---", "\n\n", "。。"])
def test_nothing_to_say(text: str) -> None:
    assert split_sentences(text) == []


def test_astral_characters_count_as_one_offset() -> None:
    # Offsets are code points, like the document text's (GetDocumentText).
    text = "𠀀𠀁是古字。😀 It is. 好。"
    assert texts(text) == ["𠀀𠀁是古字。", "😀 It is.", "好。"]
    assert split_sentences(text)[1].start == 6
