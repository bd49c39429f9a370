"""The document lock: held around every write of a document's chunks (the
worker's upserts) and around their deletion (DeleteDocument), so that once a
delete or a newer upload cancelled a job, no write of that job follows."""

from __future__ import annotations

import uuid

from services.jobs.db import RedisDb
from services.jobs.lua import UNLOCK


class DocumentLocks:
    def __init__(self, db: RedisDb, ttl_s: float = 60.0) -> None:
        self.db = db
        self.ttl_s = ttl_s
        self._unlock = db.r.register_script(UNLOCK)

    def acquire(self, tenant: str, kb: str, doc: str) -> str | None:
        """One try; a token to release with, or None when someone holds it."""
        token = uuid.uuid4().hex
        key = self.db.keys.lock(tenant, kb, doc)
        ok = self.db.r.set(key, token, nx=True, px=int(self.ttl_s * 1000))
        return token if ok else None

    def release(self, tenant: str, kb: str, doc: str, token: str) -> None:
        self._unlock(keys=[self.db.keys.lock(tenant, kb, doc)], args=[token])
