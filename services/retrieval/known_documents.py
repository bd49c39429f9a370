"""Which documents may have chunks in a collection, so that writing a document that
has none skips the query for its stale chunks.

Every UpsertChunks asks Milvus for the document's chunks of other versions (to delete
them). On Milvus Lite that filtered query scans every row of the collection (3 ms at
600 rows, 8 ms at 3,000, 23 ms at 12,000, docs/retrieval.md): one scan per ingested
document makes filling a collection quadratic, and for a document written for the
first time it always finds nothing.

On Lite this service is the collection's only writer (Lite is a file this process
opens), so it can know which documents have chunks: the ids found by one scan of the
collection, the first time a write needs them, plus every document written since.
The set only ever grows (a delete does not remove an id), so it is a superset of the
documents that have chunks: a document outside it has none, and its stale-chunk
query is skipped; inside it, the query runs as before. A Milvus server has other
writers (several replicas of this service), so there every write still queries.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable


class KnownDocuments:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._ids: dict[str, set[str]] = {}  # per collection, once scanned
        # Written before the collection's scan was merged (kept so a scan that ran
        # alongside those writes, and missed them, does not forget them).
        self._early: dict[str, set[str]] = {}

    def loaded(self, collection: str) -> bool:
        with self._lock:
            return collection in self._ids

    def merge_scan(self, collection: str, document_ids: Iterable[str]) -> None:
        """The document ids one scan of the collection found (a union: scans and
        writes may overlap in any order)."""
        found = set(document_ids)
        with self._lock:
            known = self._ids.setdefault(collection, set())
            known |= found
            known |= self._early.pop(collection, set())

    def claim(self, collection: str, document_id: str) -> bool:
        """Records that `document_id` is about to be written; whether it may have had
        chunks before (True also when the collection was never scanned). Call it
        before the write, so that a write in flight is always known."""
        with self._lock:
            known = self._ids.get(collection)
            if known is None:
                self._early.setdefault(collection, set()).add(document_id)
                return True
            if document_id in known:
                return True
            known.add(document_id)
            return False

    def forget(self, collection: str) -> None:
        """The collection was dropped (a new one of the same name is scanned afresh)."""
        with self._lock:
            self._ids.pop(collection, None)
            self._early.pop(collection, None)
