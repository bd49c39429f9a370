"""API keys → tenants.

Callers send `authorization: Bearer <key>`. Keys come from
RAGMESH_GATEWAY_API_KEYS (`key:tenant,...`) and/or a file with one `key:tenant`
a line. Only SHA-256 digests of the keys are kept in memory, and lookups go
through the digest so a key is never compared byte by byte.

The file is watched: at most every `reload_interval_s` a call looks at its
mtime, size and inode, and when they changed the file is parsed again and the
whole key table replaced at once (a call sees the old table or the new one,
never a mix). A file that cannot be read or parsed is logged and the previous
keys stay. Whether anonymous callers are served is decided at startup only: a
reload never turns it on, even when it empties the table.

`Authenticator` puts the failed-authentication limit (auth_limits) in front.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import time
from collections.abc import Callable, Iterable
from pathlib import Path

from services.common.errors import InvalidArgument, ServiceError, Unauthenticated
from services.gateway.auth_limits import FailedAuthLimiter, client_source

log = logging.getLogger("ragmesh.gateway.auth")

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
        if not TENANT_RE.fullmatch(tenant):
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


Metadata = Iterable[tuple[str, str | bytes]] | None
_FileSignature = tuple[int, int, int, int] | None


def _file_signature(path: str) -> _FileSignature:
    try:
        st = os.stat(path)  # follows symlinks: a Kubernetes Secret volume swaps ..data
    except OSError:
        return None
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


def read_key_file(path: str) -> dict[bytes, str]:
    try:
        lines = Path(path).read_text().splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidArgument(f"cannot read API key file {path}: {exc}", reason="BAD_KEY") from exc
    return parse_key_entries(lines, path)


def merge_keys(base: dict[bytes, str], more: dict[bytes, str]) -> dict[bytes, str]:
    keys = dict(base)
    for digest, tenant in more.items():
        if keys.get(digest, tenant) != tenant:
            raise InvalidArgument("one key bound to two tenants", reason="BAD_KEY")
        keys[digest] = tenant
    return keys


class ApiKeyAuth:
    """Resolves the tenant of a call from its metadata."""

    def __init__(
        self,
        keys: dict[bytes, str],
        allow_anonymous: bool = False,
        *,
        env_keys: dict[bytes, str] | None = None,
        key_file: str = "",
        reload_interval_s: float = 0.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._keys = keys
        self.allow_anonymous = allow_anonymous and not keys
        self._env_keys = env_keys or {}
        self._key_file = key_file
        self._reload_interval_s = reload_interval_s
        self._clock = clock
        self._signature = _file_signature(key_file) if key_file else None
        self._next_check = clock() + reload_interval_s
        self.reloads = 0

    @classmethod
    def from_settings(
        cls,
        api_keys: str,
        api_keys_file: str,
        allow_anonymous: bool,
        reload_interval_s: float = 0.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> ApiKeyAuth:
        env_keys = parse_key_entries(api_keys.split(","), "RAGMESH_GATEWAY_API_KEYS")
        keys = env_keys
        if api_keys_file:
            keys = merge_keys(env_keys, read_key_file(api_keys_file))
        if not keys and not allow_anonymous:
            raise InvalidArgument(
                "no API keys configured: set RAGMESH_GATEWAY_API_KEYS (key:tenant,...) or "
                "RAGMESH_GATEWAY_API_KEYS_FILE, or RAGMESH_GATEWAY_ALLOW_ANONYMOUS=true for "
                "local development",
                reason="NO_API_KEYS",
            )
        return cls(
            keys,
            allow_anonymous,
            env_keys=env_keys,
            key_file=api_keys_file,
            reload_interval_s=reload_interval_s,
            clock=clock,
        )

    @property
    def tenants(self) -> set[str]:
        return set(self._keys.values())

    def __len__(self) -> int:
        return len(self._keys)

    def maybe_reload(self) -> bool:
        """Re-read the key file if it changed (looked at most every reload interval).
        True when the table was replaced."""
        if not self._key_file or self._reload_interval_s <= 0:
            return False
        now = self._clock()
        if now < self._next_check:
            return False
        self._next_check = now + self._reload_interval_s
        signature = _file_signature(self._key_file)
        if signature == self._signature:
            return False
        # Remember the new state even if it is broken: logged once, looked at again
        # when the file changes again.
        self._signature = signature
        try:
            keys = merge_keys(self._env_keys, read_key_file(self._key_file))
        except ServiceError as exc:
            log.error(
                "API key file not reloaded, the previous %d keys stay: %s",
                len(self._keys),
                exc.message,
            )
            return False
        self._keys = keys  # one assignment: callers see the old table or the new one
        self.reloads += 1
        log.info(
            "API keys reloaded from %s: %d keys, %d tenants",
            self._key_file,
            len(keys),
            len(set(keys.values())),
        )
        return True

    def tenant_of(self, metadata: Metadata) -> str:
        """The tenant whose key is in `authorization: Bearer <key>`."""
        self.maybe_reload()
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


class Authenticator:
    """The tenant of a call, behind the failed-authentication limit of its source."""

    def __init__(
        self,
        keys: ApiKeyAuth,
        limiter: FailedAuthLimiter | None = None,
        trusted_proxy_hops: int = 0,
    ) -> None:
        self.keys = keys
        self.limiter = limiter
        self.trusted_proxy_hops = trusted_proxy_hops

    def tenant_of(self, metadata: Metadata, peer: str = "") -> str:
        metadata = list(metadata or ())
        if self.limiter is None or not self.limiter.enabled:
            return self.keys.tenant_of(metadata)
        source = client_source(peer, metadata, self.trusted_proxy_hops)
        self.limiter.check(source)
        try:
            return self.keys.tenant_of(metadata)
        except Unauthenticated:
            self.limiter.record_failure(source)
            wait = self.limiter.blocked_for(source)
            if wait > 0:  # this failure tripped the limit: once per lockout
                log.warning(
                    "%s locked out for %.0f s after %d failed authentications",
                    source,
                    wait,
                    self.limiter.max_failures,
                )
            raise
