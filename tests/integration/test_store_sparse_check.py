"""The first searches after the retrieval service starts do not race in pymilvus's
lazy scipy.sparse check (services/retrieval/store.py `warm_sparse_check`).

pymilvus checks search data for scipy sparse matrices; its first check executes
scipy.sparse's package outside the import locks, and two searches running that first
check at once (HYBRID's dense and BM25 searches) made one fail with "partially
initialized module 'scipy.sparse._bsr'" — an INTERNAL error, seen in the chaos suite
after a retrieval restart. The race needs a busy process to show, so the test checks
its cause instead: in a fresh interpreter, connecting the store leaves the check done,
and the first hybrid search after it is answered."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

SCRIPT = """
import sys
from concurrent.futures import ThreadPoolExecutor
from pymilvus.client.utils import SciPyHelper
from services.retrieval.config import RetrievalSettings
from services.retrieval.schema import CollectionSpec
from services.retrieval.store import MilvusStore

assert not SciPyHelper._checked, "a fresh interpreter has not run the check"
store = MilvusStore(RetrievalSettings(milvus_uri=sys.argv[1]))
store.connect(30)
print("checked after connect:", SciPyHelper._checked)
info = store.create_collection(CollectionSpec("first", 8), 30)
with ThreadPoolExecutor(4) as pool:  # the first searches, two of each kind at once
    found = list(pool.map(
        lambda i: store.search_dense(info, [0.1] * 8, 5, "", 30) if i % 2
        else store.search_sparse(info, "words", 5, "", 30),
        range(4),
    ))
print("searches answered:", len(found))
store.close()
"""


def test_connecting_runs_pymilvus_sparse_check_before_any_search(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(tmp_path / "first.db")],
        cwd=Path(__file__).resolve().parents[2],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "checked after connect: True" in done.stdout
    assert "searches answered: 4" in done.stdout
