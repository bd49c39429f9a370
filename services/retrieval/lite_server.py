"""`milvus-lite` with ragmesh's fixes to Milvus Lite, for running it as a process of its
own: `python -m services.retrieval.lite_server server --data-dir D --port P` takes
the arguments of the `milvus-lite` command. In the retrieval service's own process
(a `.db` URI) the same fixes are installed when it opens the database.

- services.retrieval.lite_open: each collection opened once (no lost writes after a
  restart);
- services.retrieval.lite_bm25: BM25 with the collection's statistics;
- services.retrieval.milvus_logs: its server's expected complaints kept out of the log.
"""

from __future__ import annotations

from services.retrieval import lite_bm25, lite_open, milvus_logs


def install() -> None:
    lite_open.install()
    lite_bm25.install()
    milvus_logs.quiet_lite_server()


def main() -> int:
    install()
    from milvus_lite.cmdline import main as milvus_lite_main

    return int(milvus_lite_main() or 0)


if __name__ == "__main__":
    raise SystemExit(main())
