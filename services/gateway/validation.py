"""Input checks and derived names of the gateway (no grpc here)."""

from __future__ import annotations

import hashlib
import json
import re
import uuid
from typing import Any

from ragmesh.client.document_ids import derive_document_id, legacy_document_id
from services.common.errors import InvalidArgument

KB_ID_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")
DOC_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
MEDIA_TYPES = (
    "text/plain",
    "text/markdown",
    "text/html",
    "application/pdf",
    "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
    "application/vnd.oasis.opendocument.text",
)
# Bump when what a chunk stores changes, so old uploads are not deduplicated.
INDEX_FORMAT = "1"


def check_kb_id(kb: str) -> str:
    if not kb:
        raise InvalidArgument("knowledge_base_id is required", reason="MISSING_KNOWLEDGE_BASE_ID")
    if not KB_ID_RE.fullmatch(kb):
        raise InvalidArgument(
            f"knowledge_base_id {kb!r} must match {KB_ID_RE.pattern}",
            reason="INVALID_KNOWLEDGE_BASE_ID",
            metadata={"knowledge_base_id": kb[:100]},
        )
    return kb


def check_document_id(doc: str) -> str:
    if not doc:
        raise InvalidArgument("document_id is required", reason="MISSING_DOCUMENT_ID")
    if not DOC_ID_RE.fullmatch(doc):
        raise InvalidArgument(
            f"document_id {doc!r} must match {DOC_ID_RE.pattern}",
            reason="INVALID_DOCUMENT_ID",
            metadata={"document_id": doc[:200]},
        )
    return doc


def document_id_for(document_id: str, file_name: str) -> str:
    """The given id, or one derived from the file name (`a/b/My Report.pdf` →
    `My-Report.pdf`; a digest keeps non-ASCII names apart, ragmesh/client/document_ids.py):
    the same file uploaded again replaces its document."""
    if document_id:
        return check_document_id(document_id)
    derived = derive_document_id(_base_name(file_name))
    if not derived:
        raise InvalidArgument(
            "give a document_id or a file_name to derive it from", reason="MISSING_DOCUMENT_ID"
        )
    return check_document_id(derived)


def legacy_document_id_for(file_name: str) -> str:
    """The id the rule before digests derived from `file_name`, where it differs from
    today's ("" otherwise): a document made under it is still the one its file replaces."""
    base = _base_name(file_name)
    legacy = legacy_document_id(base)
    if not legacy or legacy == derive_document_id(base) or not DOC_ID_RE.fullmatch(legacy):
        return ""
    return legacy


def _base_name(file_name: str) -> str:
    return file_name.replace("\\", "/").rsplit("/", 1)[-1].strip()


JOB_ID_RE = re.compile(r"^[0-9a-f]{32}$")
# File names are kept (and shown) up to this length; longer ones are cut.
MAX_FILE_NAME_CHARS = 255


def check_job_id(job_id: str) -> str:
    """Job ids are 32 lowercase hex digits (made by the gateway)."""
    if not JOB_ID_RE.fullmatch(job_id):
        raise InvalidArgument(
            "job_id must be the 32 hex digits the gateway returned",
            reason="INVALID_JOB_ID",
            metadata={"job_id": job_id[:64]},
        )
    return job_id


def truncate_file_name(name: str) -> str:
    """`name` cut to MAX_FILE_NAME_CHARS characters, keeping its extension."""
    if len(name) <= MAX_FILE_NAME_CHARS:
        return name
    stem, dot, ext = name.rpartition(".")
    if not dot or not stem or len(ext) > 16:
        return name[: MAX_FILE_NAME_CHARS - 1] + "…"
    return stem[: MAX_FILE_NAME_CHARS - len(ext) - 2] + "…." + ext


def check_media_type(media_type: str) -> str:
    media = media_type.split(";", 1)[0].strip().lower()
    if media and media not in MEDIA_TYPES:
        raise InvalidArgument(
            f"media type {media_type!r} is not supported; use one of {', '.join(MEDIA_TYPES)} "
            "or leave it empty to detect it",
            reason="UNSUPPORTED_MEDIA_TYPE",
            metadata={"media_type": media_type[:100]},
        )
    return media


def check_metadata(metadata: dict[str, Any], max_bytes: int) -> dict[str, Any]:
    encoded = json.dumps(metadata, sort_keys=True)
    if len(encoded.encode()) > max_bytes:
        raise InvalidArgument(
            f"metadata is {len(encoded)} bytes as JSON; the limit is {max_bytes}",
            reason="METADATA_TOO_LARGE",
        )
    return metadata


def collection_name(tenant: str, kb: str, generation: str) -> str:
    """The Milvus collection of one generation of a tenant's knowledge base:
    readable, within [a-zA-Z_][a-zA-Z0-9_]*, unique (a hash separates `a-b` from
    `a_b`), and new each time the knowledge base is created (or re-indexed), so
    that a re-created knowledge base never sees an old collection's chunks."""
    digest = hashlib.sha256(f"{tenant}\0{kb}".encode()).hexdigest()[:10]
    clean = re.sub(r"[^A-Za-z0-9]", "_", f"{tenant}__{kb}")[:200]
    return f"rm_{clean}_{digest}_{generation}"


def new_generation() -> str:
    return uuid.uuid4().hex[:8]


def document_version(
    content_sha256: str, media_type: str, file_name: str, metadata: dict[str, Any]
) -> str:
    """Everything that ends up in the stored chunks: equal versions need no new indexing."""
    material = json.dumps(
        [INDEX_FORMAT, content_sha256, media_type, file_name, metadata], sort_keys=True
    )
    return hashlib.sha256(material.encode()).hexdigest()[:32]


def check_text(text: str, what: str, maximum: int) -> str:
    if not text.strip():
        raise InvalidArgument(f"{what} is empty", reason=f"EMPTY_{what.upper()}")
    if len(text) > maximum:
        raise InvalidArgument(
            f"{what} has {len(text)} characters; the limit is {maximum}",
            reason=f"{what.upper()}_TOO_LONG",
            metadata={"length": len(text), "max": maximum},
        )
    return text
