"""Malformed request bytes: what a client that does not use protobuf can put on the
wire. Each mutation starts from a valid-looking serialized request (a seed) and
breaks it the way real decoders have been broken: truncation, flipped and inserted
bytes, invalid UTF-8 in a string field, overlong and unterminated varints, lengths
past the end, unbalanced and deeply nested groups, field number 0, plain noise."""

from __future__ import annotations

from collections.abc import Callable

from google.protobuf import descriptor as _d
from hypothesis import strategies as st

F = _d.FieldDescriptor


def varint(n: int) -> bytes:
    out = bytearray()
    n &= (1 << 64) - 1
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def tag(number: int, wire_type: int) -> bytes:
    return varint((number << 3) | wire_type)


def _string_fields(descriptor: _d.Descriptor) -> list[int]:
    return [f.number for f in descriptor.fields if f.type == F.TYPE_STRING] or [1]


def _invalid_utf8(descriptor: _d.Descriptor) -> st.SearchStrategy[Callable[[bytes], bytes]]:
    bad = st.sampled_from(
        [b"\xff", b"\xc0\xaf", b"caf\xe9", b"\xed\xa0\x80", b"a\x80b", b"\xf4\x90\x80\x80"]
    )
    return st.builds(
        lambda number, junk: lambda seed: seed + tag(number, 2) + varint(len(junk)) + junk,
        st.sampled_from(_string_fields(descriptor)),
        bad,
    )


def _deep_groups(depth: int) -> bytes:
    # An unknown field number holding nested groups: a decoder that recurses into
    # unknown groups must stop at its depth limit.
    return tag(1000, 3) * depth + tag(1000, 4) * depth


def _at(seed: bytes, pos: int) -> int:
    return pos % (len(seed) + 1)


def mutations(descriptor: _d.Descriptor) -> st.SearchStrategy[Callable[[bytes], bytes]]:
    """Functions from a seed to malformed (or, sometimes, surprisingly valid) bytes."""
    pos = st.integers(0, 1 << 16)
    byte = st.integers(0, 255)
    return st.one_of(
        st.builds(lambda noise: lambda seed: noise, st.binary(min_size=1, max_size=128)),
        st.builds(lambda p: lambda seed: seed[: _at(seed, p) - 1] if seed else b"\x0a", pos),
        st.builds(
            lambda p, b: lambda seed: seed[: _at(seed, p)] + bytes([b]) + seed[_at(seed, p) + 1 :],
            pos,
            byte,
        ),
        st.builds(
            lambda p, junk: lambda seed: seed[: _at(seed, p)] + junk + seed[_at(seed, p) :],
            pos,
            st.binary(min_size=1, max_size=8),
        ),
        _invalid_utf8(descriptor),
        st.sampled_from(
            [
                lambda seed: seed + tag(1, 0) + b"\xff" * 11,  # overlong varint
                lambda seed: seed + tag(1, 0) + b"\xff\xff",  # unterminated varint
                lambda seed: seed + tag(2, 2) + varint(1 << 20) + b"abc",  # length past the end
                lambda seed: seed + tag(3, 2) + b"\xff\xff\xff\xff\x0f",  # 4 GiB length
                lambda seed: seed + tag(1000, 4),  # end group without a start
                lambda seed: seed + tag(1000, 3),  # start group without an end
                lambda seed: seed + b"\x00",  # field number 0
                lambda seed: seed + tag(1000, 6),  # wire type 6 does not exist
                lambda seed: seed + tag(1000, 5) + b"\x01",  # fixed32 cut short
                lambda seed: seed + _deep_groups(200),
                lambda seed: seed + tag(2**29 - 1, 0) + b"\x01",  # the largest field number (valid)
                lambda seed: seed + tag(1, 1) + b"\x00" * 8,  # a wrong wire type for field 1
                lambda seed: seed * 2,  # every field twice (valid: the last wins)
            ]
        ),
    )
