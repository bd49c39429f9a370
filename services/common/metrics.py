"""Prometheus metrics: requests, errors and latency per gRPC method; the
findings of the gateway's periodic consistency check; the reaper's re-sends; the
LLM admission queue."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram, start_http_server

REQUESTS = Counter(
    "ragmesh_grpc_requests_total", "gRPC calls handled", ["service", "method", "code"]
)
ERRORS = Counter(
    "ragmesh_grpc_errors_total",
    "gRPC calls that ended with a non-OK status",
    ["service", "method", "code"],
)
LATENCY = Histogram(
    "ragmesh_grpc_latency_seconds",
    "gRPC call latency (for streams: until the last message)",
    ["service", "method"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)


def observe(service: str, method: str, code: str, seconds: float) -> None:
    REQUESTS.labels(service, method, code).inc()
    if code != "OK":
        ERRORS.labels(service, method, code).inc()
    LATENCY.labels(service, method).observe(seconds)


CONSISTENCY = Gauge(
    "ragmesh_consistency_findings",
    "Differences between the records and the index found by the last periodic kb check",
    ["kind"],
)
CONSISTENCY_KINDS = (
    "COLLECTION_MISSING",
    "CHUNK_COUNT",
    "VERSION",
    "ORPHAN_CHUNKS",
    "ORPHAN_COLLECTION",
)


def set_consistency_findings(counts: dict[str, int]) -> None:
    for kind in CONSISTENCY_KINDS:
        CONSISTENCY.labels(kind).set(counts.get(kind, 0))


LLM_QUEUE_DEPTH = Gauge(
    "ragmesh_llm_queue_depth",
    "Answers waiting for an LLM slot, CheckAdmission reservations included (generation service)",
)
LLM_SLOTS_BUSY = Gauge("ragmesh_llm_slots_busy", "LLM calls running (generation service)")
LLM_QUEUE_WAIT = Histogram(
    "ragmesh_llm_queue_wait_seconds",
    "Time answers waited for an LLM slot (those that waited)",
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60, 120),
)
ASK_SEARCH_QUERIES = Counter(
    "ragmesh_ask_search_queries_total",
    "Ask calls with history by what wrote their search query (llm_rewrite or fallback) "
    "and, for a fallback, why (UNAVAILABLE, TIMEOUT, QUEUE_FULL, REJECTED, ERROR)",
    ["source", "fallback"],
)
LLM_QUEUE_REFUSED = Counter(
    "ragmesh_llm_queue_refused_total",
    "Answers refused by the LLM admission queue (full, tenant share, deadline)",
    ["reason"],
)


MILVUS_LITE_GATE_WAIT = Histogram(
    "ragmesh_milvus_lite_gate_wait_seconds",
    "Time a Milvus Lite call waited for its turn in the retrieval service: read, write, or "
    "flush (collection drops count as flushes: both run alone on their collection, "
    "services/retrieval/lite_gate.py)",
    ["kind"],
    buckets=(0.0001, 0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)


REAPER_RESENT = Counter(
    "ragmesh_reaper_resent_total",
    "Ingestion tasks the gateway's reaper sent again: its worker vanished (worker_lost) or "
    "its message was not in the broker any more (message_lost)",
    ["why"],
)
QUEUED_WAITING = Gauge(
    "ragmesh_ingestion_jobs_waiting_checked",
    "QUEUED jobs idle past RAGMESH_GATEWAY_QUEUED_REQUEUE_AFTER_S that the reaper's last "
    "broker check found waiting (their message is in the queue)",
)
BROKER_SCAN = Histogram(
    "ragmesh_reaper_broker_scan_seconds",
    "One scan of the ingestion queue and the unacknowledged messages by the reaper",
    buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)


def record_reaper_pass(
    *, worker_lost: int, message_lost: int, waiting: int, scan_seconds: float | None
) -> None:
    REAPER_RESENT.labels("worker_lost").inc(worker_lost)
    REAPER_RESENT.labels("message_lost").inc(message_lost)
    if scan_seconds is not None:
        QUEUED_WAITING.set(waiting)
        BROKER_SCAN.observe(scan_seconds)


def start_metrics_server(host: str, port: int) -> None:
    start_http_server(port, addr=host)
