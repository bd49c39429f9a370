"""Document ids derived from file names, the one rule for the gateway (a file name
without a `document_id`), the CLI and the web page (paths inside an uploaded folder).

Ids match `[A-Za-z0-9][A-Za-z0-9._-]{0,127}`: runs of other characters become `-`.
Where that drops characters that carry the name — anything outside ASCII, like a
Chinese file name — a digest of the name is added, so that `报告.txt` and `摘要.txt` stay
two documents instead of both becoming `txt` (the second silently replacing the first).
The same name always gives the same id: uploading it again replaces its document.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata

MAX_DOCUMENT_ID_CHARS = 128
DIGEST_CHARS = 8
_OUTSIDE_ID = re.compile(r"[^A-Za-z0-9._-]+")


def legacy_document_id(name: str) -> str:
    """The rule before digests (until 2026-12-01): still what an ASCII name gives, and
    what the gateway falls back to for a document made under it."""
    return _OUTSIDE_ID.sub("-", name).strip("-._")[:MAX_DOCUMENT_ID_CHARS]


def derive_document_id(name: str) -> str:
    """`name` as a document id ("" when nothing of it can make one): `My Report.pdf` →
    `My-Report.pdf`, `a/intro.md` → `a-intro.md`, `报告.txt` → `<digest>.txt`,
    `Café menu.pdf` → `Caf-menu-<digest>.pdf`."""
    name = unicodedata.normalize("NFC", name.strip())
    plain = legacy_document_id(name)
    if name.isascii():
        return plain
    digest = hashlib.sha256(name.encode()).hexdigest()[:DIGEST_CHARS]
    stem, dot, ext = name.rpartition(".")
    ext_id = legacy_document_id(ext) if dot and stem else ""
    if not dot or not stem or len(ext_id) != len(ext) or len(ext) > 16:
        stem, ext_id = name, ""  # no plain extension to keep at the end
    stem_id = legacy_document_id(stem)
    room = MAX_DOCUMENT_ID_CHARS - DIGEST_CHARS - 1 - (len(ext_id) + 1 if ext_id else 0)
    parts = [stem_id[:room].rstrip("-._"), digest]
    derived = "-".join(p for p in parts if p)
    return f"{derived}.{ext_id}" if ext_id else derived


def folder_document_id(path_in_folder: str) -> str:
    """The id of a file at `path_in_folder` inside a folder being uploaded (`sub/intro.md`
    → `sub-intro.md`), so that equal names in two sub-folders stay two documents; "" for a
    file at the folder's top (the gateway derives its id from its name)."""
    parts = [p for p in path_in_folder.replace("\\", "/").split("/") if p.strip()]
    return derive_document_id("-".join(parts)) if len(parts) > 1 else ""
