"""Starters for the third-party servers ragmesh runs next to on one machine:
Redis, the llama.cpp OpenAI-compatible server and the Milvus 2.3 standalone
server. Shared by `make run`, the integration tests and the benchmarks."""

from __future__ import annotations

import os
import shutil
import signal
import sys
import urllib.request
from pathlib import Path

from devstack.procs import ManagedProcess, free_port, port_open
from services.common.models import smollm2_gguf_path


def redis_process(port: int, data_dir: Path, log_dir: Path | None = None) -> ManagedProcess:
    """redis-server with AOF persistence (fsync every second) under data_dir."""
    exe = shutil.which("redis-server")
    if exe is None:
        raise FileNotFoundError("redis-server is not on the PATH (apt-get install redis-server)")
    data_dir.mkdir(parents=True, exist_ok=True)
    argv = [
        exe,
        "--bind",
        "127.0.0.1",
        "--port",
        str(port),
        "--dir",
        str(data_dir),
        "--appendonly",
        "yes",
        "--appendfsync",
        "everysec",
        "--save",
        "",
        "--protected-mode",
        "yes",
        "--daemonize",
        "no",
    ]
    return ManagedProcess("redis", argv, log_dir=log_dir)


def start_redis(
    data_dir: Path, port: int | None = None, log_dir: Path | None = None, timeout: float = 20
) -> tuple[ManagedProcess, str]:
    port = port or free_port()
    proc = redis_process(port, data_dir, log_dir).start()
    proc.wait_until(lambda: port_open("127.0.0.1", port), timeout, "Redis port")
    return proc, f"redis://127.0.0.1:{port}/0"


#: Niceness of the local LLM server. Its threads keep every core busy while it
#: decodes; at the default priority each hop of a cheap RPC (an admission refusal
#: crosses client, gateway, Redis and the generation service) then waits for a
#: core behind them, ~60-130 ms per refusal at 12-32 clients on 2 cores. Niced,
#: the LLM still gets every idle cycle but the services preempt it when they wake.
LLM_NICENESS = 10


def llm_process(
    port: int,
    *,
    threads: int = 2,
    ctx: int = 2048,
    log_dir: Path | None = None,
    model: Path | None = None,
    niceness: int = LLM_NICENESS,
) -> ManagedProcess:
    """python -m llama_cpp.server with SmolLM2-135M-Instruct (OpenAI-compatible)."""
    model = model or smollm2_gguf_path()
    nice = shutil.which("nice")
    argv = ([nice, "-n", str(niceness)] if nice and niceness else []) + [
        sys.executable,
        "-m",
        "llama_cpp.server",
        "--model",
        str(model),
        "--model_alias",
        "smollm2-135m-instruct",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--n_ctx",
        str(ctx),
        "--n_threads",
        str(threads),
        "--n_threads_batch",
        str(threads),
        # By default llama-cpp-python cuts the running stream short (a bare [DONE], no
        # finish_reason) whenever another request arrives, even GET /v1/models; queue
        # requests instead.
        "--interrupt_requests",
        "False",
    ]
    return ManagedProcess("llm", argv, log_dir=log_dir)


def http_ok(url: str) -> bool:
    """Whether a GET of a loopback URL answers 200."""
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            return bool(resp.status == 200)
    except OSError:
        return False


def start_llm(
    port: int | None = None, log_dir: Path | None = None, timeout: float = 120
) -> tuple[ManagedProcess, str]:
    """Returns the process and the OpenAI base URL (…/v1)."""
    port = port or free_port()
    proc = llm_process(port, log_dir=log_dir).start()
    base = f"http://127.0.0.1:{port}/v1"
    proc.wait_until(lambda: http_ok(f"{base}/models"), timeout, "LLM /v1/models")
    return proc, base


#: Milvus settings every server the project starts gets. Growing segments (data not yet
#: sealed, or sealed but its HNSW index not yet loaded) are otherwise searched through an
#: interim IVF index (nlist 128, nprobe 16) that finds ~0.72 of the true top 10 on
#: embedding-like vectors; without it they are searched exactly (docs/retrieval.md).
MILVUS_SERVER_CONFIG = ("--extra-config", "queryNode.segcore.interimIndex.enableIndex=false")


def milvus_server_process(data_dir: Path, port: int, log_dir: Path | None = None) -> ManagedProcess:
    """The Milvus 2.3 standalone server of the PyPI package `milvus`.

    It is stopped with SIGINT: SIGTERM to the wrapper orphans its child.
    """
    exe = shutil.which("milvus-server") or str(Path(sys.executable).parent / "milvus-server")
    if not os.path.exists(exe):
        raise FileNotFoundError("milvus-server not found (pip install milvus)")
    data_dir.mkdir(parents=True, exist_ok=True)
    argv = [exe, "--data", str(data_dir), "--proxy-port", str(port), *MILVUS_SERVER_CONFIG]
    return ManagedProcess("milvus", argv, log_dir=log_dir, stop_signal=signal.SIGINT)


def start_milvus_server(
    data_dir: Path, port: int | None = None, log_dir: Path | None = None, timeout: float = 180
) -> tuple[ManagedProcess, str]:
    port = port or free_port()
    proc = milvus_server_process(data_dir, port, log_dir).start()
    proc.wait_until(lambda: port_open("127.0.0.1", port), timeout, "Milvus proxy port")
    return proc, f"http://127.0.0.1:{port}"
