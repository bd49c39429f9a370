"""Fault injection for tests: RAGMESH_RETRIEVAL_FAULTS=`operation=count,...`
makes the next `count` calls of each named operation fail as if Milvus were
down (UNAVAILABLE, MILVUS_UNAVAILABLE). Empty (the default): no fault, ever.

It exists because some failures cannot be caused on demand from a test (a
Milvus outage exactly between two steps of a delete); the same paths are also
tested by killing the real service.
"""

from __future__ import annotations

import threading

from services.common.errors import Unavailable

OPERATIONS = frozenset({"delete_document_chunks", "delete_collection", "upsert_chunks"})


class Faults:
    def __init__(self, spec: str = "") -> None:
        self._left: dict[str, int] = {}
        self._lock = threading.Lock()
        for part in filter(None, (p.strip() for p in spec.split(","))):
            operation, _, count = part.partition("=")
            if operation not in OPERATIONS or not count.isdigit():
                raise ValueError(
                    f"RAGMESH_RETRIEVAL_FAULTS: {part!r} is not `operation=count` with an "
                    f"operation among {sorted(OPERATIONS)}"
                )
            self._left[operation] = int(count)

    def check(self, operation: str) -> None:
        """Raises the injected failure while `operation` has some left."""
        with self._lock:
            left = self._left.get(operation, 0)
            if left <= 0:
                return
            self._left[operation] = left - 1
        raise Unavailable(
            f"Milvus is unavailable ({operation}: injected fault)", reason="MILVUS_UNAVAILABLE"
        )
