"""Generation: time to first token and decoding speed through the generation service vs
calling the same llama.cpp server directly with `openai`, same run, same prompt.

Targets: the service adds ≤ 10 ms to the time to first token and keeps ≥ 0.95× the
tokens per second. Both paths answer the same questions, compared question by question;
no prompt directly follows itself, so the server's prompt cache helps both paths alike
(the instruction and passages are cached, the question is not). Service and direct calls
alternate, first one then the other, to spread drift in the machine's load evenly.

Scale with RAGMESH_BENCH_GENERATION_ROUNDS (default 12) and
RAGMESH_BENCH_GENERATION_MAX_TOKENS (default 64).
"""

from __future__ import annotations

import asyncio
import os
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import openai

from devstack.deps import start_llm
from devstack.procs import start_service
from ragmesh.generation.v1 import generation_pb2, generation_pb2_grpc
from services.common.channels import create_channel
from services.generation.config import DEFAULT_PROMPT_TEMPLATE
from services.generation.prompt import PromptTemplate
from services.generation.types import Passage

PASSAGES = [
    Passage(
        "milvus:0",
        "Milvus is an open-source vector database built for similarity search "
        "over embeddings. It supports dense and sparse vectors, hybrid search with "
        "reciprocal-rank fusion, and several index types such as HNSW and IVF_FLAT.",
        0.82,
        title="Milvus",
    ),
    Passage(
        "bm25:0",
        "BM25 ranks documents by term frequency and inverse document frequency, "
        "with a saturation parameter k1 and a length normalisation parameter b. Milvus "
        "2.5 computes BM25 sparse vectors with a built-in function.",
        0.74,
        title="BM25",
    ),
    Passage(
        "hnsw:0",
        "HNSW builds a layered proximity graph; a search descends from sparse "
        "upper layers to the dense bottom layer. Its parameters M and efConstruction "
        "trade memory and build time for recall.",
        0.61,
        title="HNSW",
    ),
]
QUESTION = "Which search methods does Milvus support, and how does BM25 rank documents"


@dataclass
class Sample:
    ttft_ms: float
    tokens: int
    decode_s: float  # first token to last token
    #: the service's own figure: request received to first delta sent
    inside_ttft_ms: float = 0.0

    @property
    def tokens_per_s(self) -> float:
        return (self.tokens - 1) / self.decode_s if self.decode_s > 0 else 0.0


async def _via_service(
    stub: generation_pb2_grpc.GenerationServiceStub, question: str, max_tokens: int
) -> Sample:
    request = generation_pb2.GenerateAnswerRequest(
        question=question,
        max_tokens=max_tokens,
        temperature=0.0,
        passages=[
            generation_pb2.Passage(id=p.id, text=p.text, score=p.score, title=p.title)
            for p in PASSAGES
        ],
    )
    start = time.perf_counter()
    first = last = inside = 0.0
    tokens = 0
    async for response in stub.GenerateAnswer(request, timeout=300):
        now = time.perf_counter()
        if response.HasField("delta"):
            first = first or now
            last = now
        else:
            tokens = response.final.usage.completion_tokens
            inside = response.final.timings.first_token_ms
    return Sample((first - start) * 1000, tokens, last - first, inside)


async def _direct(
    client: openai.AsyncOpenAI, template: PromptTemplate, question: str, max_tokens: int
) -> Sample:
    messages = [{"role": m.role, "content": m.content} for m in template.build(question, PASSAGES)]
    start = time.perf_counter()
    first = last = 0.0
    tokens = 0
    stream = await client.chat.completions.create(
        model="smollm2-135m-instruct",
        messages=messages,  # type: ignore[arg-type]
        max_tokens=max_tokens,
        temperature=0.0,
        stream=True,
    )
    async for chunk in stream:  # type: ignore[union-attr]
        if chunk.choices and chunk.choices[0].delta.content:
            now = time.perf_counter()
            first = first or now
            last = now
            tokens += 1
    return Sample((first - start) * 1000, tokens, last - first)


