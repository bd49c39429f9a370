"""The vector store on pymilvus `MilvusClient` (Milvus Lite 3 or a Milvus
server), implementing services.retrieval.vector_store.VectorStore.

Methods are blocking (pymilvus is); the logic runs them in worker threads with
a timeout taken from the caller's deadline. Milvus errors become the service's
own errors (services.retrieval.milvus_errors).
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import logging
import re
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from pymilvus import MilvusClient
from pymilvus.exceptions import MilvusException

from services.common import metrics
from services.common.errors import (
    FailedPrecondition,
    NotFound,
    ServiceError,
    Unavailable,
)
from services.retrieval import lite_server, milvus_logs
from services.retrieval.collection_schema import build_schema
from services.retrieval.config import RetrievalSettings
from services.retrieval.filters import string_literal
from services.retrieval.identifiers import expand_query
from services.retrieval.lite_gate import GateTimeout, LiteGate
from services.retrieval.milvus_errors import NOT_LOADED_HINTS, translate_error
from services.retrieval.rows import dense_score, record_from_row, row_from_record
from services.retrieval.schema import (
    DEFAULT_INDEX_PARAMS,
    F_BM25_TEXT,
    F_DENSE,
    F_ID,
    F_PAGE_START,
    F_SPARSE,
    F_TEXT,
    Capabilities,
    ChunkRecord,
    CollectionInfo,
    CollectionSpec,
    IndexType,
    Language,
    Metric,
    ScoredId,
)

log = logging.getLogger("ragmesh.retrieval.store")

# Marks collections made by this service; the rest of the spec rides along.
SCHEMA_TAG = "ragmesh.retrieval/v1"
# The spec is kept in a collection property (Milvus Lite drops descriptions).
SPEC_PROPERTY = "ragmesh.spec"
BACKEND_LITE = "milvus-lite"
#: loads of a released collection one read tries (and the pause between them grows)
LOAD_ATTEMPTS = 3
LOAD_PAUSE_S = 0.2
BACKEND_SERVER = "milvus-server"
# LiteGate's methods by the metric label of their calls.
GATE_KINDS = {"read": "read", "write": "write", "exclusive": "flush"}


def _version_tuple(version: str) -> tuple[int, ...]:
    match = re.search(r"(\d+)\.(\d+)(?:\.(\d+))?", version)
    return tuple(int(p) for p in match.groups(default="0")) if match else (0, 0, 0)


def warm_sparse_check() -> None:
    """Runs pymilvus's check for scipy sparse search data once, before any search.

    Its first call executes scipy.sparse's package with `exec_module`, outside the
    import system's locks: two searches starting together after a start (HYBRID runs
    its dense and BM25 searches side by side) raced in it and one failed with
    "partially initialized module 'scipy.sparse._bsr'" — an INTERNAL error for the first
    hybrid search after the retrieval service (re)started (seen in the chaos suite)."""
    try:
        from pymilvus.client.entity_helper import entity_is_sparse_matrix

        entity_is_sparse_matrix([[0.0]])
    except Exception as exc:  # a pymilvus without it: nothing to warm
        log.debug("pymilvus sparse check not warmed: %s", exc)


def _hybrid_ts_now() -> int:
    """A Milvus hybrid timestamp for the current wall-clock time (logical part 0)."""
    return int(time.time() * 1000) << 18


class MilvusStore:
    """VectorStore on pymilvus `MilvusClient`."""

    def __init__(self, settings: RetrievalSettings) -> None:
        self.settings = settings
        self.capabilities: Capabilities | None = None
        self._client: MilvusClient | None = None
        self._lock = threading.Lock()
        # Session consistency: hybrid timestamp of this instance's last write per
        # collection. pymilvus's own session tracking misses deletes on Milvus 2.3
        # (its Delete response carries no timestamp), so reads after a delete
        # would not see it.
        self._write_ts: dict[str, int] = {}
        self._info_cache: dict[str, CollectionInfo] = {}
        # Milvus Lite: a flush runs alone on its collection (lite_gate explains why).
        self._gate = LiteGate()

    # -- connection ---------------------------------------------------------
    def is_lite(self) -> bool:
        return self.capabilities is not None and self.capabilities.backend == BACKEND_LITE

    def _require_client(self) -> MilvusClient:
        client = self._client
        if client is None:
            raise Unavailable("not connected to Milvus yet", reason="MILVUS_UNAVAILABLE")
        return client

    def connect(self, timeout: float) -> Capabilities:
        with self._lock:
            if self._client is None:
                uri = self.settings.milvus_uri
                if self.settings.is_lite_file:
                    Path(uri).expanduser().parent.mkdir(parents=True, exist_ok=True)
                    uri = str(Path(uri).expanduser())
                    # Lite runs in this process: with ragmesh's fixes (lite_server).
                    lite_server.install()
                warm_sparse_check()
                try:
                    self._client = MilvusClient(
                        uri=uri,
                        token=self.settings.milvus_token,
                        db_name=self.settings.milvus_db_name,
                        timeout=timeout,
                    )
                except Exception as exc:
                    raise translate_error(exc, "connect") from exc
            client = self._client
        try:
            version = str(client.get_server_version(timeout=timeout))
        except Exception as exc:
            raise translate_error(exc, "server version") from exc
        self.capabilities = self._detect(version)
        milvus_logs.quiet_store(lite=self.is_lite())
        log.info(
            "connected to %s %s (BM25: %s)",
            self.capabilities.backend,
            version,
            self.capabilities.sparse_supported,
        )
        return self.capabilities

    @staticmethod
    def _detect(version: str) -> Capabilities:
        """What the server can do, from its version.

        Milvus Lite 3 reports `milvus_lite-3.x` and has BM25 (jieba when the
        `jieba` package is installed); Milvus servers have BM25 and sparse
        vectors from 2.5 on. The 2.3 standalone server of the `milvus` package
        reports `v2.3.5-lite` — it is a server, not Milvus Lite.
        """
        all_indexes = (IndexType.FLAT, IndexType.IVF_FLAT, IndexType.HNSW, IndexType.AUTOINDEX)
        if version.startswith("milvus_lite"):
            jieba = importlib.util.find_spec("jieba") is not None
            return Capabilities(
                backend=BACKEND_LITE,
                server_version=version,
                sparse_supported=True,
                hybrid_supported=True,
                index_types=all_indexes,
                analyzers=("standard", "jieba") if jieba else ("standard",),
            )
        bm25 = _version_tuple(version) >= (2, 5)
        return Capabilities(
            backend=BACKEND_SERVER,
            server_version=version,
            sparse_supported=bm25,
            hybrid_supported=bm25,
            index_types=all_indexes,
            analyzers=("standard", "jieba") if bm25 else (),
        )

    def ping(self, timeout: float) -> None:
        client = self._require_client()
        try:
            client.list_collections(timeout=timeout)
        except Exception as exc:
            raise translate_error(exc, "ping") from exc

    def close(self) -> None:
        with self._lock:
            client, self._client = self._client, None
        if client is not None:
            try:
                client.close()
            except Exception as exc:  # closing a dead connection is not an error
                log.debug("closing the Milvus client: %s", exc)

    @contextmanager
    def _call(self, what: str) -> Iterator[MilvusClient]:
        client = self._require_client()
        try:
            yield client
        except ServiceError:
            raise
        except Exception as exc:
            raise translate_error(exc, what) from exc

    @contextmanager
    def _gated(self, kind: str, name: str, timeout: float | None) -> Iterator[None]:
        """On Milvus Lite, the call waits its turn around flushes (lite_gate)."""
        if not self.is_lite():
            yield
            return
        started = time.monotonic()
        try:
            with getattr(self._gate, kind)(name, timeout):
                metrics.MILVUS_LITE_GATE_WAIT.labels(GATE_KINDS[kind]).observe(
                    time.monotonic() - started
                )
                yield
        except GateTimeout as exc:  # only the gate raises it
            raise Unavailable(
                f"the call on {name} did not get its turn within the deadline (Milvus Lite "
                "runs a flush alone and one write at a time)",
                reason="MILVUS_UNAVAILABLE",
            ) from exc

    def _read(self, name: str, what: str, timeout: float, read: Any) -> Any:
        with self._gated("read", name, timeout):
            return self._read_ungated(name, what, timeout, read)

    def _read_ungated(self, name: str, what: str, timeout: float, read: Any) -> Any:
        """Run a read; a collection that a Milvus restart left released is
        loaded and the read retried. Concurrent reads each load it, and a read
        right after a load can still find it released (seen under the chaos
        run's concurrent calls): up to LOAD_ATTEMPTS loads, then UNAVAILABLE."""
        with self._call(what) as client:
            for attempt in range(LOAD_ATTEMPTS + 1):
                try:
                    return read(client)
                except MilvusException as exc:
                    released = NOT_LOADED_HINTS.search(str(getattr(exc, "message", exc)))
                    if not released or attempt == LOAD_ATTEMPTS:
                        raise
                log.info("loading collection %s (released, e.g. by a Milvus restart)", name)
                client.load_collection(name, timeout=timeout)
                time.sleep(LOAD_PAUSE_S * attempt)
            raise AssertionError("unreachable")

    # -- consistency ----------------------------------------------------------
    def _note_write(self, name: str) -> None:
        self._write_ts[name] = _hybrid_ts_now()

    def _read_kwargs(self, name: str) -> dict[str, Any]:
        level = self.settings.consistency
        if self.is_lite():
            return {}  # Milvus Lite reads its own writes at once
        if level != "Session":
            return {"consistency_level": level}
        ts = self._write_ts.get(name)
        if ts is None:  # nothing written by this instance: no write to wait for
            return {"consistency_level": "Eventually"}
        return {"consistency_level": "Customized", "guarantee_timestamp": ts}

    # -- collections ----------------------------------------------------------
    def create_collection(self, spec: CollectionSpec, timeout: float) -> CollectionInfo:
        caps = self.capabilities
        sparse = bool(caps and caps.sparse_supported)
        if sparse and spec.language is Language.CHINESE and caps and "jieba" not in caps.analyzers:
            raise FailedPrecondition(
                "the Chinese analyzer (jieba) is not available on this Milvus; install "
                "milvus-lite[chinese]",
                reason="ANALYZER_UNAVAILABLE",
            )
        params = spec.index_params or DEFAULT_INDEX_PARAMS[spec.index_type]
        identifiers = sparse and self.settings.bm25_identifiers
        description = json.dumps(
            {
                "schema": SCHEMA_TAG,
                "metric": spec.metric.value,
                "index_type": spec.index_type.value,
                "index_params": params,
                "language": spec.language.value,
                "sparse": sparse,
                "labels": spec.labels,
                "bm25_input": F_BM25_TEXT if identifiers else F_TEXT,
            },
            separators=(",", ":"),
        )
        with self._call("create collection") as client:
            schema, index_params = build_schema(
                client, spec, dict(params), sparse, description, identifiers
            )
            client.create_collection(
                spec.name,
                schema=schema,
                index_params=index_params,
                consistency_level=self.settings.consistency,
                properties={SPEC_PROPERTY: description},
                timeout=timeout,
            )
        spec = dataclasses.replace(spec, index_params=dict(params))
        info = CollectionInfo(
            spec=spec,
            sparse_enabled=sparse,
            pages=True,
            bm25_input=F_BM25_TEXT if identifiers else F_TEXT,
        )
        self._info_cache[spec.name] = info
        return info

    def describe_collection(self, name: str, timeout: float) -> CollectionInfo:
        with self._call("describe collection") as client:
            if not client.has_collection(name, timeout=timeout):
                self._info_cache.pop(name, None)
                raise NotFound(
                    f"knowledge base collection {name!r} does not exist",
                    reason="COLLECTION_NOT_FOUND",
                    metadata={"collection": name},
                )
            desc = client.describe_collection(name, timeout=timeout)
        properties = desc.get("properties") or {}
        try:
            meta = json.loads(properties.get(SPEC_PROPERTY) or desc.get("description") or "{}")
        except ValueError:
            meta = {}
        if not isinstance(meta, dict) or meta.get("schema") != SCHEMA_TAG:
            raise FailedPrecondition(
                f"collection {name!r} was not created by the retrieval service",
                reason="FOREIGN_COLLECTION",
                metadata={"collection": name},
            )
        dim = next(int(f["params"]["dim"]) for f in desc["fields"] if f["name"] == F_DENSE)
        spec = CollectionSpec(
            name=name,
            dimension=dim,
            metric=Metric(meta["metric"]),
            index_type=IndexType(meta["index_type"]),
            index_params={k: int(v) for k, v in (meta.get("index_params") or {}).items()},
            language=Language(meta["language"]),
            labels={str(k): str(v) for k, v in (meta.get("labels") or {}).items()},
        )
        # Fields added over time (pages, bm25_text) are read from the schema itself:
        # an older collection lacks them and reads as before (no pages, BM25 on text).
        names = {str(f.get("name")) for f in desc["fields"]}
        info = CollectionInfo(
            spec=spec,
            sparse_enabled=bool(meta.get("sparse")),
            pages=F_PAGE_START in names,
            bm25_input=F_BM25_TEXT if F_BM25_TEXT in names else F_TEXT,
        )
        self._info_cache[name] = info
        return info

    def cached_info(self, name: str) -> CollectionInfo | None:
        return self._info_cache.get(name)

    def forget_all(self) -> None:
        self._info_cache.clear()

    def list_collections(self, timeout: float) -> list[str]:
        with self._call("list collections") as client:
            return sorted(str(n) for n in client.list_collections(timeout=timeout))

    def drop_collection(self, name: str, timeout: float) -> None:
        with self._gated("exclusive", name, timeout), self._call("drop collection") as client:
            client.drop_collection(name, timeout=timeout)
        self._info_cache.pop(name, None)
        self._write_ts.pop(name, None)

    # -- rows -----------------------------------------------------------------
    def count(self, name: str, filter_expr: str, timeout: float) -> int:
        rows = self._read(
            name,
            "count",
            timeout,
            lambda client: client.query(
                name,
                filter=filter_expr,
                output_fields=["count(*)"],
                timeout=timeout,
                **self._read_kwargs(name),
            ),
        )
        return int(rows[0]["count(*)"]) if rows else 0

    def query(
        self,
        name: str,
        filter_expr: str,
        fields: Sequence[str],
        limit: int,
        timeout: float,
    ) -> list[dict[str, Any]]:
        rows = self._read(
            name,
            "query",
            timeout,
            lambda client: client.query(
                name,
                filter=filter_expr,
                output_fields=list(fields),
                limit=limit,
                timeout=timeout,
                **self._read_kwargs(name),
            ),
        )
        return [dict(r) for r in rows]

    def iter_query(
        self, name: str, filter_expr: str, fields: Sequence[str], timeout: float
    ) -> Iterator[dict[str, Any]]:
        """Every matching row, in batches (for collections beyond one query's cap)."""
        deadline = time.monotonic() + timeout
        kwargs = self._read_kwargs(name)
        with self._gated("read", name, timeout):
            yield from self._iter_query(name, filter_expr, fields, timeout, deadline, kwargs)

    def _iter_query(
        self,
        name: str,
        filter_expr: str,
        fields: Sequence[str],
        timeout: float,
        deadline: float,
        kwargs: dict[str, Any],
    ) -> Iterator[dict[str, Any]]:
        it = self._read_ungated(
            name,
            "query iterator",
            timeout,
            lambda client: client.query_iterator(
                name,
                batch_size=4_096,
                filter=filter_expr,
                output_fields=list(fields),
                timeout=timeout,
                **kwargs,
            ),
        )
        with self._call("query iterator"):
            try:
                while True:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        raise Unavailable(
                            "Milvus did not answer within the deadline", reason="MILVUS_UNAVAILABLE"
                        )
                    batch = it.next()
                    if not batch:
                        return
                    for row in batch:
                        yield dict(row)
            finally:
                it.close()

    def upsert(self, name: str, chunks: Sequence[ChunkRecord], timeout: float) -> None:
        info = self._info_cache.get(name) or self.describe_collection(name, timeout)
        rows = [row_from_record(c, info) for c in chunks]
        try:
            with self._gated("write", name, timeout), self._call("upsert") as client:
                client.upsert(name, rows, timeout=timeout)
        finally:
            self._note_write(name)

    def delete_ids(self, name: str, ids: Sequence[str], timeout: float) -> None:
        if not ids:
            return
        try:
            with self._gated("write", name, timeout), self._call("delete") as client:
                # Not `ids=`: pymilvus pastes those into the expression unescaped.
                expr = f"{F_ID} in [{', '.join(string_literal(i) for i in ids)}]"
                client.delete(name, filter=expr, timeout=timeout)
        finally:
            self._note_write(name)

    def flush(self, name: str, timeout: float) -> None:
        with self._gated("exclusive", name, timeout), self._call("flush") as client:
            client.flush(name, timeout=timeout)

    # -- search ---------------------------------------------------------------
    def _search_params(self, info: CollectionInfo, limit: int) -> dict[str, Any]:
        params: dict[str, Any] = {"metric_type": info.spec.metric.value}
        if info.spec.index_type is IndexType.HNSW:
            params["params"] = {"ef": max(self.settings.hnsw_ef, limit)}
        elif info.spec.index_type is IndexType.IVF_FLAT:
            nlist = info.spec.index_params.get(
                "nlist", DEFAULT_INDEX_PARAMS[IndexType.IVF_FLAT]["nlist"]
            )
            params["params"] = {"nprobe": min(self.settings.ivf_nprobe, nlist)}
        return params

    def _hits(self, result: Any, score: Any) -> list[tuple[ScoredId, ChunkRecord]]:
        hits: list[tuple[ScoredId, ChunkRecord]] = []
        for hit in result[0] if result else []:
            entity = dict(hit.get("entity") or {})
            entity.setdefault(F_ID, hit.get("id"))
            hits.append(
                (
                    ScoredId(str(hit.get("id")), score(float(hit["distance"]))),
                    record_from_row(entity),
                )
            )
        return hits

    def search_dense(
        self,
        info: CollectionInfo,
        vector: Sequence[float],
        limit: int,
        filter_expr: str,
        timeout: float,
    ) -> list[tuple[ScoredId, ChunkRecord]]:
        name = info.spec.name
        result = self._read(
            name,
            "dense search",
            timeout,
            lambda client: client.search(
                name,
                data=[list(vector)],
                anns_field=F_DENSE,
                limit=limit,
                filter=filter_expr,
                output_fields=info.output_fields,
                search_params=self._search_params(info, limit),
                timeout=timeout,
                **self._read_kwargs(name),
            ),
        )
        metric = info.spec.metric
        return self._hits(result, lambda d: dense_score(metric, d))

    def search_sparse(
        self, info: CollectionInfo, text: str, limit: int, filter_expr: str, timeout: float
    ) -> list[tuple[ScoredId, ChunkRecord]]:
        name = info.spec.name
        if info.bm25_input == F_BM25_TEXT:  # indexed with split identifiers: query the same way
            text = expand_query(text)
        result = self._read(
            name,
            "BM25 search",
            timeout,
            lambda client: client.search(
                name,
                data=[text],
                anns_field=F_SPARSE,
                limit=limit,
                filter=filter_expr,
                output_fields=info.output_fields,
                search_params={"metric_type": "BM25"},
                timeout=timeout,
                **self._read_kwargs(name),
            ),
        )
        # Milvus Lite hands BM25 scores back negated; Milvus servers positive.
        return self._hits(result, abs)
