"""The complaints of pymilvus and Milvus Lite that the store expects and handles
(services/retrieval/milvus_logs.py) stay out of the log. Through MilvusStore on a real
in-process Lite: creating a collection makes Lite's gRPC server refuse AllocTimestamp, a
query iterator makes pymilvus fall back to the client's clock, and a read of a released
collection fails once before the store loads it — each happens (counted ahead of the
filters), none is logged."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from services.retrieval import milvus_logs
from services.retrieval.config import RetrievalSettings
from services.retrieval.schema import CollectionSpec
from services.retrieval.store import MilvusStore

LOGGERS = (milvus_logs.SERVER_LOGGER, milvus_logs.ITERATOR_LOGGER, milvus_logs.RPC_ERROR_LOGGER)


class _Seen(logging.Filter):
    """Keeps what a logger is handed, before any filter of the project's drops it."""

    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def filter(self, record: logging.LogRecord) -> bool:
        self.records.append(record)
        return True


def test_handled_complaints_happen_and_are_not_logged(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    seen = {name: _Seen() for name in LOGGERS}
    for name, counter in seen.items():
        logging.getLogger(name).filters.insert(0, counter)
    store = MilvusStore(RetrievalSettings(milvus_uri=str(tmp_path / "quiet.db")))
    try:
        with caplog.at_level(logging.DEBUG):
            store.connect(30)
            store.create_collection(CollectionSpec("quiet", 8), 30)
            assert list(store.iter_query("quiet", "", ["id"], 30)) == []
            store._require_client().release_collection("quiet")
            assert store.query("quiet", "", ["id"], 5, 30) == []  # loaded again, then read
    finally:
        store.close()
        for name, counter in seen.items():
            logging.getLogger(name).removeFilter(counter)
    happened = {name: [r.getMessage()[:80] for r in c.records] for name, c in seen.items()}
    assert all(happened.values()), f"one complaint no longer happens: {happened}"
    logged = [(r.name, r.getMessage()[:80]) for r in caplog.records if r.name in LOGGERS]
    assert not logged
    assert "loading collection quiet (released" in caplog.text  # the store's own line


def test_other_records_of_those_loggers_still_show(caplog: pytest.LogCaptureFixture) -> None:
    milvus_logs.quiet_lite_server()
    milvus_logs.quiet_store(lite=True)
    server = logging.getLogger(milvus_logs.SERVER_LOGGER)
    with caplog.at_level(logging.INFO):
        try:
            raise NotImplementedError("Method not implemented!")
        except NotImplementedError:
            server.exception("Exception calling application: Method not implemented!")
        try:
            raise RuntimeError("segment file gone")
        except RuntimeError:
            server.exception("Exception calling application: segment file gone")
        logging.getLogger(milvus_logs.ITERATOR_LOGGER).warning("iterator page failed")
        rpc = logging.getLogger(milvus_logs.RPC_ERROR_LOGGER)
        rpc.error(
            "RPC error: [query], <MilvusException: (code=101, message=Collection 'c' is "
            "in state 'released'; call load() before search/get/query)>\nTraceback: …"
        )
        rpc.error(
            "RPC error: [upsert], <MilvusException: (code=65535, message=disk full)>\n"
            "Traceback: … collection not loaded …"
        )
    assert [r.getMessage().split(",")[0] for r in caplog.records] == [
        "Exception calling application: segment file gone",
        "iterator page failed",
        "RPC error: [upsert]",
    ]
