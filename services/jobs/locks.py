"""The document lock: held around every write of a document's chunks (the
worker's upserts) and around their deletion (DeleteDocument, the sweeper), so
that once a delete or a newer upload cancelled a job, no write of that job
follows.

A lock lives `ttl_s` unless renewed: its holder renews it every third of that
while it works (`hold`, `hold_async`), so a slow write is never left unguarded,
and a holder that died frees it within `ttl_s`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import uuid
from collections.abc import AsyncIterator, Iterator

from services.jobs.db import RedisDb
from services.jobs.lua import RENEW, UNLOCK

log = logging.getLogger("ragmesh.locks")


class DocumentLocks:
    def __init__(self, db: RedisDb, ttl_s: float = 30.0) -> None:
        self.db = db
        self.ttl_s = ttl_s
        self._unlock = db.r.register_script(UNLOCK)
        self._renew = db.r.register_script(RENEW)

    def acquire(self, tenant: str, kb: str, doc: str) -> str | None:
        """One try; a token to release with, or None when someone holds it."""
        token = uuid.uuid4().hex
        key = self.db.keys.lock(tenant, kb, doc)
        ok = self.db.r.set(key, token, nx=True, px=int(self.ttl_s * 1000))
        return token if ok else None

    def renew(self, tenant: str, kb: str, doc: str, token: str) -> bool:
        """Extends the lock by `ttl_s` if `token` still holds it."""
        key = self.db.keys.lock(tenant, kb, doc)
        return bool(self._renew(keys=[key], args=[token, int(self.ttl_s * 1000)]))

    def release(self, tenant: str, kb: str, doc: str, token: str) -> None:
        self._unlock(keys=[self.db.keys.lock(tenant, kb, doc)], args=[token])

    @contextlib.contextmanager
    def hold(self, tenant: str, kb: str, doc: str, token: str) -> Iterator[None]:
        """Keeps an acquired lock alive from a thread until the block ends, then
        releases it."""
        stop = threading.Event()

        def renew_until_stopped() -> None:
            while not stop.wait(self.ttl_s / 3):
                try:
                    if not self.renew(tenant, kb, doc, token):
                        log.warning("lock of %s/%s/%s was lost", tenant, kb, doc)
                        return
                except Exception as exc:  # a Redis blip: try again next time
                    log.warning("renewing the lock of %s/%s/%s failed: %s", tenant, kb, doc, exc)

        renewer = threading.Thread(target=renew_until_stopped, name="lock-renewer", daemon=True)
        renewer.start()
        try:
            yield
        finally:
            stop.set()
            renewer.join(timeout=5)
            self.release(tenant, kb, doc, token)

    @contextlib.asynccontextmanager
    async def hold_async(self, tenant: str, kb: str, doc: str, token: str) -> AsyncIterator[None]:
        """`hold` on the event loop: a task renews the lock until the block ends."""

        async def renew_forever() -> None:
            while True:
                await asyncio.sleep(self.ttl_s / 3)
                try:
                    if not await asyncio.to_thread(self.renew, tenant, kb, doc, token):
                        return
                except Exception as exc:
                    log.warning("renewing the lock of %s/%s/%s failed: %s", tenant, kb, doc, exc)

        renewer = asyncio.create_task(renew_forever())
        try:
            yield
        finally:
            renewer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await renewer
            await asyncio.to_thread(self.release, tenant, kb, doc, token)
