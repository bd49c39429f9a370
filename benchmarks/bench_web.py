"""The HTTP path's cost: what `ragmesh serve web` adds over calling the gateway's gRPC
API directly, in one run on one stack.

- Search: the REST search (`POST /api/v1/knowledge-bases/{kb}/search`, httpx with
  keep-alive) against the SDK's `search` (gRPC), calls interleaved one by one so
  that both see the same load; p50 and p95 of each, and the p50 of the paired
  differences. Target: ≤ 5 ms added at p50.
- Ask, time to first token: a streamed chat completion (openai client) until its
  first content chunk, against the SDK's Ask stream until its first delta, the
  same question each time (the LLM's prompt cache is warm after the first), again
  interleaved. Target: ≤ 10 ms added at p50.

Scale with RAGMESH_BENCH_WEB_SEARCHES (default 200) and _ASKS (default 12).
"""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import openai

from benchmarks.bench_pipeline import KEY, Stack
from benchmarks.chunking_data import english_text
from devstack.deps import http_ok
from devstack.procs import ManagedProcess, free_port
from ragmesh.client import RagmeshClient
from ragmesh.eval_metrics import percentile

KB = "webbench"
QUESTIONS = [
    "What does the text say about the river?",
    "How is the harbour described?",
    "What happened in the market?",
]


def _env_int(name: str, default: int) -> int:
    return int(os.environ.get(f"RAGMESH_BENCH_WEB_{name}", default))


def _start_web(stack: Stack) -> tuple[ManagedProcess, str]:
    port = free_port()
    proc = ManagedProcess(
        "bench-web",
        [sys.executable, "-m", "ragmesh.cli", "serve", "web", "--port", str(port)],
        env={"RAGMESH_GATEWAY_ADDR": stack.gateway_addr, "RAGMESH_LOG_LEVEL": "WARNING"},
        log_dir=stack.tmp / "logs",
    ).start()
    url = f"http://127.0.0.1:{port}"
    proc.wait_until(lambda: http_ok(f"{url}/readyz"), 60, "ready web service")
    return proc, url


def _timed(call: Callable[[], object]) -> float:
    start = time.perf_counter()
    call()
    return (time.perf_counter() - start) * 1000


def _first_delta_grpc(rag: RagmeshClient, question: str) -> float:
    start = time.perf_counter()
    first = None
    for event in rag.ask(KB, question, top_k=2, max_tokens=8, temperature=0):
        if first is None and event.WhichOneof("event") == "delta":
            first = (time.perf_counter() - start) * 1000
    assert first is not None
    return first


def _first_delta_http(client: openai.OpenAI, question: str) -> float:
    start = time.perf_counter()
    first = None
    stream = client.chat.completions.create(
        model=f"ragmesh/{KB}",
        messages=[{"role": "user", "content": question}],
        max_tokens=8,
        temperature=0,
        stream=True,
        extra_body={"ragmesh": {"top_k": 2}},
    )
    for chunk in stream:
        if first is None and chunk.choices and chunk.choices[0].delta.content:
            first = (time.perf_counter() - start) * 1000
    assert first is not None
    return first


def _row(name: str, grpc_ms: list[float], http_ms: list[float], target: float) -> str:
    diffs = [h - g for g, h in zip(grpc_ms, http_ms, strict=True)]
    added = statistics.median(diffs)
    added_p50 = percentile(http_ms, 50) - percentile(grpc_ms, 50)
    verdict = "met" if added_p50 <= target else "missed"
    return (
        f"| {name} | {len(grpc_ms)} | {percentile(grpc_ms, 50):.1f} / "
        f"{percentile(grpc_ms, 95):.1f} | {percentile(http_ms, 50):.1f} / "
        f"{percentile(http_ms, 95):.1f} | **{added_p50:+.1f}** | {added:+.1f} | "
        f"≤ {target:.0f} ms: {verdict} |"
    )


def run() -> str:
    searches, asks = _env_int("SEARCHES", 200), _env_int("ASKS", 12)
    with tempfile.TemporaryDirectory(prefix="ragmesh-bench-web-") as tmp:
        stack = Stack(Path(tmp))
        web = None
        try:
            workers = stack.start_workers(1)
            stack.procs.extend(workers)
            web, url = _start_web(stack)
            with RagmeshClient(stack.gateway_addr, KEY) as rag:
                rag.create_knowledge_base(KB)
                for i in range(6):
                    upload = rag.upload_document(
                        KB, english_text(seed=i, paragraphs=4).encode(), file_name=f"doc{i}.txt"
                    )
                    rag.wait_for_job(upload.job.job_id, check=True)
                http = httpx.Client(
                    base_url=url, headers={"Authorization": f"Bearer {KEY}"}, timeout=60
                )
                search_url = f"/api/v1/knowledge-bases/{KB}/search"
                grpc_s, http_s = [], []
                for i in range(searches + 10):
                    query = QUESTIONS[i % len(QUESTIONS)]
                    g = _timed(lambda q=query: rag.search(KB, q, top_k=5))
                    h = _timed(
                        lambda q=query: http.post(
                            search_url, json={"query": q, "top_k": 5}
                        ).raise_for_status()
                    )
                    if i >= 10:  # the first calls warm connections and caches
                        grpc_s.append(g)
                        http_s.append(h)
                client = openai.OpenAI(base_url=f"{url}/v1", api_key=KEY, max_retries=0)
                grpc_a, http_a = [], []
                question = QUESTIONS[0]
                _first_delta_grpc(rag, question)  # the LLM's prompt cache
                for _ in range(asks):
                    grpc_a.append(_first_delta_grpc(rag, question))
                    http_a.append(_first_delta_http(client, question))
                http.close()
        finally:
            if web is not None:
                web.stop()
            stack.close()
    return "\n".join(
        [
            "## Web service: HTTP over gRPC",
            "",
            "What `ragmesh serve web` adds to a call (benchmarks/bench_web.py): the same",
            "requests through the REST / OpenAI-compatible API and through the gateway's gRPC",
            "API, interleaved one by one on one stack, from one client at a time.",
            "",
            "| call | n | gRPC p50 / p95 (ms) | HTTP p50 / p95 (ms) | added at p50 (ms) | "
            "median paired difference (ms) | target |",
            "|---|---|---|---|---|---|---|",
            _row("Search (REST vs SDK)", grpc_s, http_s, 5),
            _row(
                "Ask, time to first token (chat completion SSE vs Ask stream)", grpc_a, http_a, 10
            ),
        ]
    )


if __name__ == "__main__":
    print(run())
