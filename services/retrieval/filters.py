"""Structured filter conditions → a Milvus boolean expression.

Values are never pasted into the expression as the client sent them: each one
is type-checked against the field it filters and written as a literal that
Milvus's (and Milvus Lite's) expression lexer reads back as exactly that value —
strings in double quotes with `\\`, `"`, and line breaks escaped, numbers in
canonical form, booleans as `true`/`false`. Field names come from a fixed list,
or, for `metadata.<key>`, are checked against a strict pattern, so neither
part of a condition can change the shape of the expression.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from typing import Any

from services.common.errors import InvalidArgument
from services.retrieval.schema import (
    F_METADATA,
    FILTER_FIELDS,
    METADATA_PREFIX,
    FilterOp,
    FilterSpec,
    ValueKind,
)

METADATA_KEY_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_-]{0,63}")
MAX_METADATA_DEPTH = 8
MAX_STRING_VALUE_BYTES = 4_096
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
# Characters other than these three that are below U+0020 (and DEL) have no
# escape both Milvus and Milvus Lite understand: refuse them.
_ESCAPES = {"\\": "\\\\", '"': '\\"', "\n": "\\n", "\r": "\\r", "\t": "\\t"}
_CONTROL_RE = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


def string_literal(value: str) -> str:
    """`value` as a double-quoted Milvus string literal."""
    if _CONTROL_RE.search(value):
        raise InvalidArgument(
            "filter values may not contain control characters other than tab and line breaks",
            reason="INVALID_FILTER_VALUE",
        )
    return '"' + "".join(_ESCAPES.get(ch, ch) for ch in value) + '"'


def number_literal(value: float | int) -> str:
    if isinstance(value, float):
        if not math.isfinite(value):
            raise InvalidArgument("filter numbers must be finite", reason="INVALID_FILTER_VALUE")
        if value.is_integer() and abs(value) < 2**53:
            return str(int(value))
        return repr(value)
    return str(value)


def _field_path(name: str) -> tuple[str, ValueKind]:
    """The expression for a filterable field name, and the kind of its values."""
    kind = FILTER_FIELDS.get(name)
    if kind is not None:
        return name, kind
    if name.startswith(METADATA_PREFIX):
        keys = name[len(METADATA_PREFIX) :].split(".")
        if len(keys) <= MAX_METADATA_DEPTH and all(METADATA_KEY_RE.fullmatch(k) for k in keys):
            return F_METADATA + "".join(f'["{k}"]' for k in keys), ValueKind.JSON
        raise InvalidArgument(
            f"invalid metadata filter field {name!r}: keys must match "
            f"{METADATA_KEY_RE.pattern}, at most {MAX_METADATA_DEPTH} levels",
            reason="UNKNOWN_FILTER_FIELD",
            metadata={"field": name},
        )
    allowed = ", ".join([*FILTER_FIELDS, "metadata.<key>"])
    raise InvalidArgument(
        f"unknown filter field {name!r}; filterable fields: {allowed}",
        reason="UNKNOWN_FILTER_FIELD",
        metadata={"field": name},
    )


def _type_error(field: str, expected: str, value: Any) -> InvalidArgument:
    return InvalidArgument(
        f"filter on {field!r} needs {expected}, got {type(value).__name__} {value!r:.80}",
        reason="INVALID_FILTER_VALUE",
        metadata={"field": field},
    )


def _scalar_literal(field: str, kind: ValueKind, op: FilterOp, value: Any) -> str:  # noqa: C901 - one case per value type and operator
    """One value as a literal, after checking it suits the field and operator."""
    if value is None:
        raise InvalidArgument(
            f"filter on {field!r} has no value",
            reason="INVALID_FILTER_VALUE",
            metadata={"field": field},
        )
    ordering = op in (FilterOp.LT, FilterOp.LE, FilterOp.GT, FilterOp.GE)
    if isinstance(value, str):
        if kind is ValueKind.INT:
            raise _type_error(field, "an integer", value)
        if len(value.encode()) > MAX_STRING_VALUE_BYTES:
            raise InvalidArgument(
                f"filter value for {field!r} is longer than {MAX_STRING_VALUE_BYTES} bytes",
                reason="INVALID_FILTER_VALUE",
                metadata={"field": field},
            )
        return string_literal(value)
    if isinstance(value, bool):
        if kind is not ValueKind.JSON:
            raise _type_error(
                field, "a string" if kind is ValueKind.STRING else "an integer", value
            )
        if ordering:
            raise InvalidArgument(
                f"filter on {field!r}: booleans support only = and !=",
                reason="INVALID_FILTER_VALUE",
                metadata={"field": field},
            )
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        if kind is ValueKind.STRING:
            raise _type_error(field, "a string", value)
        if kind is ValueKind.INT:
            if isinstance(value, float) and not value.is_integer():
                raise _type_error(field, "an integer", value)
            if not (isinstance(value, int) or math.isfinite(value)) or not (
                INT64_MIN <= value <= INT64_MAX
            ):
                raise _type_error(field, "a 64-bit integer", value)
            return str(int(value))
        return number_literal(value)
    expected = {
        ValueKind.STRING: "a string",
        ValueKind.INT: "an integer",
        ValueKind.JSON: "a string, number or boolean",
    }[kind]
    raise _type_error(field, expected, value)


def _condition(cond: FilterSpec, max_values: int) -> str:
    path, kind = _field_path(cond.field)
    if cond.op is FilterOp.IN:
        values = cond.value
        if not isinstance(values, (list, tuple)) or not values:
            raise InvalidArgument(
                f"filter `in` on {cond.field!r} needs a non-empty list of values",
                reason="INVALID_FILTER_VALUE",
                metadata={"field": cond.field},
            )
        if len(values) > max_values:
            raise InvalidArgument(
                f"filter `in` on {cond.field!r} lists {len(values)} values; at most "
                f"{max_values} are allowed",
                reason="INVALID_FILTER_VALUE",
                metadata={"field": cond.field},
            )
        literals = [_scalar_literal(cond.field, kind, FilterOp.EQ, v) for v in values]
        if kind is ValueKind.JSON:
            # Milvus Lite has no `in` on JSON paths; an OR of equalities means the same.
            return "(" + " or ".join(f"{path} == {lit}" for lit in literals) + ")"
        return f"{path} in [{', '.join(literals)}]"
    if isinstance(cond.value, (list, tuple)):
        raise InvalidArgument(
            f"filter on {cond.field!r}: a list of values needs the `in` operator",
            reason="INVALID_FILTER_VALUE",
            metadata={"field": cond.field},
        )
    return f"{path} {cond.op.value} {_scalar_literal(cond.field, kind, cond.op, cond.value)}"


def compile_filters(conditions: Sequence[FilterSpec], max_values: int = 1_024) -> str:
    """The conditions ANDed into one expression ("" for none)."""
    return " and ".join(f"({_condition(c, max_values)})" for c in conditions)


def and_expressions(*expressions: str) -> str:
    return " and ".join(f"({e})" for e in expressions if e)
