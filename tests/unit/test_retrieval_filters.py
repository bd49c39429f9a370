"""Filter conditions → Milvus expressions: types, quoting and injection attempts.

The expressions are checked with Milvus Lite's own lexer: a hostile value must
come back as one string token holding exactly that value, never as syntax.
"""

from __future__ import annotations

import pytest
from milvus_lite.search.filter.tokens import TokenKind, tokenize

from services.common.errors import InvalidArgument
from services.retrieval.filters import compile_filters, string_literal
from services.retrieval.schema import FilterOp, FilterSpec

HOSTILE = [
    'x" or id != "',
    "x' or id != '",
    'x\\" or true or \\"',
    "a\\",
    '"',
    "\\",
    '") or (chunk_index >= 0',
    'line\nbreak" or 1 == 1 or "',
    "tab\there",
    '中文" || id like "%',
    "] or [",
    "",
]


def _tokens(expr: str) -> list[tuple[str, object]]:
    return [(t.kind.name, t.value) for t in tokenize(expr) if t.kind is not TokenKind.EOF]


@pytest.mark.parametrize("value", HOSTILE)
def test_hostile_string_stays_one_literal(value: str) -> None:
    expr = compile_filters([FilterSpec("source", FilterOp.EQ, value)])
    tokens = _tokens(expr)
    kinds = [k for k, _ in tokens]
    assert kinds == ["LPAREN", "IDENT", "EQ", "STRING", "RPAREN"], expr
    assert tokens[3][1] == value


@pytest.mark.parametrize("value", HOSTILE)
def test_hostile_value_in_metadata_and_in_list(value: str) -> None:
    expr = compile_filters(
        [
            FilterSpec("metadata.team", FilterOp.NE, value),
            FilterSpec("document_id", FilterOp.IN, [value, "b"]),
        ]
    )
    strings = [v for k, v in _tokens(expr) if k == "STRING"]
    assert strings == ["team", value, value, "b"]
    assert expr.count(" and ") == 1


def test_string_literal_escapes() -> None:
    assert string_literal('a"b\\c\nd\re\tf') == '"a\\"b\\\\c\\nd\\re\\tf"'


@pytest.mark.parametrize("value", ["nul\x00", "bell\x07", "esc\x1b[0m", "del\x7f"])
def test_control_characters_are_refused(value: str) -> None:
    with pytest.raises(InvalidArgument) as err:
        compile_filters([FilterSpec("source", FilterOp.EQ, value)])
    assert err.value.reason == "INVALID_FILTER_VALUE"


def test_every_operator_on_scalar_fields() -> None:
    got = compile_filters(
        [
            FilterSpec("chunk_index", FilterOp.GE, 2),
            FilterSpec("chunk_index", FilterOp.LT, 10.0),
            FilterSpec("language", FilterOp.EQ, "en"),
            FilterSpec("title", FilterOp.GT, "M"),
            FilterSpec("chunk_index", FilterOp.IN, [1, 2.0]),
            FilterSpec("media_type", FilterOp.NE, "text/html"),
            FilterSpec("document_version", FilterOp.LE, "v9"),
        ]
    )
    assert got == (
        '(chunk_index >= 2) and (chunk_index < 10) and (language == "en") and '
        '(title > "M") and (chunk_index in [1, 2]) and (media_type != "text/html") and '
        '(document_version <= "v9")'
    )


def test_metadata_paths_and_values() -> None:
    got = compile_filters(
        [
            FilterSpec("metadata.year", FilterOp.GE, 2020.0),
            FilterSpec("metadata.a.b_c", FilterOp.EQ, True),
            FilterSpec("metadata.score", FilterOp.LT, 0.25),
            FilterSpec("metadata.tag", FilterOp.IN, ["x", "y"]),
        ]
    )
    assert got == (
        '(metadata["year"] >= 2020) and (metadata["a"]["b_c"] == true) and '
        '(metadata["score"] < 0.25) and ((metadata["tag"] == "x" or metadata["tag"] == "y"))'
    )


def test_no_conditions_is_empty() -> None:
    assert compile_filters([]) == ""


@pytest.mark.parametrize(
    ("spec", "reason"),
    [
        (FilterSpec("text", FilterOp.EQ, "x"), "UNKNOWN_FILTER_FIELD"),
        (FilterSpec("id != ''", FilterOp.EQ, "x"), "UNKNOWN_FILTER_FIELD"),
        (FilterSpec("metadata.", FilterOp.EQ, "x"), "UNKNOWN_FILTER_FIELD"),
        (FilterSpec('metadata.a"]', FilterOp.EQ, "x"), "UNKNOWN_FILTER_FIELD"),
        (FilterSpec("metadata.a b", FilterOp.EQ, "x"), "UNKNOWN_FILTER_FIELD"),
        (FilterSpec("metadata." + ".".join("k" * 9), FilterOp.EQ, "x"), "UNKNOWN_FILTER_FIELD"),
        (FilterSpec("chunk_index", FilterOp.EQ, "3"), "INVALID_FILTER_VALUE"),
        (FilterSpec("chunk_index", FilterOp.EQ, 1.5), "INVALID_FILTER_VALUE"),
        (FilterSpec("chunk_index", FilterOp.EQ, True), "INVALID_FILTER_VALUE"),
        (FilterSpec("chunk_index", FilterOp.EQ, 2.0**70), "INVALID_FILTER_VALUE"),
        (FilterSpec("source", FilterOp.EQ, 3), "INVALID_FILTER_VALUE"),
        (FilterSpec("source", FilterOp.EQ, None), "INVALID_FILTER_VALUE"),
        (FilterSpec("source", FilterOp.EQ, {"a": 1}), "INVALID_FILTER_VALUE"),
        (FilterSpec("source", FilterOp.EQ, ["a"]), "INVALID_FILTER_VALUE"),
        (FilterSpec("source", FilterOp.IN, "a"), "INVALID_FILTER_VALUE"),
        (FilterSpec("source", FilterOp.IN, []), "INVALID_FILTER_VALUE"),
        (FilterSpec("source", FilterOp.IN, ["a", 1]), "INVALID_FILTER_VALUE"),
        (FilterSpec("source", FilterOp.IN, [["a"]]), "INVALID_FILTER_VALUE"),
        (FilterSpec("metadata.flag", FilterOp.LT, True), "INVALID_FILTER_VALUE"),
        (FilterSpec("metadata.x", FilterOp.EQ, float("nan")), "INVALID_FILTER_VALUE"),
        (FilterSpec("metadata.x", FilterOp.EQ, float("inf")), "INVALID_FILTER_VALUE"),
        (FilterSpec("metadata.x", FilterOp.EQ, {"nested": 1}), "INVALID_FILTER_VALUE"),
        (FilterSpec("source", FilterOp.EQ, "x" * 5000), "INVALID_FILTER_VALUE"),
    ],
)
def test_bad_conditions(spec: FilterSpec, reason: str) -> None:
    with pytest.raises(InvalidArgument) as err:
        compile_filters([spec])
    assert err.value.reason == reason


def test_in_list_length_is_bounded() -> None:
    with pytest.raises(InvalidArgument, match="at most 3"):
        compile_filters([FilterSpec("source", FilterOp.IN, ["a", "b", "c", "d"])], max_values=3)
