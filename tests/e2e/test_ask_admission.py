"""Ask under the generation service's admission control, through the gateway: a
waiting answer is told its place in the queue, one tenant's burst does not take
another tenant's turn, and a full queue refuses at once, before any message and
before any retrieval (the gateway's CheckAdmission), with a RetryInfo that the SDK
honours.

The generation service runs with one LLM slot and a queue of one, so that three
concurrent questions are enough to fill it.
"""

from __future__ import annotations

import re
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from devstack.procs import ManagedProcess
from ragmesh.client import RagmeshClient
from ragmesh.client.results import collect_ask
from ragmesh.gateway.v1 import gateway_pb2 as pb
from ragmesh.rpc import error_info_of, retry_delay_of
from tests.e2e.conftest import ALPHA_KEY, BETA_KEY, Stack, build_stack

pytestmark = [pytest.mark.slow, pytest.mark.llm]

KB = "queued"
DOCUMENT = (
    b"The lighthouse keeper lights the lamp at dusk and trims the wick at midnight. "
    b"Ships passing the cape read its signal: two white flashes every ten seconds.\n"
)
# Long enough answers that the slot stays busy while the others arrive.
HOLDING = pb.AskRequest(
    knowledge_base_id=KB,
    question="Write a long, detailed essay on everything the lighthouse keeper does, the "
    "lamp, the wick, the signal and the ships that pass the cape.",
    max_tokens=400,
    temperature=0.0,
    answer_mode=pb.ANSWER_MODE_GENERATIVE,  # the LLM path (AUTO answers verbatim here)
)
SHORT = pb.AskRequest(
    knowledge_base_id=KB,
    question="What is the lighthouse signal?",
    max_tokens=8,
    answer_mode=pb.ANSWER_MODE_GENERATIVE,
)


@pytest.fixture(scope="module")
def stack(
    redis_proc: ManagedProcess,
    llm_base_url: str,
    start_ragmesh_service: Any,
    tmp_path_factory: pytest.TempPathFactory,
    log_dir: Path,
) -> Iterator[Stack]:
    s = build_stack(
        start_ragmesh_service,
        # A Redis of its own: its tenants' knowledge bases stay out of other modules' lists.
        f"redis://127.0.0.1:{redis_proc.port}/0",  # type: ignore[attr-defined]
        tmp_path_factory.mktemp("milvus"),
        log_dir,
        llm_base_url=llm_base_url,
        generation_env={
            "RAGMESH_GENERATION_LLM_MAX_CONCURRENCY": "1",
            "RAGMESH_GENERATION_LLM_MAX_QUEUED": "1",
            "RAGMESH_GENERATION_LLM_MAX_QUEUED_PER_TENANT": "1",
            # the holding answer's 400 tokens take over a minute on a busy machine
            "RAGMESH_GENERATION_LLM_TIMEOUT_S": "170",
        },
    )
    try:
        for key in (ALPHA_KEY, BETA_KEY):
            s.call("CreateKnowledgeBase", pb.CreateKnowledgeBaseRequest(knowledge_base_id=KB), key)
            job = s.wait(s.upload(KB, "lighthouse.txt", DOCUMENT, key=key).job.job_id, key)
            assert job.state == pb.JOB_STATE_SUCCEEDED, job.error
        yield s
    finally:
        for proc in s.workers:
            proc.stop()


class Asking(threading.Thread):
    """One Ask stream read to its end, its events and error kept."""

    def __init__(self, stack: Stack, request: pb.AskRequest, key: str) -> None:
        super().__init__(daemon=True)
        self.call = stack.rag.Ask(
            request, metadata=[("authorization", f"Bearer {key}")], timeout=180
        )
        self.events: list[pb.AskResponse] = []
        self.error: grpc.RpcError | None = None
        self.changed = threading.Condition()
        self.ended = False

    def run(self) -> None:
        try:
            for event in self.call:
                with self.changed:
                    self.events.append(event)
                    self.changed.notify_all()
        except grpc.RpcError as err:
            self.error = err
        finally:
            with self.changed:
                self.ended = True
                self.changed.notify_all()

    def wait_for(self, kind: str, timeout: float) -> None:
        """Until an event of that kind came (or the stream ended)."""
        with self.changed:
            self.changed.wait_for(lambda: self.ended or kind in self.kinds(), timeout)

    def kinds(self) -> list[str]:
        return [str(e.WhichOneof("event")) for e in self.events]


