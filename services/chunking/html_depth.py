"""A linear estimate of how deeply an HTML document nests, before lexbor parses it.

An HTML5 tree builder checks "is an element in scope" by walking its stack of
open elements, so lexbor is quadratic in the nesting depth: 40,000 nested
`<div>` took 2 s, 100,000 took 22 s, and a 32 MiB document of `<div>` would
take hours. `exceeds` scans the tags once (comments and raw-text elements such
as `<script>` skipped) and keeps a stack of the elements that stay open until
their own end tag or an ancestor's; it says whether that stack ever grows past
the limit.

The estimate errs low, never high, so that no real page is refused by
mistake: elements whose end tag is optional (`p`, `li`, `td`, ...), void
elements, self-closing tags and elements that cannot nest in themselves (`a`
in `a`, a heading in a heading) are not counted, and an end tag closes
everything opened after its element. A document it underestimates is still
bounded by the parse budget.

That scan runs at ~0.6 µs a tag in Python, a third of the parse of a large
page, so it runs only when a vectorised bound says the depth may exceed the
limit: per tag name, the most elements of that name open at once when each
end tag closes one of its own (`_upper_bound`, numpy, a few % of a parse).
"""

from __future__ import annotations

import re

import numpy as np

_TAG = re.compile(r"<(?:(/?)([A-Za-z][^\s/>]*)|!--)")
_VOID = frozenset(
    {
        "area",
        "base",
        "basefont",
        "bgsound",
        "br",
        "col",
        "embed",
        "frame",
        "hr",
        "image",
        "img",
        "input",
        "keygen",
        "link",
        "meta",
        "param",
        "source",
        "track",
        "wbr",
    }
)
# Closed by a sibling or by their parent's end: never counted.
_OPTIONAL_END = frozenset(
    {
        "html",
        "head",
        "body",
        "p",
        "li",
        "dt",
        "dd",
        "tr",
        "td",
        "th",
        "thead",
        "tbody",
        "tfoot",
        "caption",
        "colgroup",
        "option",
        "optgroup",
        "rb",
        "rt",
        "rp",
        "rtc",
    }
)
# Their content is text up to their end tag (`plaintext`: up to the end of the document).
_RAW_TEXT = frozenset(
    {
        "script",
        "style",
        "textarea",
        "title",
        "xmp",
        "iframe",
        "noembed",
        "noframes",
        "noscript",
        "plaintext",
    }
)
# A start tag that closes an open element of the same kind rather than nesting in it.
_NO_SELF_NESTING = frozenset({"a", "button", "nobr", "select", "form"})
_HEADINGS = frozenset({"h1", "h2", "h3", "h4", "h5", "h6"})
_UNCOUNTED = _VOID | _OPTIONAL_END | _RAW_TEXT
#: bytes of a tag name that `_upper_bound` tells apart (names longer share a key)
_KEY_BYTES = 8


def _key(name: str) -> int:
    """A tag name's key as `_upper_bound` computes it (its first 8 bytes, lower case)."""
    data = name.lower().encode()[:_KEY_BYTES]
    lowered = int.from_bytes(data, "little") | (0x2020202020202020 & ((1 << (8 * len(data))) - 1))
    return lowered


_UNCOUNTED_KEYS = np.array(sorted({_key(n) for n in _UNCOUNTED}), dtype=np.uint64)
# Keeps the first k bytes of a little-endian key.
_MASKS = np.array([(1 << (8 * k)) - 1 for k in range(_KEY_BYTES)] + [(1 << 64) - 1], np.uint64)
_NAME_BYTE = np.zeros(256, dtype=bool)
_NAME_BYTE[[*range(0x30, 0x3A), *range(0x41, 0x5B), *range(0x61, 0x7B)]] = True
_LOWER = np.uint64(0x2020202020202020)  # ASCII letters to lower case, 8 at a time


