"""The stored sizes of the fields chunking fills, and fitting titles and heading
paths into them.

The retrieval service stores a chunk's title in a VARCHAR of 1,024 UTF-8 bytes
and its heading path as JSON in one of 4,096 (services/retrieval/schema.py,
VARCHAR_LIMITS; chunking may not import it, and tests/unit/test_chunking_fields.py
checks that the numbers agree). Anything longer is refused there
(FIELD_TOO_LONG) and would fail the whole document, so chunking shortens a
long `<title>`, heading or file name on a character boundary, ending it with
"…", instead.
"""

from __future__ import annotations

import json

TITLE_MAX_BYTES = 1024
#: of the heading path as `json.dumps(path, ensure_ascii=False)`
HEADING_PATH_MAX_BYTES = 4096
ELLIPSIS = "…"
_ELLIPSIS_BYTES = len(ELLIPSIS.encode())


def utf8_len(text: str) -> int:
    return len(text.encode("utf-8", errors="surrogatepass"))


def truncate_utf8(text: str, max_bytes: int) -> str:
    """`text` if it fits in `max_bytes` of UTF-8, else its longest prefix that fits
    with "…" after it (cut between characters, trailing spaces dropped)."""
    data = text.encode("utf-8", errors="surrogatepass")
    if len(data) <= max_bytes:
        return text
    if max_bytes < _ELLIPSIS_BYTES:
        return ""
    cut = max_bytes - _ELLIPSIS_BYTES
    while cut > 0 and (data[cut] & 0xC0) == 0x80:  # not inside a multi-byte character
        cut -= 1
    return data[:cut].decode("utf-8", errors="surrogatepass").rstrip() + ELLIPSIS


def truncate_title(title: str) -> str:
    return truncate_utf8(title, TITLE_MAX_BYTES)


def _json_len(text: str) -> int:
    """UTF-8 bytes of `text` as a JSON string, without its quotes."""
    return utf8_len(json.dumps(text, ensure_ascii=False)) - 2


def _fit_json(text: str, room: int) -> str:
    """The longest truncation of `text` whose JSON form fits in `room` bytes."""
    budget = room
    while True:
        cut = truncate_utf8(text, budget)
        excess = _json_len(cut) - room
        if excess <= 0 or budget <= 0:
            return cut
        budget -= excess  # escaped quotes and backslashes take two bytes


def fit_heading_path(
    path: tuple[str, ...], max_bytes: int = HEADING_PATH_MAX_BYTES
) -> tuple[str, ...]:
    """`path` unchanged if its JSON fits in `max_bytes`, else with its longest
    headings truncated: each gets an equal share of the room, and a heading
    shorter than its share leaves the rest to the others."""
    if not path or utf8_len(json.dumps(list(path), ensure_ascii=False)) <= max_bytes:
        return path
    n = len(path)
    room = max_bytes - 2 - 2 * n - 2 * (n - 1)  # brackets, quotes, ", " separators
    sizes = [_json_len(h) for h in path]
    shares = [0] * n
    left = room
    for k, i in enumerate(sorted(range(n), key=sizes.__getitem__)):
        shares[i] = min(sizes[i], max(0, left) // (n - k))
        left -= shares[i]
    return tuple(
        h if sizes[i] <= shares[i] else _fit_json(h, shares[i]) for i, h in enumerate(path)
    )
