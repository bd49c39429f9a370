"""Hypothesis strategies built from protobuf message descriptors.

`messages(descriptor, hints)` draws instances of any request message: every field
set or left unset, scalars from their whole range with the boundaries drawn often
(0, -1, the extremes, NaN and the infinities, empty and very long strings, control
characters, NUL), unknown enum numbers, repeated fields empty, short or long, maps,
oneofs, nested messages a few levels deep, and google.protobuf.Struct/Value from
JSON-like data. `hints` maps a field name (or `Message.field`) to a strategy of
valid-looking values (an existing knowledge base, a real job id, a vector of the
right dimension) drawn as often as the generic values, so that calls get past
validation and reach the code behind it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from google.protobuf import descriptor as _d
from google.protobuf import message_factory, struct_pb2
from hypothesis import strategies as st

F = _d.FieldDescriptor
Hints = Mapping[str, st.SearchStrategy[Any]]
MAX_DEPTH = 3

INT_RANGES = {
    F.TYPE_INT32: (-(2**31), 2**31 - 1),
    F.TYPE_SINT32: (-(2**31), 2**31 - 1),
    F.TYPE_SFIXED32: (-(2**31), 2**31 - 1),
    F.TYPE_INT64: (-(2**63), 2**63 - 1),
    F.TYPE_SINT64: (-(2**63), 2**63 - 1),
    F.TYPE_SFIXED64: (-(2**63), 2**63 - 1),
    F.TYPE_UINT32: (0, 2**32 - 1),
    F.TYPE_FIXED32: (0, 2**32 - 1),
    F.TYPE_UINT64: (0, 2**64 - 1),
    F.TYPE_FIXED64: (0, 2**64 - 1),
}

# Strings that have broken parsers, key schemas and filters elsewhere.
ODD_STRINGS = [
    "",
    " ",
    "\x00",
    "a\x00b",
    "\t\r\n",
    "../../etc/passwd",
    "/",
    ":",
    "*",
    "?",
    "{a}",
    "a:b:c",
    "' OR 1=1 --",
    'x" or id != "',
    "document_id == 'x' or true",
    "%s%n%x",
    "${jndi:ldap://x}",
    "\u202eevil",
    "\ufeff",
    "\uffff",
    "\U0001f642",
    "é",
    "中文标题",
    "-",
    ".",
    "..",
    "_",
    "A" * 128,
    "a" * 129,
    "0",
    "-1",
    "NaN",
    "null",
    "true",
    "[]",
    "{}",
]
ODD_BYTES = [
    b"",
    b"\x00",
    b"\xff\xfe",
    b"\xef\xbb\xbf",
    b"%PDF-1.4\n",
    b"%PDF-1.4\n%%EOF",
    b"<html><body>",
    b"PK\x03\x04",
    b"\x89PNG\r\n\x1a\n",
    b"# a" + b" " * 2000 + b"b",
    b"caf\xe9 \xff au lait",
    b"a\x00b",
]
FLOATS = [0.0, -0.0, 1.0, -1.0, 0.5, math.nan, math.inf, -math.inf, 3.4e38, -3.4e38, 1e-45]
LONG_SIZES = [64, 129, 257, 1025, 4097, 65_537, 1 << 20]


def _ints(lo: int, hi: int) -> st.SearchStrategy[int]:
    edges = [
        v for v in (0, 1, -1, 2, 10, 100, 1000, 1024, 1025, lo, hi, lo + 1, hi - 1) if lo <= v <= hi
    ]
    return st.one_of(st.sampled_from(edges), st.integers(lo, hi))


def _long_text() -> st.SearchStrategy[str]:
    return st.builds(
        lambda unit, n: unit * n,
        st.sampled_from(["a", " ", "é", "中", "\U0001f642", "\x00", "ab "]),
        st.sampled_from(LONG_SIZES),
    )


TEXT = st.one_of(st.text(max_size=24), st.sampled_from(ODD_STRINGS), _long_text())
SMALL_TEXT = st.one_of(st.text(max_size=8), st.sampled_from(ODD_STRINGS))
BYTES = st.one_of(
    st.binary(max_size=64),
    st.sampled_from(ODD_BYTES),
    st.builds(
        lambda unit, n: unit * n,
        st.sampled_from([b"a", b" ", b"\x00", b"\xff"]),
        st.sampled_from(LONG_SIZES),
    ),
)
FLOAT = st.one_of(st.sampled_from(FLOATS), st.floats(width=32))

# JSON-like values for google.protobuf.Struct and Value (NaN and infinities included:
# a Struct carries doubles, and JSON has no words for those).
JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.sampled_from(FLOATS)
    | st.floats()
    | st.integers(-(2**60), 2**60)
    | SMALL_TEXT,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(SMALL_TEXT, inner, max_size=3),
    max_leaves=8,
)


def _nested(depth: int) -> Any:
    """A value nested `depth` lists deep (past the recursion limits of JSON encoders)."""
    value: Any = "deep"
    for _ in range(depth):
        value = [value]
    return value


# 45 lists are ~90 message levels: just inside protobuf's decoding limit of 100 (deeper
# nesting is the wire mutations' job: upb refuses to build it here too).
JSON_WITH_DEEP = st.one_of(JSON, st.builds(_nested, st.sampled_from([16, 32, 45])))


def _struct(data: dict[str, Any]) -> struct_pb2.Struct:
    out = struct_pb2.Struct()
    out.update(data)
    return out


def _value(data: Any) -> struct_pb2.Value:
    return _struct({"v": data}).fields["v"]


WELL_KNOWN: dict[str, st.SearchStrategy[Any]] = {
    "google.protobuf.Struct": st.builds(
        _struct, st.dictionaries(SMALL_TEXT, JSON_WITH_DEEP, max_size=4)
    ),
    "google.protobuf.Value": st.builds(_value, JSON_WITH_DEEP),
    "google.protobuf.ListValue": st.builds(
        lambda v: _value(v).list_value, st.lists(JSON, max_size=4)
    ),
}


def message_class(descriptor: _d.Descriptor) -> Any:
    return message_factory.GetMessageClass(descriptor)


def _scalar(field: F, small: bool = False) -> st.SearchStrategy[Any]:
    t = field.type
    if t in INT_RANGES:
        return _ints(*INT_RANGES[t])
    if t in (F.TYPE_FLOAT, F.TYPE_DOUBLE):
        return FLOAT if t == F.TYPE_FLOAT else st.one_of(st.sampled_from(FLOATS), st.floats())
    if t == F.TYPE_BOOL:
        return st.booleans()
    if t == F.TYPE_STRING:
        return SMALL_TEXT if small else TEXT
    if t == F.TYPE_BYTES:
        return st.binary(max_size=16) if small else BYTES
    if t == F.TYPE_ENUM:
        numbers = [v.number for v in field.enum_type.values]
        # Open enums: numbers the service does not know travel on the wire.
        return st.one_of(
            st.sampled_from(numbers), st.sampled_from([-1, max(numbers) + 1, 2**31 - 1])
        )
    raise AssertionError(f"unhandled field type {t} of {field.full_name}")


def _hint(field: F, hints: Hints) -> st.SearchStrategy[Any] | None:
    return hints.get(f"{field.containing_type.name}.{field.name}", hints.get(field.name))


def _is_repeated(field: F) -> bool:
    return bool(field.is_repeated)


def _single(field: F, hints: Hints, depth: int, small: bool = False) -> st.SearchStrategy[Any]:
    if field.type == F.TYPE_MESSAGE:
        # Many copies of one message: empty ones (a long string in each would make
        # a message past every transport limit, which tests gRPC, not ragmesh).
        return messages(field.message_type, hints, MAX_DEPTH + 1 if small else depth + 1)
    return _scalar(field, small)


def field_values(field: F, hints: Hints, depth: int) -> st.SearchStrategy[Any]:
    """Generic values for one field (a list for repeated fields, a dict for maps)."""
    if field.type == F.TYPE_MESSAGE and field.message_type.GetOptions().map_entry:
        key_field = field.message_type.fields_by_name["key"]
        value_field = field.message_type.fields_by_name["value"]
        return st.dictionaries(
            _scalar(key_field, small=True),
            _single(value_field, hints, depth, small=True),
            max_size=4,
        )
    if _is_repeated(field):
        element = _single(field, hints, depth)
        small = _single(field, hints, depth, small=True)
        return st.one_of(
            st.lists(element, max_size=3),
            # many of one small element: counts past every per-request limit
            st.builds(lambda x, n: [x] * n, small, st.sampled_from([17, 65, 257, 1025])),
        )
    return _single(field, hints, depth)


def _assign(msg: Any, field: F, value: Any) -> None:
    target = getattr(msg, field.name)
    if field.type == F.TYPE_MESSAGE and field.message_type.GetOptions().map_entry:
        for key, item in value.items():
            if hasattr(item, "SerializeToString"):
                target[key].CopyFrom(item)
            else:
                target[key] = item
    elif _is_repeated(field):
        if field.type == F.TYPE_MESSAGE:
            for item in value:
                target.add().CopyFrom(item)
        else:
            target.extend(value)
    elif field.type == F.TYPE_MESSAGE:
        target.CopyFrom(value)
    else:
        setattr(msg, field.name, value)


@st.composite
def _message(draw: st.DrawFn, descriptor: _d.Descriptor, hints: Hints, depth: int) -> Any:
    msg = message_class(descriptor)()
    for field in descriptor.fields:
        hint = _hint(field, hints)
        # A field with a hint is mostly valid-looking, so that most requests get
        # past the first check and reach the code behind it; any field may be unset.
        roll = draw(st.integers(0, 9))
        if roll < (1 if hint is not None else 5):
            continue
        strategy = hint if hint is not None and roll < 7 else field_values(field, hints, depth)
        _assign(msg, field, draw(strategy))
    return msg


def messages(
    descriptor: _d.Descriptor, hints: Hints | None = None, depth: int = 0
) -> st.SearchStrategy[Any]:
    """Instances of the message `descriptor` describes; nested messages past MAX_DEPTH
    stay empty."""
    if descriptor.full_name in WELL_KNOWN:
        return WELL_KNOWN[descriptor.full_name]
    if depth > MAX_DEPTH:
        return st.builds(message_class(descriptor))
    return _message(descriptor, hints or {}, depth)