def _upper_bound(text: str) -> int:
    """Σ over tag names of the most elements of that name ever open at once, if each
    end tag closed one element of its own name: at least the depth `exceeds` finds
    (tags in comments and scripts are counted too, which only loosens it)."""
    raw = text.encode("utf-8", errors="surrogatepass") + bytes(2 * _KEY_BYTES)
    data = np.frombuffer(raw, dtype=np.uint8)
    lt = np.flatnonzero(data == 0x3C)  # "<"
    is_end = data[lt + 1] == 0x2F  # "/"
    at = lt + 1 + is_end
    is_tag = _NAME_BYTE[data[at]] & (data[at] >= 0x41)  # a letter
    at, is_end = at[is_tag], is_end[is_tag]
    if not len(at):
        return 0
    windows = np.lib.stride_tricks.sliding_window_view(data, _KEY_BYTES + 1)[at]
    in_name = _NAME_BYTE[windows]
    in_name[:, -1] = False
    length = np.argmin(in_name, axis=1)  # the first byte that is not a letter or a digit
    keys = (np.ascontiguousarray(windows[:, :_KEY_BYTES]).view("<u8")[:, 0] | _LOWER) & _MASKS[
        length
    ]
    slot = np.minimum(np.searchsorted(_UNCOUNTED_KEYS, keys), len(_UNCOUNTED_KEYS) - 1)
    counted = _UNCOUNTED_KEYS[slot] != keys
    keys, steps = keys[counted], np.where(is_end[counted], -1, 1).astype(np.int64)
    if not len(keys):
        return 0
    order = np.argsort(keys, kind="stable")
    keys, steps = keys[order], steps[order]
    starts = np.flatnonzero(np.r_[True, keys[1:] != keys[:-1]])
    lengths = np.diff(np.r_[starts, len(keys)])
    total = np.cumsum(steps)
    walk = total - np.repeat(total[starts] - steps[starts], lengths)  # per name
    # Floored at 0 (an end tag with nothing open closes nothing): walk minus its running
    # minimum below 0, per name. Each name's walk is shifted into its own band so
    # that one running minimum over all of them never mixes two names.
    band = np.repeat(np.arange(len(starts), dtype=np.int64), lengths) * (2 * len(keys) + 1)
    shifted = walk - band
    floored = shifted - np.minimum(np.minimum.accumulate(shifted), -band)
    return int(np.maximum.reduceat(floored, starts).sum())


class _RawEnds:
    """Case-insensitive finders of `</name`, one compiled pattern per name."""

    def __init__(self) -> None:
        self._patterns: dict[str, re.Pattern[str]] = {}

    def find(self, text: str, name: str, pos: int) -> int:
        pattern = self._patterns.get(name)
        if pattern is None:
            pattern = self._patterns[name] = re.compile(f"</{name}", re.IGNORECASE)
        m = pattern.search(text, pos)
        return -1 if m is None else m.start()


def exceeds(text: str, limit: int) -> bool:  # noqa: C901, PLR0912 - one pass, a case per tag kind
    """Whether the open elements of `text` ever nest more than `limit` deep (an estimate
    that errs low). Linear in the length of `text`."""
    if text.count("<") <= limit or _upper_bound(text) <= limit:
        return False
    raw_ends = _RawEnds()
    stack: list[str] = []
    open_count: dict[str, int] = {}
    pos = 0
    while True:
        m = _TAG.search(text, pos)
        if m is None:
            return False
        tag = m.group(2)
        if tag is None:  # a comment
            end = text.find("-->", m.end())
            if end < 0:
                return False
            pos = end + 3
            continue
        gt = text.find(">", m.end())
        if gt < 0:
            return False
        pos = gt + 1
        name = tag.lower()
        if m.group(1):  # an end tag closes its element and everything opened after it
            if open_count.get(name):
                while True:
                    top = stack.pop()
                    open_count[top] -= 1
                    if top == name:
                        break
            continue
        if name in _RAW_TEXT:
            if name == "plaintext":
                return False
            end = raw_ends.find(text, name, pos)
            if end < 0:
                return False
            pos = end
            continue
        if name in _VOID or name in _OPTIONAL_END or text[gt - 1] == "/":
            continue
        if name in _NO_SELF_NESTING and open_count.get(name):
            continue  # the new one replaces the open one: the depth does not grow
        if name in _HEADINGS and stack and stack[-1] in _HEADINGS:
            continue
        stack.append(name)
        open_count[name] = open_count.get(name, 0) + 1
        if len(stack) > limit:
            return True
