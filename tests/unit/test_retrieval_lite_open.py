"""Milvus Lite opens a collection once when the first calls for it come at once
(services.retrieval.lite_open): on a real Milvus Lite database, reopened as after a
restart. Without the fix, 8 threads opening one collection got several instances in
20 trials out of 20, and a write through any but the last is lost."""

from __future__ import annotations

import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

from milvus_lite.db import MilvusLite
from pymilvus import MilvusClient

from services.retrieval import lite_open

ROWS = 50


def _database(path: Path) -> None:
    # Made in another process: this one opens the directory itself below.
    script = (
        "from pymilvus import MilvusClient\n"
        f"c = MilvusClient({str(path)!r})\n"
        "c.create_collection('c1', dimension=4)\n"
        f"c.insert('c1', [{{'id': i, 'vector': [0.1] * 4}} for i in range({ROWS})])\n"
        "c.close()\n"
    )
    subprocess.run([sys.executable, "-c", script], check=True, timeout=120)


def _first_calls_at_once(db: MilvusLite, threads: int) -> list[Any]:
    start = threading.Barrier(threads)
    opened: list[Any] = []

    def first_call() -> None:
        start.wait(timeout=30)
        opened.append(db.get_collection("c1"))

    running = [threading.Thread(target=first_call) for _ in range(threads)]
    for t in running:
        t.start()
    for t in running:
        t.join(timeout=60)
    return opened


def test_concurrent_first_opens_share_one_collection(tmp_path: Path) -> None:
    assert lite_open.install()
    path = tmp_path / "race.db"
    _database(path)
    for _ in range(3):
        db = MilvusLite(str(path))
        opened = _first_calls_at_once(db, 8)
        assert len(opened) == 8
        assert len({id(c) for c in opened}) == 1
        # a write through what the first calls got survives a reopen
        opened[0].insert([{"id": ROWS, "vector": [0.2] * 4}])
        opened[0].flush()
        db.close()
    client = MilvusClient(str(path))
    try:
        client.load_collection("c1")
        count = client.query("c1", filter="id >= 0", output_fields=["count(*)"])
        assert count[0]["count(*)"] == ROWS + 1
    finally:
        client.close()
