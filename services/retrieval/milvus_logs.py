"""Complaints of pymilvus and Milvus Lite that the store expects and handles, kept out
of the logs (they showed as ERRORs with tracebacks on the terminal of `make run` and in
every operator's log search):

- Milvus Lite 3.2 has no `AllocTimestamp`: pymilvus asks for one while it waits for a
  new index and ignores UNIMPLEMENTED (its `ignore_unimplemented`), but grpc's server in
  the process that hosts Lite logs each as an ERROR with a traceback — two for every
  collection created.
- Lite returns no session timestamp to a query iterator: pymilvus warns and pages with
  the client's clock, which is Lite's own (one process, one clock).
- A collection that a restart left released: pymilvus logs the failed read as an ERROR
  with a traceback before the store loads the collection and reads again
  (MilvusStore._read_ungated logs that at INFO; a read that still fails is an error of
  the store's own).

Only these records are dropped: any other error of Lite's server or of pymilvus is
logged as before.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from services.retrieval.milvus_errors import NOT_LOADED_HINTS

#: grpc's sync server, which only Lite uses here (ragmesh's servers are grpc.aio)
SERVER_LOGGER = "grpc._server"
#: pymilvus's loggers are their modules' names
ITERATOR_LOGGER = "pymilvus.client.iterator.query_iterator"
RPC_ERROR_LOGGER = "pymilvus.decorators"


def _unimplemented_call(record: logging.LogRecord) -> bool:
    """The generated servicer's default for a method Lite does not implement."""
    exc = record.exc_info[1] if record.exc_info else None
    return isinstance(exc, NotImplementedError) and str(exc) == "Method not implemented!"


def _iterator_on_client_clock(record: logging.LogRecord) -> bool:
    message = record.getMessage()
    return "mvccTs" in message and "client-side ts" in message


def _read_of_released_collection(record: logging.LogRecord) -> bool:
    """The first line names the call and Milvus's message; the traceback follows."""
    return bool(NOT_LOADED_HINTS.search(record.getMessage().split("\n", 1)[0]))


class _Drop(logging.Filter):
    def __init__(self, matches: Callable[[logging.LogRecord], bool]) -> None:
        super().__init__()
        self.matches = matches

    def filter(self, record: logging.LogRecord) -> bool:
        return not self.matches(record)


def _add_once(logger_name: str, matches: Callable[[logging.LogRecord], bool]) -> None:
    logger = logging.getLogger(logger_name)
    if not any(isinstance(f, _Drop) and f.matches is matches for f in logger.filters):
        logger.addFilter(_Drop(matches))


def quiet_lite_server() -> None:
    """In the process that hosts Lite's gRPC server."""
    _add_once(SERVER_LOGGER, _unimplemented_call)


def quiet_store(lite: bool) -> None:
    """In the process whose MilvusStore talks to Milvus (`lite`: Milvus Lite)."""
    _add_once(RPC_ERROR_LOGGER, _read_of_released_collection)
    if lite:
        _add_once(ITERATOR_LOGGER, _iterator_on_client_clock)
