"""Code identifiers split into the words BM25 can match (docs/retrieval.md, "Code identifiers").

Milvus's `standard` analyzer follows Unicode word boundaries: `_` joins words
and so does `.` between letters, and it never splits camelCase. So
`asn1_decode_simple_der` and `getElementById` are each one token, and a query
naming the identifier matches only text that spells it the same way, never a
PDF whose underscores were drawn as rules (`asn1 decode simple der`) or prose
about it. Milvus Lite offers only its built-in analyzers (no custom token
filter), and its BM25 function takes exactly one input field, so the split
forms go into a second analysed field: `bm25_text` = the chunk's text + one
line of split forms (`index_text`), which feeds the BM25 function, while
`text` stays as stored for display. Queries get the same forms appended once
each (`expand_query`). Whole identifiers stay in the text, so an exact match
still scores on the whole token too.

`split_forms`, for each identifier-like token, yields its lowercased parts:

    asn1_decode_simple_der       → asn1 decode simple der
    sqlite3_last_insert_rowid()  → sqlite3 last insert rowid
    getElementById               → get element by id
    XMLHttpRequest.open          → xml http request xmlhttprequest open
    std::vector::push_back       → std vector push back push_back

A token is identifier-like when it has an inner `_`, a `.`/`::`/`->` path, a
trailing `()`, or a lower-to-upper case change. Plain words, acronyms (`NASA`,
`URLs`, `SQLite`), Chinese text, numbers and versions are left alone, so prose
gets (almost) no extra forms.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

# Word characters joined by . :: -> (at most 16 segments), optionally '()'. Linear:
# each repetition must consume a separator and a word start.
_IDENT = re.compile(
    r"(?<![A-Za-z0-9_.$])[A-Za-z_$][A-Za-z0-9_$]{0,200}"
    r"(?:(?:\.|::|->)[A-Za-z_$][A-Za-z0-9_$]{0,200}){0,16}(?:\(\))?"
)
_SEGMENT = re.compile(r"\.|::|->")
_CASE_PARTS = re.compile(r"[A-Z]+(?=[A-Z][a-z])|[A-Z]?[a-z]+[0-9]*|[A-Z]+[0-9]*|[0-9]+")
_CASE_CHANGE = re.compile(r"[a-z0-9][A-Z]")
#: At most this many bytes of forms are added to one chunk's index text.
MAX_FORMS_BYTES = 16_384


def _code_like(core: str, call: bool) -> bool:
    if call or "_" in core.strip("_") or _SEGMENT.search(core):
        return True
    return _CASE_CHANGE.search(core) is not None


def _parts(word: str) -> list[str]:
    out: list[str] = []
    for piece in word.split("_"):
        if piece:
            out.extend(p.lower() for p in _CASE_PARTS.findall(piece) or [piece])
    return out


def split_forms(text: str) -> Iterator[str]:
    """The extra word forms, in order of appearance (repeats kept: they are term frequency)."""
    for match in _IDENT.finditer(text):
        token = match.group(0)
        call = token.endswith("()")
        core = token[:-2] if call else token
        if not _code_like(core, call):
            continue
        segments = [s for s in _SEGMENT.split(core) if s]
        if len(segments) > 1 and all(len(s) == 1 for s in segments):
            continue  # 'e.g', 'i.e'
        for segment in segments:
            parts = _parts(segment)
            if len(parts) > 1:
                yield from parts
            if len(segments) > 1 or (len(parts) <= 1 and call):
                yield segment.lower()  # the segment whole: 'push_back', 'open()' → 'open'


def index_text(text: str, max_bytes: int = MAX_FORMS_BYTES) -> str:
    """What BM25 indexes for a chunk: its text, then one line of split forms."""
    forms: list[str] = []
    size = 0
    for form in split_forms(text):
        size += len(form) + 1
        if size > max_bytes:
            break
        forms.append(form)
    return f"{text}\n{' '.join(forms)}" if forms else text


def expand_query(query: str) -> str:
    """The query with each split form once."""
    forms = " ".join(dict.fromkeys(split_forms(query)))
    return f"{query} {forms}" if forms else query
