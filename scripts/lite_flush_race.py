"""Milvus Lite: reads running while a collection is flushed miss acknowledged rows.

A writer upserts batches of chunks through MilvusStore (each acknowledged when
the call returns) and flushes every few batches; readers count the rows the
whole time. A count below what was acknowledged before it began is a miss.
`--ungated` runs the same without services/retrieval/lite_gate.py's ordering,
to show the race the gate closes (Milvus Lite 3.2.2, flushing every 2 batches:
5-13 short counts in each of 4 runs of 100 batches; gated, none);
tests/integration/test_lite_flush_race.py runs it gated.

    python -m scripts.lite_flush_race [--batches 100] [--ungated]
"""

from __future__ import annotations

import argparse
import random
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from services.retrieval.config import RetrievalSettings
from services.retrieval.schema import ChunkRecord, CollectionSpec
from services.retrieval.store import MilvusStore

DIM = 8
COLLECTION = "flush_race"


class UngatedStore(MilvusStore):
    """The store as it was before the gate: every call straight to Milvus Lite."""

    @contextmanager
    def _gated(self, kind: str, name: str, timeout: float | None) -> Iterator[None]:
        yield


@dataclass
class RaceResult:
    batches: int
    counts: int
    misses: int
    worst: str = ""


def race(db: Path, batches: int = 100, gated: bool = True, flush_every: int = 2) -> RaceResult:
    store = (MilvusStore if gated else UngatedStore)(RetrievalSettings(milvus_uri=str(db)))
    store.connect(30)
    store.create_collection(CollectionSpec(COLLECTION, DIM), 30)
    rng = random.Random(14)
    acknowledged = 0
    done = threading.Event()
    result = RaceResult(batches, 0, 0)
    lock = threading.Lock()

    def write() -> None:
        nonlocal acknowledged
        try:
            for b in range(batches):
                chunks = [
                    ChunkRecord(
                        f"doc{b}",
                        i,
                        text=f"chunk {i} of document {b}",
                        document_version="1",
                        vector=[rng.random() for _ in range(DIM)],
                    )
                    for i in range(20)
                ]
                store.upsert(COLLECTION, chunks, 30)
                acknowledged += len(chunks)
                if b % flush_every == flush_every - 1:
                    store.flush(COLLECTION, 30)
        finally:
            done.set()

    def read() -> None:
        while not done.is_set():
            before = acknowledged
            counted = store.count(COLLECTION, "", 30)
            with lock:
                result.counts += 1
                if counted < before:
                    result.misses += 1
                    result.worst = result.worst or f"counted {counted}, {before} acknowledged"

    threads = [threading.Thread(target=write)] + [threading.Thread(target=read) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    store.close()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batches", type=int, default=100)
    parser.add_argument("--ungated", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        got = race(Path(tmp) / "race.db", args.batches, gated=not args.ungated)
    print(
        f"{'ungated' if args.ungated else 'gated'}: {got.batches} batches, {got.counts} counts, "
        f"{got.misses} short" + (f" (first: {got.worst})" if got.worst else "")
    )


if __name__ == "__main__":
    main()
