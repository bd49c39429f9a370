"""The retrieval service's logic: validation, replace-on-upsert, search modes
and fusion, over a VectorStore. Plain objects in and out; no gRPC here.

Store calls block (pymilvus), so they run in worker threads, each with a
timeout derived from the caller's deadline; when the readiness check has
found Milvus down, calls are given a short timeout so that callers get
UNAVAILABLE quickly instead of waiting for their whole deadline.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

from services.common import api, tracing
from services.common.errors import AlreadyExists, FailedPrecondition, NotFound, Unavailable
from services.retrieval import fusion
from services.retrieval.config import RetrievalSettings
from services.retrieval.faults import Faults
from services.retrieval.filters import compile_filters, string_literal
from services.retrieval.flushing import DeferredFlusher
from services.retrieval.known_documents import KnownDocuments
from services.retrieval.rows import record_from_row
from services.retrieval.schema import (
    F_CHUNK_INDEX,
    F_DOCUMENT_ID,
    F_DOCUMENT_VERSION,
    F_ID,
    FILTER_FIELDS,
    Capabilities,
    ChunkRecord,
    CollectionInfo,
    CollectionSpec,
    DocumentSummary,
    FusionMethod,
    FusionSpec,
    ScoredId,
    SearchHit,
    SearchMode,
    SearchQuery,
    UpsertMode,
)
from services.retrieval.store import MilvusStore
from services.retrieval.validation import (
    check_index_supported,
    check_varchar,
    hybrid_fusion,
    resolve_mode,
    validate_chunks,
    validate_collection_name,
    validate_collection_spec,
    validate_document_id,
    validate_search,
)
from services.retrieval.vector_store import QUERY_LIMIT, VectorStore

log = logging.getLogger("ragmesh.retrieval")
T = TypeVar("T")

DEFAULT_PAGE_SIZE = 100
MAX_PAGE_SIZE = 1_000
# Seconds kept back from the caller's deadline to answer with a status in time.
DEADLINE_RESERVE_S = 0.05
# After a failed scan of a Lite collection's documents, the next one waits this long.
SCAN_RETRY_S = 60.0


@dataclass(frozen=True)
class UpsertResult:
    upserted: int
    deleted: int


class Retriever:
    def __init__(self, settings: RetrievalSettings, store: VectorStore | None = None) -> None:
        self.settings = settings
        self.store: VectorStore = store or MilvusStore(settings)
        self._pool = ThreadPoolExecutor(max_workers=settings.threads, thread_name_prefix="milvus")
        self.milvus_up = False
        self._last_error = ""
        self._connect_lock = asyncio.Lock()
        self.faults = Faults(settings.faults)
        self.flusher = DeferredFlusher(
            self._deferred_flush,
            settings.flush_idle_ms / 1000,
            settings.flush_max_delay_ms / 1000,
        )
        self.known_documents = KnownDocuments()
        self._document_scans: dict[str, asyncio.Task[None]] = {}
        self._scan_not_before: dict[str, float] = {}

    # -- plumbing -------------------------------------------------------------
    def _timeout(self, deadline: float | None) -> float:
        """Seconds a store call may take: what is left of the deadline, capped."""
        cap = self.settings.call_timeout_s if self.milvus_up else self.settings.down_timeout_s
        if deadline is None:
            return cap
        left = deadline - time.monotonic() - DEADLINE_RESERVE_S
        if left <= 0:
            raise Unavailable(
                "no time left in the deadline to reach Milvus", reason="MILVUS_UNAVAILABLE"
            )
        return min(cap, left)

    async def _run(self, deadline: float | None, fn: Callable[..., T], *args: Any) -> T:
        """Run a blocking store call in a worker thread, bounded by the deadline."""
        if self.store.capabilities is None:
            await self.connect(deadline)
        timeout = self._timeout(deadline)
        loop = asyncio.get_running_loop()
        try:
            # asyncio.timeout, unlike wait_for, adds no task per call (search latency).
            async with asyncio.timeout(timeout + 0.02):
                return await loop.run_in_executor(self._pool, lambda: fn(*args, timeout))
        except TimeoutError as exc:
            # Slow is not down: only a failed connection (below) or the readiness
            # check marks Milvus down and shortens the timeouts.
            raise Unavailable(
                f"Milvus did not answer within {timeout:.2f} s", reason="MILVUS_UNAVAILABLE"
            ) from exc
        except Unavailable:
            self.milvus_up = False
            raise
        except NotFound:
            # A collection dropped (or re-created) behind our back: describe afresh next time.
            self.store.forget_all()
            raise

    async def connect(self, deadline: float | None = None) -> Capabilities:
        async with self._connect_lock:
            if self.store.capabilities is not None:
                return self.store.capabilities
            timeout = min(self.settings.connect_timeout_s, self._timeout(deadline))
            loop = asyncio.get_running_loop()
            try:
                caps = await asyncio.wait_for(
                    loop.run_in_executor(self._pool, self.store.connect, timeout), timeout + 1
                )
            except TimeoutError as exc:
                raise Unavailable("cannot connect to Milvus", reason="MILVUS_UNAVAILABLE") from exc
            self.milvus_up = True
            return caps

    async def check(self) -> bool:
        """Readiness: Milvus answers now (connecting first if need be)."""
        try:
            if self.store.capabilities is None:
                await self.connect(time.monotonic() + self.settings.connect_timeout_s)
            timeout = self.settings.connect_timeout_s
            loop = asyncio.get_running_loop()
            await asyncio.wait_for(
                loop.run_in_executor(self._pool, self.store.ping, timeout), timeout + 0.5
            )
        except Exception as exc:
            message = str(exc) or type(exc).__name__
            if self.milvus_up or message != self._last_error:  # log changes, not every poll
                log.warning("Milvus is not reachable at %s: %s", self.settings.milvus_uri, message)
            self._last_error = message
            self.milvus_up = False
            return False
        if not self.milvus_up:
            log.info("Milvus is up at %s", self.settings.milvus_uri)
        self._last_error = ""
        self.milvus_up = True
        return True

    def close(self) -> None:
        self.store.close()
        self._pool.shutdown(wait=False, cancel_futures=True)

    async def capabilities(self, deadline: float | None = None) -> Capabilities:
        if self.store.capabilities is None:
            return await self.connect(deadline)
        return self.store.capabilities

    async def _info(self, name: str, deadline: float | None) -> CollectionInfo:
        validate_collection_name(name)
        info = self.store.cached_info(name)
        if info is not None:
            return info
        return await self._run(deadline, self.store.describe_collection, name)

    # -- collections ----------------------------------------------------------
    async def create_collection(
        self, spec: CollectionSpec, deadline: float | None
    ) -> CollectionInfo:
        validate_collection_spec(spec)
        check_index_supported(spec, await self.capabilities(deadline))
        names = await self._run(deadline, self.store.list_collections)
        if spec.name in names:
            raise AlreadyExists(
                f"knowledge base collection {spec.name!r} already exists",
                reason="COLLECTION_EXISTS",
                metadata={"collection": spec.name},
            )
        return await self._run(deadline, self.store.create_collection, spec)

    async def get_collection(self, name: str, deadline: float | None) -> CollectionInfo:
        validate_collection_name(name)
        info = await self._run(deadline, self.store.describe_collection, name)
        count = await self._run(deadline, self.store.count, name, "")
        return dataclasses.replace(info, chunk_count=count)

    async def list_collections(
        self, page_size: int, page_token: str, deadline: float | None
    ) -> tuple[list[CollectionInfo], str]:
        size = api.page_size(page_size, DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)
        after = api.decode_page_token(page_token, "collections", str)
        names = [
            n
            for n in await self._run(deadline, self.store.list_collections)
            if after is None or n > after
        ]
        found: list[CollectionInfo] = []
        for name in names:
            try:
                found.append(await self.get_collection(name, deadline))
            except (FailedPrecondition, NotFound):
                continue  # not ours, or dropped meanwhile
            if len(found) == size:
                break
        more = bool(found) and len(found) == size and found[-1].spec.name != names[-1]
        token = api.encode_page_token(found[-1].spec.name, "collections") if more else ""
        return found, token

    async def delete_collection(self, name: str, deadline: float | None) -> None:
        validate_collection_name(name)
        self.faults.check("delete_collection")
        # NOT_FOUND for an unknown knowledge base (and never drop a foreign collection).
        await self._run(deadline, self.store.describe_collection, name)
        self.flusher.forget(name)
        await self._run(deadline, self.store.drop_collection, name)
        self.known_documents.forget(name)

    # -- chunks ---------------------------------------------------------------
    async def upsert_chunks(
        self,
        *,
        collection: str,
        document_id: str,
        version: str,
        chunks: list[ChunkRecord],
        mode: UpsertMode,
        deadline: float | None,
    ) -> UpsertResult:
        """Write the chunks, then delete the document's stale ones.

        Writing first means that a failure half-way leaves the document with
        its new chunks (and maybe some stale ones), never with none; the call
        is idempotent, so a retry completes it.
        """
        validate_document_id(document_id)
        info = await self._info(collection, deadline)
        for chunk in chunks:
            chunk.document_id = chunk.document_id or document_id
            chunk.document_version = version
        validate_chunks(info, document_id, version, chunks, self.settings)
        self.faults.check("upsert_chunks")
        doc = f"{F_DOCUMENT_ID} == {string_literal(document_id)}"
        stale = f"{F_DOCUMENT_VERSION} != {string_literal(version)}"
        if mode is UpsertMode.REPLACE:
            indexes = ", ".join(str(c.chunk_index) for c in chunks)
            stale = f"({stale} or not ({F_CHUNK_INDEX} in [{indexes}]))"
        may_have_chunks = self._claim_document(collection, document_id)
        with tracing.span("milvus.upsert", {"db.system": "milvus", "ragmesh.chunks": len(chunks)}):
            await self._run(deadline, self.store.upsert, collection, chunks)
        deleted = 0
        while may_have_chunks:  # a query returns at most QUERY_LIMIT rows
            rows = await self._run(
                deadline, self.store.query, collection, f"{doc} and {stale}", [F_ID], QUERY_LIMIT
            )
            ids = [str(r[F_ID]) for r in rows]
            await self._run(deadline, self.store.delete_ids, collection, ids)
            deleted += len(ids)
            if len(ids) < QUERY_LIMIT:
                break
        choice = self.settings.flush_after_upsert
        if choice == "always":
            with tracing.span("milvus.flush", {"db.system": "milvus"}):
                await self._run(deadline, self.store.flush, collection)
        elif choice in ("auto", "deferred") and self.store.is_lite():
            self.flusher.wrote(collection)
        return UpsertResult(upserted=len(chunks), deleted=deleted)

    def _claim_document(self, collection: str, document_id: str) -> bool:
        """Whether the document may have chunks already (so stale ones to delete): on
        Milvus Lite known from the collection's documents (services.retrieval.
        known_documents), scanned once in the background; elsewhere always."""
        if not self.store.is_lite():
            return True
        if (
            not self.known_documents.loaded(collection)
            and collection not in self._document_scans
            and time.monotonic() >= self._scan_not_before.get(collection, 0.0)
        ):
            task = asyncio.create_task(self._scan_documents(collection))
            self._document_scans[collection] = task
            task.add_done_callback(lambda _: self._document_scans.pop(collection, None))
        return self.known_documents.claim(collection, document_id)

    async def _scan_documents(self, collection: str) -> None:
        def scan(timeout: float) -> set[str]:
            rows = self.store.iter_query(collection, "", [F_DOCUMENT_ID], timeout)
            return {str(row[F_DOCUMENT_ID]) for row in rows}

        try:
            self.known_documents.merge_scan(collection, await self._run(None, scan))
        except Exception as exc:
            # Writes query as before until a later write's scan succeeds; not at once (a
            # collection too large to scan within the call timeout would be scanned by
            # every write).
            self._scan_not_before[collection] = time.monotonic() + SCAN_RETRY_S
            log.info("documents of %s not scanned (%s)", collection, exc)

    async def _deferred_flush(self, collection: str) -> None:
        with tracing.span("milvus.flush", {"db.system": "milvus", "ragmesh.deferred": True}):
            await self._run(None, self.store.flush, collection)

    async def delete_document_chunks(
        self, collection: str, document_id: str, deadline: float | None
    ) -> int:
        validate_document_id(document_id)
        await self._info(collection, deadline)
        self.faults.check("delete_document_chunks")
        doc = f"{F_DOCUMENT_ID} == {string_literal(document_id)}"
        deleted = 0
        while True:
            rows = await self._run(deadline, self.store.query, collection, doc, [F_ID], QUERY_LIMIT)
            ids = [str(r[F_ID]) for r in rows]
            await self._run(deadline, self.store.delete_ids, collection, ids)
            deleted += len(ids)
            if len(ids) < QUERY_LIMIT:
                return deleted

    async def list_documents(
        self, collection: str, page_size: int, page_token: str, deadline: float | None
    ) -> tuple[list[DocumentSummary], str, int]:
        size = api.page_size(page_size, DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)
        scope = f"documents|{collection}"
        after = api.decode_page_token(page_token, scope, str)
        await self._info(collection, deadline)

        def scan(timeout: float) -> dict[str, tuple[int, str]]:
            docs: dict[str, tuple[int, str]] = {}
            for row in self.store.iter_query(
                collection, "", [F_DOCUMENT_ID, F_DOCUMENT_VERSION], timeout
            ):
                doc_id = str(row[F_DOCUMENT_ID])
                count, _ = docs.get(doc_id, (0, ""))
                docs[doc_id] = (count + 1, str(row.get(F_DOCUMENT_VERSION) or ""))
            return docs

        docs = await self._run(deadline, scan)
        names = sorted(d for d in docs if after is None or d > after)
        page = names[:size]
        summaries = [DocumentSummary(d, docs[d][0], docs[d][1]) for d in page]
        token = api.encode_page_token(page[-1], scope) if len(names) > size else ""
        return summaries, token, len(docs)

    async def list_chunks(
        self,
        *,
        collection: str,
        document_id: str,
        version: str,
        page_size: int,
        page_token: str,
        omit_text: bool,
        deadline: float | None,
    ) -> tuple[list[ChunkRecord], str]:
        """Chunks of a document by chunk index: the indexes first (cheap), then
        the full rows of one page."""
        validate_document_id(document_id)
        size = api.page_size(page_size, DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)
        scope = f"chunks|{collection}|{document_id}|{version}"
        after = api.decode_page_token(page_token, scope, int)
        info = await self._info(collection, deadline)
        expr = f"{F_DOCUMENT_ID} == {string_literal(document_id)}"
        if version:
            check_varchar(F_DOCUMENT_VERSION, version)
            expr += f" and {F_DOCUMENT_VERSION} == {string_literal(version)}"
        if after is not None:
            expr += f" and {F_CHUNK_INDEX} > {int(after)}"
        rows = await self._run(
            deadline, self.store.query, collection, expr, [F_CHUNK_INDEX], QUERY_LIMIT
        )
        if len(rows) == QUERY_LIMIT:  # more than one query returns: scan them all

            def scan(timeout: float) -> list[dict[str, Any]]:
                return list(self.store.iter_query(collection, expr, [F_CHUNK_INDEX], timeout))

            rows = await self._run(deadline, scan)
        indexes = sorted(int(r[F_CHUNK_INDEX]) for r in rows)
        page = indexes[:size]
        if not page:
            return [], ""
        fields = [f for f in info.output_fields if not (omit_text and f == "text")]
        page_expr = f"{expr} and {F_CHUNK_INDEX} in [{', '.join(map(str, page))}]"
        full = await self._run(deadline, self.store.query, collection, page_expr, fields, len(page))
        chunks = sorted((record_from_row(r) for r in full), key=lambda c: c.chunk_index)
        token = api.encode_page_token(page[-1], scope) if len(indexes) > size else ""
        return chunks, token

    # -- search ---------------------------------------------------------------
    async def search(
        self, query: SearchQuery, deadline: float | None
    ) -> tuple[list[SearchHit], SearchMode]:
        info = await self._info(query.collection, deadline)
        top_k = validate_search(query, info, self.settings)
        expr = compile_filters(query.filters, self.settings.max_filter_values)
        if query.exclude_document_ids:
            excluded = ", ".join(string_literal(d) for d in sorted(set(query.exclude_document_ids)))
            gone = f"not ({F_DOCUMENT_ID} in [{excluded}])"
            expr = f"({expr}) and {gone}" if expr else gone
        mode = resolve_mode(query, info, self.store.capabilities)
        fusion_spec = (
            hybrid_fusion(query.fusion, self.settings) if mode is SearchMode.HYBRID else None
        )

        tracing.annotate({"ragmesh.search_mode": mode.name, "ragmesh.top_k": top_k})
        if mode is SearchMode.DENSE:
            with tracing.span("milvus.search", {"db.system": "milvus", "ragmesh.mode": "dense"}):
                dense = await self._run(
                    deadline, self.store.search_dense, info, query.vector, top_k, expr
                )
            hits = [
                SearchHit(chunk, s.score, dense_rank=i)
                for i, (s, chunk) in enumerate(dense, start=1)
            ]
        elif mode is SearchMode.SPARSE:
            with tracing.span("milvus.search", {"db.system": "milvus", "ragmesh.mode": "sparse"}):
                sparse = await self._run(
                    deadline, self.store.search_sparse, info, query.text, top_k, expr
                )
            hits = [
                SearchHit(chunk, s.score, sparse_rank=i)
                for i, (s, chunk) in enumerate(sparse, start=1)
            ]
        else:
            assert fusion_spec is not None
            depth = max(top_k, self.settings.hybrid_candidates)
            with tracing.span("milvus.search", {"db.system": "milvus", "ragmesh.mode": "hybrid"}):
                dense, sparse = await asyncio.gather(
                    self._run(deadline, self.store.search_dense, info, query.vector, depth, expr),
                    self._run(deadline, self.store.search_sparse, info, query.text, depth, expr),
                )
            hits = self._fuse(dense, sparse, fusion_spec, info, depth)[:top_k]
        if query.min_score is not None:
            hits = [h for h in hits if h.score >= query.min_score]
        return hits[:top_k], mode

    @staticmethod
    def _fuse(
        dense: list[tuple[ScoredId, ChunkRecord]],
        sparse: list[tuple[ScoredId, ChunkRecord]],
        spec: FusionSpec,
        info: CollectionInfo,
        depth: int,
    ) -> list[SearchHit]:
        chunks = {s.id: c for s, c in (*dense, *sparse)}
        lists = [[s for s, _ in dense], [s for s, _ in sparse]]
        weights = [spec.dense_weight, spec.sparse_weight]
        if spec.method is FusionMethod.RRF:
            fused = fusion.rrf(lists, k=spec.rrf_k, weights=weights)
        else:
            fused = fusion.weighted(
                [
                    fusion.RankedList(lists[0], fusion.dense_lower_bound(info.spec.metric), depth),
                    fusion.RankedList(lists[1], fusion.BM25_LOWER_BOUND, depth),
                ],
                weights=weights,
            )
        return [
            SearchHit(chunks[f.id], f.score, dense_rank=f.ranks[0], sparse_rank=f.ranks[1])
            for f in fused
        ]

    @staticmethod
    def filter_fields() -> list[str]:
        return [*FILTER_FIELDS, "metadata.<key>"]
