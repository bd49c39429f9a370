"""One running stack for every web test: the five services and a worker (as the
end-to-end suite builds them, with the llama.cpp server), `ragmesh serve web` in
front of the gateway, and a knowledge base with one indexed document.

Package-scoped so that the OpenAI, REST, MCP and chat tests share it (one start).
The gateway trusts two `x-forwarded-for` hops (the web service appends the
caller's address), so that a test can lock out a source of its own by naming it
in `X-Forwarded-For` without locking out the others."""

from __future__ import annotations

import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import pytest

from devstack.deps import http_ok
from devstack.procs import ManagedProcess, free_port, start_service
from ragmesh.gateway.v1 import gateway_pb2 as pb
from tests.e2e.conftest import ALPHA_KEY, BETA_KEY, Stack, build_stack

KB = "webkb"
MAX_WEB_UPLOAD = 200_000
DOC_NAME = "reactors.md"
DOC = """# The Zorblat reactor

The Zorblat reactor was invented by Mira Okonkwo in 1987 in Lagos. It turns
seawater into electricity with a ceramic membrane and needs no fuel rods.

## Maintenance

The ceramic membrane of a Zorblat reactor is replaced every eleven months.
Replacing it takes a crew of four about six hours.
"""


@dataclass
class WebStack:
    stack: Stack
    url: str  # http://127.0.0.1:PORT
    gateway: str
    log_dir: Path

    @property
    def alpha(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {ALPHA_KEY}"}

    @property
    def beta(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {BETA_KEY}"}


def start_web(
    gateway: str, log_dir: Path, env: Mapping[str, str] | None = None
) -> tuple[ManagedProcess, str]:
    port = free_port()
    proc = ManagedProcess(
        "web",
        [sys.executable, "-m", "ragmesh.cli", "serve", "web", "--port", str(port)],
        env={"RAGMESH_GATEWAY_ADDR": gateway, **(env or {})},
        log_dir=log_dir,
    ).start()
    url = f"http://127.0.0.1:{port}"
    proc.wait_until(lambda: http_ok(f"{url}/readyz"), 60, "ready web service")
    return proc, url


@pytest.fixture(scope="package")
def web(
    redis_url: str,
    llm_base_url: str,
    tmp_path_factory: pytest.TempPathFactory,
    log_dir: Path,
) -> Iterator[WebStack]:
    started: list[ManagedProcess] = []

    def start(
        name: str, env: Mapping[str, str] | None = None, timeout: float = 180.0
    ) -> tuple[ManagedProcess, str]:
        proc, addr = start_service(name, env=env, log_dir=log_dir, timeout=timeout)
        started.append(proc)
        return proc, addr

    stack = None
    try:
        stack = build_stack(
            start,
            redis_url,
            tmp_path_factory.mktemp("milvus-web"),
            log_dir,
            llm_base_url=llm_base_url,
            gateway_env={
                "RAGMESH_GATEWAY_TRUSTED_PROXY_HOPS": "2",
                "RAGMESH_GATEWAY_AUTH_FAILURE_LIMIT": "3",
            },
            # The LLM shares two cores with everything else: give its answers time.
            generation_env={"RAGMESH_GENERATION_LLM_TIMEOUT_S": "240"},
        )
        proc, url = start_web(
            stack.gateway, log_dir, {"RAGMESH_WEB_MAX_UPLOAD_BYTES": str(MAX_WEB_UPLOAD)}
        )
        started.append(proc)
        stack.call("CreateKnowledgeBase", pb.CreateKnowledgeBaseRequest(knowledge_base_id=KB))
        job = stack.upload(KB, DOC_NAME, DOC.encode()).job
        assert stack.wait(job.job_id).state == pb.JOB_STATE_SUCCEEDED
        yield WebStack(stack, url, stack.gateway, log_dir)
    finally:
        for worker in stack.workers if stack is not None else []:
            worker.stop()
        for proc in reversed(started):
            proc.stop()