async def _measure(
    addr: str, llm_url: str, rounds: int, max_tokens: int
) -> tuple[list[Sample], list[Sample]]:
    template = PromptTemplate.load(DEFAULT_PROMPT_TEMPLATE)
    channel = create_channel(addr)
    stub = generation_pb2_grpc.GenerationServiceStub(channel)
    client = openai.AsyncOpenAI(base_url=llm_url, api_key="bench", max_retries=0)
    service: dict[int, Sample] = {}
    direct: dict[int, Sample] = {}

    def question(i: int) -> str:
        return f"{QUESTION} (variant {i})?"

    try:
        # warm-up: loads the model pages and caches the shared prompt prefix
        await _via_service(stub, f"{QUESTION} (warm-up s)?", max_tokens)
        await _direct(client, template, f"{QUESTION} (warm-up d)?", max_tokens)
        # Both paths answer the same questions (answers differ between questions), the
        # direct path one round later so that no prompt directly follows itself (the
        # server would then have all of it cached); who goes first alternates.
        for i in range(rounds + 1):
            calls = []
            if i < rounds:
                calls.append(("s", i))
            if i > 0:
                calls.append(("d", i - 1))
            if i % 2:
                calls.reverse()
            for path, q in calls:
                if path == "s":
                    service[q] = await _via_service(stub, question(q), max_tokens)
                else:
                    direct[q] = await _direct(client, template, question(q), max_tokens)
    finally:
        await client.close()
        await channel.close()
    order = sorted(service)
    return [service[i] for i in order], [direct[i] for i in order]


def run() -> str:
    rounds = int(os.environ.get("RAGMESH_BENCH_GENERATION_ROUNDS", "12"))
    max_tokens = int(os.environ.get("RAGMESH_BENCH_GENERATION_MAX_TOKENS", "64"))
    with tempfile.TemporaryDirectory(prefix="ragmesh-bench-gen-") as tmp:
        log_dir = Path(tmp)
        llm, llm_url = start_llm(log_dir=log_dir)
        try:
            proc, addr = start_service(
                "generation",
                log_dir=log_dir,
                env={
                    "RAGMESH_GENERATION_LLM_BASE_URL": llm_url,
                    "RAGMESH_LOG_LEVEL": "WARNING",
                },
            )
            try:
                service, direct = asyncio.run(_measure(addr, llm_url, rounds, max_tokens))
            finally:
                proc.stop()
        finally:
            llm.stop()

    def med(values: list[float]) -> float:
        return statistics.median(values)

    ttft_s, ttft_d = med([s.ttft_ms for s in service]), med([s.ttft_ms for s in direct])
    paired = med([s.ttft_ms - d.ttft_ms for s, d in zip(service, direct, strict=True)])
    tps_s, tps_d = med([s.tokens_per_s for s in service]), med([s.tokens_per_s for s in direct])
    tokens_s, tokens_d = med([s.tokens for s in service]), med([s.tokens for s in direct])
    inside = med([s.inside_ttft_ms for s in service])
    added_ok = "✅" if paired <= 10 else "❌"
    ratio = tps_s / tps_d if tps_d else 0.0
    ratio_ok = "✅" if ratio >= 0.95 else "❌"
    rows = [
        "| | through the generation service | direct `openai` call | |",
        "|---|---|---|---|",
        f"| time to first token, median | {ttft_s:.1f} ms | {ttft_d:.1f} ms | added (median "
        f"of pairs): **{paired:+.1f} ms** {added_ok} (target ≤ 10 ms) |",
        f"| decoding, median | {tps_s:.1f} tokens/s | {tps_d:.1f} tokens/s | ratio "
        f"**{ratio:.3f}×** {ratio_ok} (target ≥ 0.95×) |",
        f"| answer tokens, median | {tokens_s:.0f} | {tokens_d:.0f} | |",
        f"| time to first token inside the service, median | {inside:.1f} ms | | "
        "request received → first delta sent; the rest of the added time is the gRPC hop |",
    ]
    return (
        "## Generation\n\n"
        "SmolLM2-135M-Instruct (Q4_1) on `python -m llama_cpp.server` (2 threads), "
        f"temperature 0, max_tokens {max_tokens}, {len(PASSAGES)} passages; {rounds} "
        "questions asked through both paths, alternating, compared question by question "
        "(the instruction and passages stay in the server's prompt cache for both paths; "
        "no prompt follows itself). The service path adds the gRPC hop, validation, "
        "packing (this prompt fits the window by its byte bound, so it is not sent to the "
        "tokenizer) and citation checking of every token.\n\n" + "\n".join(rows) + "\n"
    )


if __name__ == "__main__":
    print(run())
