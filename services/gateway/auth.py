"""API keys → tenants.

Callers send `authorization: Bearer <key>`. Keys come from
RAGMESH_GATEWAY_API_KEYS (`key:tenant,...`) and/or a file with one `key:tenant`
a line. Only SHA-256 digests of the keys are kept in memory, and lookups go
through the digest so a key is never compared byte by byte.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable
from pathlib import Path

from services.common.errors import InvalidArgument, Unauthenticated

TENANT_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")
ANONYMOUS_TENANT = "default"


def _digest(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()


def parse_key_entries(entries: Iterable[str], source: str) -> dict[bytes, str]:
    """`key:tenant` entries (blank and `#` lines skipped) → {sha256(key): tenant}."""
    keys: dict[bytes, str] = {}
    for raw in entries:
        entry = raw.strip()
        if not entry or entry.startswith("#"):
            continue
        key, sep, tenant = entry.rpartition(":")
        key, tenant = key.strip(), tenant.strip()
        if not sep or not key:
            raise InvalidArgument(f"{source}: entry without `key:tenant` form", reason="BAD_KEY")
        if not TENANT_RE.match(tenant):
            raise InvalidArgument(
                f"{source}: tenant {tenant!r} must match {TENANT_RE.pattern}", reason="BAD_KEY"
            )
        if len(key) < 8:
            raise InvalidArgument(
                f"{source}: API keys need at least 8 characters", reason="BAD_KEY"
            )
        digest = _digest(key)
        if digest in keys and keys[digest] != tenant:
            raise InvalidArgument(f"{source}: one key bound to two tenants", reason="BAD_KEY")
        keys[digest] = tenant
    return keys


class ApiKeyAuth:
    """Resolves the tenant of a call from its metadata."""

    def __init__(self, keys: dict[bytes, str], allow_anonymous: bool = False) -> None:
        self._keys = keys
        self.allow_anonymous = allow_anonymous and not keys

    @classmethod
    def from_settings(cls, api_keys: str, api_keys_file: str, allow_anonymous: bool) -> ApiKeyAuth:
        keys = parse_key_entries(api_keys.split(","), "RAGMESH_GATEWAY_API_KEYS")
        if api_keys_file:
            path = Path(api_keys_file)
            try:
                lines = path.read_text().splitlines()
            except OSError as exc:
                raise InvalidArgument(
                    f"cannot read API key file {path}: {exc}", reason="BAD_KEY"
                ) from exc
            for digest, tenant in parse_key_entries(lines, str(path)).items():
                if keys.get(digest, tenant) != tenant:
                    raise InvalidArgument("one key bound to two tenants", reason="BAD_KEY")
                keys[digest] = tenant
        if not keys and not allow_anonymous:
            raise InvalidArgument(
                "no API keys configured: set RAGMESH_GATEWAY_API_KEYS (key:tenant,...) or "
                "RAGMESH_GATEWAY_API_KEYS_FILE, or RAGMESH_GATEWAY_ALLOW_ANONYMOUS=true for "
                "local development",
                reason="NO_API_KEYS",
            )
        return cls(keys, allow_anonymous)

    @property
    def tenants(self) -> set[str]:
        return set(self._keys.values())

    def tenant_of(self, metadata: Iterable[tuple[str, str | bytes]] | None) -> str:
        """The tenant whose key is in `authorization: Bearer <key>`."""
        header = None
        for key, value in metadata or ():
            if key == "authorization":
                header = value.decode() if isinstance(value, bytes) else value
                break
        if header is None:
            if self.allow_anonymous:
                return ANONYMOUS_TENANT
            raise Unauthenticated(
                "missing `authorization: Bearer <api key>` metadata", reason="MISSING_API_KEY"
            )
        scheme, _, token = header.strip().partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise Unauthenticated(
                "authorization metadata must be `Bearer <api key>`", reason="MALFORMED_API_KEY"
            )
        tenant = self._keys.get(_digest(token.strip()))
        if tenant is None:
            if self.allow_anonymous:
                return ANONYMOUS_TENANT
            raise Unauthenticated("invalid API key", reason="INVALID_API_KEY")
        return tenant
