"""The stack the fuzz modules send their requests to: every service as a real
process (Milvus Lite in the retrieval service, the llama.cpp server behind
generation, a Celery worker), seeded with knowledge bases, documents and jobs so
that valid-looking requests name things that exist."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import pytest

from devstack.procs import ManagedProcess
from ragmesh.gateway.v1 import gateway_pb2 as pb
from tests.e2e.conftest import ALPHA_KEY, Stack, build_stack
from tests.fuzz.harness import Tally

#: generated requests in all (messages and raw bytes, over every RPC); `make fuzz`
#: raises it
MESSAGES = int(os.environ.get("RAGMESH_FUZZ_MESSAGES", "1000"))
#: where the counts go (JSON), for `make fuzz`'s report
REPORT = os.environ.get("RAGMESH_FUZZ_REPORT", "")
DOC = "\n\n".join(
    f"Section {i}. The zebra finch number {i} sings a song of {i * 7} notes at dawn."
    for i in range(6)
)
MESSAGE_BYTES = 8 * 1024 * 1024
#: The LLM shares two cores with everything else here: its first token can take
#: over a minute under load, which is load, not a contract violation.
EXTRA_ENV = {"generation": {"RAGMESH_GENERATION_LLM_TIMEOUT_S": "150"}}
REPO_ROOT = Path(__file__).resolve().parents[2]


@dataclass
class FuzzStack:
    stack: Stack
    addrs: dict[str, str]
    procs: dict[str, ManagedProcess]
    collection: str
    control_collection: str
    job_ids: list[str] = field(default_factory=list)
    tally: Tally = field(default_factory=Tally)

    def channel(self, service: str) -> grpc.Channel:
        return grpc.insecure_channel(
            self.addrs[service],
            options=[
                ("grpc.max_send_message_length", MESSAGE_BYTES),
                ("grpc.max_receive_message_length", MESSAGE_BYTES),
            ],
        )

    def dead(self) -> list[str]:
        procs = {**self.procs, **{f"worker{i}": w for i, w in enumerate(self.stack.workers)}}
        return [f"{n}: {p.log_tail(30)}" for n, p in procs.items() if not p.alive()]


def _seed(stack: Stack, kb: str) -> str:
    stack.call("CreateKnowledgeBase", pb.CreateKnowledgeBaseRequest(knowledge_base_id=kb))
    job = stack.wait(stack.upload(kb, "finches.md", DOC.encode()).job.job_id)
    assert job.state == pb.JOB_STATE_SUCCEEDED, job
    return str(job.job_id)


@pytest.fixture(scope="package")
def fuzz_stack(
    redis_url: str,
    llm_base_url: str,
    log_dir: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[FuzzStack]:
    procs: dict[str, ManagedProcess] = {}
    addrs: dict[str, str] = {}
    from devstack.procs import start_service

    def start(name: str, env: dict[str, str] | None = None, timeout: float = 180.0) -> Any:
        env = {**(env or {}), **EXTRA_ENV.get(name, {})}
        proc, addr = start_service(name, env=env, log_dir=log_dir, timeout=timeout)
        procs[name], addrs[name] = proc, addr
        return proc, addr

    stack: Stack | None = None
    try:
        stack = build_stack(
            start,
            redis_url,
            tmp_path_factory.mktemp("milvus-fuzz"),
            log_dir,
            llm_base_url=llm_base_url,
            gateway_env={
                # Bad keys are part of the fuzz: the per-source limit would lock the
                # whole run out after ten of them.
                "RAGMESH_GATEWAY_AUTH_FAILURE_LIMIT": "1000000",
                # the hostile corpus has a 30 MB page (the default limit is 32 MiB)
                "RAGMESH_GATEWAY_MAX_UPLOAD_BYTES": str(32 * 1024 * 1024),
                "RAGMESH_GATEWAY_ASK_TIMEOUT_S": "280",
            },
        )
        control_job = _seed(stack, "control")
        fuzz_job = _seed(stack, "fuzz")
        fs = FuzzStack(
            stack,
            addrs,
            procs,
            collection=stack.collection("alpha", "fuzz"),
            control_collection=stack.collection("alpha", "control"),
            job_ids=[control_job, fuzz_job],
        )
        yield fs
    finally:
        for proc in stack.workers if stack is not None else []:
            proc.stop()
        for proc in reversed(procs.values()):
            proc.stop()


def auth(key: str = ALPHA_KEY) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {key}"),)
