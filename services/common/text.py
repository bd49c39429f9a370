"""Small text helpers shared by services."""

from __future__ import annotations


def truncate_utf8(text: str, max_bytes: int, marker: str = "…") -> str:
    """`text` cut on a character boundary so that its UTF-8 form (with `marker`
    appended when cut) fits in `max_bytes`."""
    if len(text.encode()) <= max_bytes:
        return text
    budget = max_bytes - len(marker.encode())
    cut = text.encode()[: max(0, budget)].decode("utf-8", errors="ignore")
    return cut + marker