def occupy(stack: Stack) -> tuple[Asking, Asking]:
    """Tenant A's long answer holds the LLM slot and tenant B's question waits in the
    queue (its one place). The small model may end an answer early, before B's
    question (retrieval, sentence scoring) reaches the queue: then try again."""
    seen = []
    for _ in range(3):
        holder = Asking(stack, HOLDING, ALPHA_KEY)
        holder.start()
        holder.wait_for("delta", 120)
        assert holder.error is None and "delta" in holder.kinds(), holder.kinds()
        waiting = Asking(stack, SHORT, BETA_KEY)
        waiting.start()
        waiting.wait_for("queued", 60)
        if "queued" in waiting.kinds():
            return holder, waiting
        holder.join(180)
        waiting.join(180)
        seen.append((holder.kinds()[-1:], waiting.kinds(), waiting.error))
    raise AssertionError(f"the holding answer always ended before the second one queued: {seen}")


def searches(stack: Stack) -> float:
    """SearchChunks calls the retrieval service has handled (its Prometheus metrics)."""
    assert stack.retrieval_proc is not None
    argv = stack.retrieval_proc.argv
    port = argv[argv.index("--metrics-port") + 1]
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        body = resp.read().decode()
    pattern = r'ragmesh_grpc_requests_total\{[^}]*method="SearchChunks"[^}]*\} ([0-9.e+]+)'
    return sum(float(n) for n in re.findall(pattern, body))


def test_a_waiting_ask_is_told_its_place_and_a_full_queue_refuses_before_any_message(
    stack: Stack,
) -> None:
    holder, waiting = occupy(stack)
    assert waiting.kinds()[:2] == ["sources", "queued"], waiting.kinds()
    assert waiting.events[1].queued.position == 1

    # The queue (one place) is full: refused at once, before the gateway embedded the
    # question or searched, and nothing was sent before the error, so a client may
    # simply call again.
    searched = searches(stack)
    sent = time.monotonic()
    refused = Asking(stack, SHORT, ALPHA_KEY)
    refused.run()
    # Refused at once, not after waiting for room: room comes only when A's answer ends,
    # so an A still answering proves it; if A happened to end meanwhile, the refusal
    # must have been quick (milliseconds on a quiet machine; a busy one stretches it).
    assert not holder.ended or time.monotonic() - sent < 1.0
    assert searches(stack) == searched
    assert refused.events == []
    assert refused.error is not None
    assert refused.error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    info = error_info_of(refused.error)
    assert info is not None and info.reason in ("LLM_QUEUE_FULL", "LLM_TENANT_QUEUE_FULL")
    delay = retry_delay_of(refused.error)
    assert delay is not None and delay > 0

    holder.join(180)
    waiting.join(180)
    for ask in (holder, waiting):
        assert ask.error is None, ask.error
        assert ask.kinds()[-1] == "final", ask.kinds()


def test_the_sdk_waits_out_a_full_queue(stack: Stack) -> None:
    """The same refusal, met by the SDK: it backs off as RetryInfo says and the
    answer comes once the queue has room."""
    holder, waiting = occupy(stack)

    with RagmeshClient(stack.gateway, ALPHA_KEY, tls=False, timeout=180) as rag:
        result = collect_ask(rag.ask(KB, SHORT.question, max_tokens=8, answer_mode="generative"))
    assert result.final is not None and result.sources
    holder.join(180)
    waiting.join(180)
    assert holder.error is None and waiting.error is None
