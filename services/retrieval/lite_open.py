"""Milvus Lite opens each collection once, however many calls ask for it first.

`MilvusLite.get_collection` (milvus-lite 3.2.2) has no lock: the first calls for a
collection after the database is opened (at start, or after a restart of a
`milvus-lite server`) each build a `Collection` on the same directory, and the last
one replaces the others in the cache (8 threads opening one collection at once: 20
trials out of 20 got several instances). A write that went through one of the others
is acknowledged and then lost — its rows sit in an instance that nobody reads or
flushes. The chaos test saw exactly that: a document SUCCEEDED right after Milvus Lite
came back, its chunk missing at the end. `install()` makes the opening one at a time.
"""

from __future__ import annotations

import functools
import logging
import threading
from typing import Any

log = logging.getLogger("ragmesh.retrieval")


@functools.cache  # once per process
def install() -> bool:
    """Patch Milvus Lite; False when this Lite has no such method."""
    try:
        from milvus_lite.db import MilvusLite
    except ImportError as exc:
        log.warning("Milvus Lite collection opening left unserialised: %s", exc)
        return False
    original = MilvusLite.get_collection
    # One lock for every database of the process: held for a dictionary lookup once a
    # collection is open, for its opening (segments, write-ahead log) the first time.
    opening = threading.Lock()

    def get_collection(self: Any, *args: Any, **kwargs: Any) -> Any:
        with opening:
            return original(self, *args, **kwargs)

    MilvusLite.get_collection = get_collection
    return True
