"""GenerationService as users run it: `ragmesh serve generation` processes in front of the
real llama.cpp server (SmolLM2-135M-Instruct), over real gRPC.

Besides the shared session LLM server, two private llama.cpp servers are started here:
one whose log shows what the server saw when we cancel (it logs "Disconnected from
client"), one that is killed mid-answer. A stand-in HTTP server supplies only the
malformed stream, which the real server cannot be made to send.
"""

from __future__ import annotations

import asyncio
import urllib.request
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from devstack.deps import llm_process
from devstack.procs import ManagedProcess, free_port, health_status
from ragmesh.common.v1 import common_pb2
from ragmesh.generation.v1 import generation_pb2, generation_pb2_grpc
from ragmesh.rpc import retry_delay_of
from services.common.channels import create_channel
from services.common.status import error_info_of
from tests.support.llm_standin import Reply, StandInLLM, chunk, sse

pytestmark = [pytest.mark.llm]

DOMAIN = "generation.ragmesh"
PASSAGES = [
    generation_pb2.Passage(
        id="fr:0",
        text="Paris is the capital and largest city of France.",
        score=0.9,
        title="France",
    ),
    generation_pb2.Passage(
        id="de:0", text="Berlin is the capital of Germany.", score=0.6, title="Germany"
    ),
]
LONG_QUESTION = "Write a very long story about a dragon."


def _env(llm_url: str, **extra: str) -> dict[str, str]:
    return {
        "RAGMESH_GENERATION_LLM_BASE_URL": llm_url,
        "RAGMESH_GENERATION_TEMPERATURE": "0",
        "RAGMESH_GENERATION_LLM_MAX_RETRIES": "1",
        "RAGMESH_GENERATION_MAX_PASSAGES": "8",
        "RAGMESH_GENERATION_MAX_QUESTION_CHARS": "500",
        "RAGMESH_GENERATION_MAX_PASSAGE_CHARS": "8000",
        "RAGMESH_GENERATION_MAX_TOKENS_MAX": "1024",
        "RAGMESH_GENERATION_MIN_RELEVANCE": "0.3",
        "RAGMESH_READINESS_INTERVAL_S": "0.2",
        "RAGMESH_LOG_FORMAT": "text",
        **extra,
    }


def _models_ok(base_url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{base_url}/models", timeout=1) as resp:
            return bool(resp.status == 200)
    except OSError:
        return False


def _private_llm(
    log_dir: Path, name: str, *, interrupting: bool = False
) -> tuple[ManagedProcess, str]:
    """A llama.cpp server of our own, its prints unbuffered so its log can be read live.

    `interrupting`: left at llama-cpp-python's default, which cuts a running stream
    short whenever another request arrives (the launcher turns that off)."""
    port = free_port()
    proc = llm_process(port, log_dir=log_dir)
    if interrupting and "--interrupt_requests" in proc.argv:
        i = proc.argv.index("--interrupt_requests")
        del proc.argv[i : i + 2]
    proc.name = name
    proc.log_path = log_dir / f"ragmesh-{name}-{port}.log"
    proc.env["PYTHONUNBUFFERED"] = "1"
    proc.start()
    base = f"http://127.0.0.1:{port}/v1"
    try:
        proc.wait_until(lambda: _models_ok(base), 120, "LLM /v1/models")
    except BaseException:
        proc.stop()
        raise
    return proc, base


@pytest.fixture(scope="module")
def service(start_ragmesh_service, llm_base_url: str) -> str:  # type: ignore[no-untyped-def]
    _, addr = start_ragmesh_service("generation", env=_env(llm_base_url))
    return str(addr)


@pytest.fixture(scope="module")
def watched_llm(log_dir: Path) -> Iterator[tuple[ManagedProcess, str]]:
    proc, base = _private_llm(log_dir, "llm-watched", interrupting=True)
    yield proc, base
    proc.stop()


@pytest.fixture(scope="module")
def watched_service(start_ragmesh_service, watched_llm) -> str:  # type: ignore[no-untyped-def]
    _, addr = start_ragmesh_service("generation", env=_env(watched_llm[1]))
    return str(addr)


async def _stub(addr: str) -> AsyncIterator[generation_pb2_grpc.GenerationServiceStub]:
    channel = create_channel(addr)
    try:
        yield generation_pb2_grpc.GenerationServiceStub(channel)
    finally:
        await channel.close()


@pytest.fixture
async def stub(service: str) -> AsyncIterator[generation_pb2_grpc.GenerationServiceStub]:
    async for s in _stub(service):
        yield s


async def _answer(
    stub: generation_pb2_grpc.GenerationServiceStub,
    request: generation_pb2.GenerateAnswerRequest,
    deadline_s: float = 120,
) -> tuple[list[str], generation_pb2.FinalAnswer]:
    deltas: list[str] = []
    final = None
    async for response in stub.GenerateAnswer(request, timeout=deadline_s):
        if response.HasField("queued"):
            assert not deltas and final is None, "queued after the answer started"
        elif response.HasField("delta"):
            assert final is None, "a delta after the final message"
            deltas.append(response.delta.text)
        else:
            assert final is None, "two final messages"
            final = response.final
    assert final is not None, "no final message"
    return deltas, final


async def _error(
    stub: generation_pb2_grpc.GenerationServiceStub,
    request: generation_pb2.GenerateAnswerRequest,
    deadline_s: float = 60,
) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await _answer(stub, request, deadline_s=deadline_s)
    return err.value


async def _wait_for_log(proc: ManagedProcess, text: str, count: int, within_s: float) -> None:
    """Until `text` appears `count` times in the process's log."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within_s
    while loop.time() < deadline:
        if proc.log_path.read_text(errors="replace").count(text) >= count:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"{text!r} did not appear {count}x in {proc.log_path}:\n{proc.log_tail()}")


# --- answers -----------------------------------------------------------------------------
async def test_streams_a_real_answer_with_validated_citations(
    stub: generation_pb2_grpc.GenerationServiceStub,
) -> None:
    """The model is asked to copy a sentence citing [1], [2] and a passage [7] that does
    not exist: the service keeps the first two, maps them to ids, removes [7] from the
    streamed text as well as the final answer, and reports it."""
    request = generation_pb2.GenerateAnswerRequest(
        question="Copy this sentence exactly: Paris [1] and Berlin [2] and Rome [7].",
        passages=PASSAGES,
        max_tokens=24,
        temperature=0.0,
    )
    deltas, final = await _answer(stub, request)
    assert len(deltas) > 1  # streamed, not one block
    assert "".join(deltas) == final.answer
    assert "Paris [1]" in final.answer and "Berlin [2]" in final.answer
    assert "[7]" not in final.answer
    assert list(final.invalid_citation_numbers) == [7]
    assert [(c.number, c.passage_id) for c in final.citations] == [(1, "fr:0"), (2, "de:0")]
    assert final.grounded and not final.abstained
    assert final.finish_reason in (
        generation_pb2.FINISH_REASON_STOP,
        generation_pb2.FINISH_REASON_LENGTH,
    )
    assert list(final.used_passage_ids) == ["fr:0", "de:0"]
    assert list(final.dropped_passage_ids) == []
    assert final.model == "smollm2-135m-instruct"
    usage = final.usage
    assert usage.prompt_tokens > 100 and 0 < usage.completion_tokens <= 24
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens
    assert 0 < final.timings.first_token_ms <= final.timings.llm_ms <= final.timings.total_ms


async def test_passages_below_the_threshold_are_left_out(
    stub: generation_pb2_grpc.GenerationServiceStub,
) -> None:
    weak = generation_pb2.Passage(id="x:0", text="Cats sleep a lot.", score=0.1)
    request = generation_pb2.GenerateAnswerRequest(
        question="What is the capital of France?",
        passages=[weak, *PASSAGES],
        max_tokens=4,
    )
    _, final = await _answer(stub, request)
    assert list(final.used_passage_ids) == ["fr:0", "de:0"]
    assert list(final.dropped_passage_ids) == ["x:0"]
    assert not final.abstained


@pytest.mark.parametrize(
    ("question", "min_relevance", "expected"),
    [
        ("What is the capital of France?", None, "The knowledge base does not contain"),
        ("法国的首都是哪里？", None, "知识库中没有"),
        ("What is the capital of France?", 0.95, "The knowledge base does not contain"),
    ],
)
async def test_abstains_when_nothing_is_relevant(
    stub: generation_pb2_grpc.GenerationServiceStub,
    question: str,
    min_relevance: float | None,
    expected: str,
) -> None:
    weak = [generation_pb2.Passage(id="x:0", text="Cats sleep a lot.", score=0.1)]
    request = generation_pb2.GenerateAnswerRequest(
        question=question,
        passages=weak if min_relevance is None else PASSAGES,
    )
    if min_relevance is not None:
        request.min_relevance = min_relevance
    deltas, final = await _answer(stub, request)
    assert final.abstained and not final.grounded
    assert final.finish_reason == generation_pb2.FINISH_REASON_ABSTAINED
    assert final.answer.startswith(expected) and "".join(deltas) == final.answer
    assert list(final.used_passage_ids) == []
    assert len(final.dropped_passage_ids) == len(request.passages)
    assert final.usage.total_tokens == 0 and final.model == ""


# --- bad input ---------------------------------------------------------------------------
def _req(**kwargs: object) -> generation_pb2.GenerateAnswerRequest:
    fields: dict[str, object] = {"question": "What?", "passages": PASSAGES}
    fields.update(kwargs)
    return generation_pb2.GenerateAnswerRequest(**fields)  # type: ignore[arg-type]


def _p(pid: str = "a", text: str = "x", score: float = 1.0) -> generation_pb2.Passage:
    return generation_pb2.Passage(id=pid, text=text, score=score)


@pytest.mark.parametrize(
    ("request_", "reason"),
    [
        (_req(question=""), "EMPTY_QUESTION"),
        (_req(question="   "), "EMPTY_QUESTION"),
        (_req(question="why " * 200), "QUESTION_TOO_LONG"),
        (_req(passages=[_p(str(i)) for i in range(9)]), "TOO_MANY_PASSAGES"),
        (_req(passages=[_p(text="y" * 8001)]), "PASSAGE_TOO_LONG"),
        (_req(passages=[_p(pid="")]), "MISSING_PASSAGE_ID"),
        (_req(passages=[_p(), _p()]), "DUPLICATE_PASSAGE_ID"),
        (_req(passages=[_p(text=" ")]), "EMPTY_PASSAGE"),
        (_req(max_tokens=1025), "MAX_TOKENS_OUT_OF_RANGE"),
        (_req(max_tokens=-5), "MAX_TOKENS_OUT_OF_RANGE"),
        (_req(temperature=2.01), "TEMPERATURE_OUT_OF_RANGE"),
        (_req(temperature=-1.0), "TEMPERATURE_OUT_OF_RANGE"),
        (_req(passages=[_p(score=float("inf"))]), "INVALID_PASSAGE_SCORE"),
    ],
)
async def test_bad_input_is_invalid_argument(
    stub: generation_pb2_grpc.GenerationServiceStub,
    request_: generation_pb2.GenerateAnswerRequest,
    reason: str,
) -> None:
    err = await _error(stub, request_)
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    info = error_info_of(err)
    assert info is not None and (info.reason, info.domain) == (reason, DOMAIN)
    assert err.details()


# --- cancellation and deadlines, seen from the LLM server ---------------------------------
DISCONNECTED = "Disconnected from client"


async def test_cancelling_the_call_closes_the_llm_stream(
    watched_service: str,
    watched_llm: tuple[ManagedProcess, str],
) -> None:
    proc, base = watched_llm
    before = proc.log_path.read_text(errors="replace").count(DISCONNECTED)
    async for stub in _stub(watched_service):
        call = stub.GenerateAnswer(
            generation_pb2.GenerateAnswerRequest(
                question=LONG_QUESTION, passages=PASSAGES, max_tokens=1000
            ),
            timeout=120,
        )
        async for response in call:
            if response.HasField("delta"):
                break  # the answer is streaming: the LLM is generating
        call.cancel()
        # the LLM server noticed the closed connection and stopped generating ...
        await _wait_for_log(proc, DISCONNECTED, before + 1, within_s=10)
        # ... so it serves the next request at once instead of finishing 1000 tokens
        assert await asyncio.to_thread(_models_ok, base)


async def test_a_deadline_shorter_than_the_answer_is_deadline_exceeded(
    watched_service: str,
    watched_llm: tuple[ManagedProcess, str],
) -> None:
    proc, base = watched_llm
    before = proc.log_path.read_text(errors="replace").count(DISCONNECTED)
    async for stub in _stub(watched_service):
        request = generation_pb2.GenerateAnswerRequest(
            question=LONG_QUESTION, passages=PASSAGES, max_tokens=1000
        )
        err = await _error(stub, request, deadline_s=3.0)
        assert err.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        info = error_info_of(err)  # the service's own, sent just before the caller's timer
        assert info is None or info.reason == "LLM_TIMEOUT"
        await _wait_for_log(proc, DISCONNECTED, before + 1, within_s=10)
        assert await asyncio.to_thread(_models_ok, base)


async def test_a_stream_interrupted_by_the_llm_server_is_unavailable(
    watched_service: str,
    watched_llm: tuple[ManagedProcess, str],
) -> None:
    """The watched server interrupts a stream when another request arrives. The
    service's own readiness checks (every 0.2 s here) must not do that to its answers;
    another client's request does, and the caller gets a retryable UNAVAILABLE."""
    _, base = watched_llm
    async for stub in _stub(watched_service):
        call = stub.GenerateAnswer(
            generation_pb2.GenerateAnswerRequest(
                question=LONG_QUESTION, passages=PASSAGES, max_tokens=1000
            ),
            timeout=120,
        )
        deltas = 0
        with pytest.raises(grpc.aio.AioRpcError) as err:
            async for response in call:
                deltas += response.HasField("delta")
                if deltas == 20:  # ~0.5-2 s of streaming, several readiness checks
                    await asyncio.to_thread(_models_ok, base)  # another client
        assert deltas >= 20
        assert err.value.code() == grpc.StatusCode.UNAVAILABLE
        info = error_info_of(err.value)
        assert info is not None and info.reason == "LLM_STREAM_INTERRUPTED"


async def test_the_services_own_llm_timeout_is_deadline_exceeded(
    start_ragmesh_service,
    llm_base_url: str,  # type: ignore[no-untyped-def]
) -> None:
    _, addr = start_ragmesh_service(
        "generation", env=_env(llm_base_url, RAGMESH_GENERATION_LLM_TIMEOUT_S="2")
    )
    async for stub in _stub(addr):
        request = generation_pb2.GenerateAnswerRequest(
            question=LONG_QUESTION, passages=PASSAGES, max_tokens=1000
        )
        err = await _error(stub, request, deadline_s=60)
        assert err.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        info = error_info_of(err)
        assert info is not None and info.reason == "LLM_TIMEOUT"
        assert "2.00s" in err.details()


# --- admission ------------------------------------------------------------------------------
REWRITE = generation_pb2.RewriteQueryRequest(
    question="How tall is it?",
    history=[
        common_pb2.ChatTurn(role=common_pb2.CHAT_ROLE_USER, content="What is the Eiffel Tower?"),
        common_pb2.ChatTurn(
            role=common_pb2.CHAT_ROLE_ASSISTANT,
            content="The Eiffel Tower is a wrought-iron lattice tower in Paris, France.",
        ),
    ],
)


async def test_rewrite_query_resolves_the_follow_up(
    stub: generation_pb2_grpc.GenerationServiceStub,
) -> None:
    resp = await stub.RewriteQuery(REWRITE, timeout=120, metadata=(("x-ragmesh-tenant", "t"),))
    assert "Eiffel Tower" in resp.query and "\n" not in resp.query, resp.query
    assert resp.turns_used == 2 and resp.llm_ms > 0


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"history": []}, "EMPTY_HISTORY"),
        ({"max_tokens": 65}, "MAX_TOKENS_OUT_OF_RANGE"),
        ({"question": " "}, "EMPTY_QUESTION"),
        (
            {"history": [common_pb2.ChatTurn(role=common_pb2.CHAT_ROLE_UNSPECIFIED, content="x")]},
            "INVALID_HISTORY_ROLE",
        ),
    ],
)
async def test_bad_rewrite_requests_are_invalid(
    stub: generation_pb2_grpc.GenerationServiceStub, change: dict[str, Any], reason: str
) -> None:
    request = generation_pb2.RewriteQueryRequest()
    request.CopyFrom(REWRITE)
    for name, value in change.items():
        request.ClearField(name)
        if isinstance(value, list):
            getattr(request, name).extend(value)
        else:
            setattr(request, name, value)
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.RewriteQuery(request, timeout=30)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    info = error_info_of(err.value)
    assert info is not None and info.reason == reason


def _as_tenant(tenant: str) -> tuple[tuple[str, str], ...]:
    return (("x-ragmesh-tenant", tenant),)


async def test_answers_wait_their_turn_fairly_and_a_full_queue_refuses_at_once(
    start_ragmesh_service,
    llm_base_url: str,  # type: ignore[no-untyped-def]
) -> None:
    """One LLM slot, a queue of 3 (2 a tenant): tenant A's burst of three and
    tenant B's single question. B's is answered second, not last; the queued ones
    are told their place; a fifth question is refused at once with a retry delay."""
    _, addr = start_ragmesh_service(
        "generation",
        env=_env(
            llm_base_url,
            RAGMESH_GENERATION_LLM_MAX_CONCURRENCY="1",
            RAGMESH_GENERATION_LLM_MAX_QUEUED="3",
            RAGMESH_GENERATION_LLM_MAX_QUEUED_PER_TENANT="2",
        ),
    )
    request = generation_pb2.GenerateAnswerRequest(
        question="What is the capital of France?", passages=PASSAGES, max_tokens=48
    )
    started: list[str] = []  # names, in the order their first delta came
    positions: dict[str, list[int]] = {}

    async def ask(
        stub: generation_pb2_grpc.GenerationServiceStub, name: str, first: asyncio.Event
    ) -> None:
        call = stub.GenerateAnswer(request, timeout=120, metadata=_as_tenant(name[0]))
        async for response in call:
            first.set()
            if response.HasField("queued"):
                positions.setdefault(name, []).append(response.queued.position)
            elif response.HasField("delta") and name not in started:
                started.append(name)

    async for stub in _stub(addr):
        tasks = []
        for name in ("A1", "A2", "A3", "B1"):  # one at a time, so the arrival order is known
            first = asyncio.Event()
            tasks.append(asyncio.create_task(ask(stub, name, first)))
            await asyncio.wait_for(first.wait(), 60)
        loop = asyncio.get_running_loop()
        sent = loop.time()
        err = await _error(stub, request, deadline_s=60)
        refused_after = loop.time() - sent
        assert err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        info = error_info_of(err)
        assert info is not None and info.reason == "LLM_QUEUE_FULL"
        assert retry_delay_of(err) is not None and retry_delay_of(err) > 0
        assert not all(t.done() for t in tasks), "refused only after the queue drained"
        # A query rewrite waits in the same queue: refused at once as well.
        with pytest.raises(grpc.aio.AioRpcError) as rewrite:
            await stub.RewriteQuery(REWRITE, timeout=60, metadata=_as_tenant("C"))
        assert rewrite.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        rewrite_info = error_info_of(rewrite.value)
        assert rewrite_info is not None and rewrite_info.reason == "LLM_QUEUE_FULL"
        # CheckAdmission says the same, without a request to judge
        with pytest.raises(grpc.aio.AioRpcError) as checked:
            await stub.CheckAdmission(
                generation_pb2.CheckAdmissionRequest(time_remaining_ms=60_000),
                timeout=5,
                metadata=_as_tenant("C"),
            )
        assert checked.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        checked_info = error_info_of(checked.value)
        assert checked_info is not None and checked_info.reason == "LLM_QUEUE_FULL"
        assert retry_delay_of(checked.value) == retry_delay_of(err)
        await asyncio.wait_for(asyncio.gather(*tasks), 120)
        assert refused_after < 5  # at once: not after waiting for a slot
    assert started == ["A1", "A2", "B1", "A3"]
    # as they arrived: A3 behind A2; then B1 behind A2 only, ahead of A3
    assert positions["A2"][0] == 1 and positions["A3"][0] == 2 and positions["B1"][0] == 2
    assert "A1" not in positions  # it had the slot at once


async def test_a_checked_answer_keeps_its_place_until_it_comes_or_gives_it_back(
    start_ragmesh_service,
    llm_base_url: str,  # type: ignore[no-untyped-def]
) -> None:
    """CheckAdmission's reservation takes the queue's one place; released, or taken
    over by an answer that needs no LLM (an abstention), the place is free again.
    No LLM call is made here."""
    _, addr = start_ragmesh_service(
        "generation",
        env=_env(
            llm_base_url,
            RAGMESH_GENERATION_LLM_MAX_CONCURRENCY="1",
            RAGMESH_GENERATION_LLM_MAX_QUEUED="1",
            RAGMESH_GENERATION_LLM_MAX_QUEUED_PER_TENANT="1",
        ),
    )

    async def check(stub: generation_pb2_grpc.GenerationServiceStub, tenant: str) -> str:
        response = await stub.CheckAdmission(
            generation_pb2.CheckAdmissionRequest(time_remaining_ms=60_000),
            timeout=5,
            metadata=_as_tenant(tenant),
        )
        assert response.reservation and response.reservation_ttl_ms > 0
        return str(response.reservation)

    async def refused(stub: generation_pb2_grpc.GenerationServiceStub, tenant: str) -> str:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await check(stub, tenant)
        assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert retry_delay_of(err.value) is not None
        info = error_info_of(err.value)
        return info.reason if info else ""

    async for stub in _stub(addr):
        first = await check(stub, "A")
        assert await refused(stub, "B") == "LLM_QUEUE_FULL"  # A's answer is on its way
        await stub.CheckAdmission(
            generation_pb2.CheckAdmissionRequest(release=first), timeout=5, metadata=_as_tenant("A")
        )
        second = await check(stub, "B")
        weak = [generation_pb2.Passage(id="x:0", text="Cats sleep.", score=0.1)]
        call = stub.GenerateAnswer(
            _req(passages=weak),
            timeout=30,
            metadata=(*_as_tenant("B"), ("x-ragmesh-admission-reservation", second)),
        )
        assert [r.final.abstained async for r in call if r.HasField("final")] == [True]
        await check(stub, "A")  # the abstention gave the place back

        with pytest.raises(grpc.aio.AioRpcError) as bad:
            await stub.CheckAdmission(
                generation_pb2.CheckAdmissionRequest(time_remaining_ms=-1), timeout=5
            )
        assert bad.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        bad_info = error_info_of(bad.value)
        assert bad_info is not None and bad_info.reason == "INVALID_TIME_REMAINING"


# --- the LLM server failing ---------------------------------------------------------------
async def test_llm_killed_mid_answer_then_down(start_ragmesh_service, log_dir: Path) -> None:  # type: ignore[no-untyped-def]
    proc, base = _private_llm(log_dir, "llm-killed")
    try:
        _, addr = start_ragmesh_service("generation", env=_env(base))
        async for stub in _stub(addr):
            # killed while streaming: UNAVAILABLE, the connection was lost
            call = stub.GenerateAnswer(
                generation_pb2.GenerateAnswerRequest(
                    question=LONG_QUESTION, passages=PASSAGES, max_tokens=1000
                ),
                timeout=120,
            )
            with pytest.raises(grpc.aio.AioRpcError) as err:
                async for response in call:
                    if response.HasField("delta") and proc.alive():
                        await asyncio.to_thread(proc.kill)
            assert err.value.code() == grpc.StatusCode.UNAVAILABLE
            info = error_info_of(err.value)
            assert info is not None and info.reason == "LLM_CONNECTION_LOST"

            # stopped: the next question is UNAVAILABLE, the server is unreachable
            err2 = await _error(stub, _req(question="What is the capital of France?"))
            assert err2.code() == grpc.StatusCode.UNAVAILABLE
            info2 = error_info_of(err2)
            assert info2 is not None and info2.reason == "LLM_UNAVAILABLE"
            assert base.removesuffix("/v1") in err2.details()

            # abstention needs no LLM: it still answers with the LLM down
            weak = [generation_pb2.Passage(id="x:0", text="Cats sleep.", score=0.1)]
            _, final = await _answer(stub, _req(passages=weak))
            assert final.abstained

            # and the health check reports the dependency down
            for _ in range(100):
                if await asyncio.to_thread(health_status, addr) == "NOT_SERVING":
                    break
                await asyncio.sleep(0.1)
            assert await asyncio.to_thread(health_status, addr) == "NOT_SERVING"
    finally:
        proc.stop()


async def test_prompt_beyond_the_servers_window_is_internal(
    start_ragmesh_service,
    llm_base_url: str,  # type: ignore[no-untyped-def]
) -> None:
    """Configured for an 8192-token window while the server has 2048 (a real
    misconfiguration): llama.cpp fails on the prompt and ends the stream empty."""
    _, addr = start_ragmesh_service(
        "generation",
        env=_env(
            llm_base_url,
            RAGMESH_GENERATION_CONTEXT_WINDOW_TOKENS="8192",
            RAGMESH_GENERATION_TOKEN_COUNTING="estimate",
            RAGMESH_GENERATION_ESTIMATE_BYTES_PER_TOKEN="4",
        ),
    )
    passages = [
        _p(str(i), "The mill by the river grinds wheat every day. " * 150, 0.9) for i in range(2)
    ]
    async for stub in _stub(addr):
        err = await _error(stub, _req(passages=passages, max_tokens=8))
        assert err.code() == grpc.StatusCode.INTERNAL
        info = error_info_of(err)
        assert info is not None and info.reason == "LLM_EMPTY_STREAM"
        assert "RAGMESH_GENERATION_CONTEXT_WINDOW_TOKENS" in err.details()


async def test_malformed_llm_stream_is_internal(start_ragmesh_service) -> None:  # type: ignore[no-untyped-def]
    body = sse(chunk("Paris"), "{not json", "[DONE]")
    with StandInLLM([Reply(200, body)]) as standin:
        _, addr = start_ragmesh_service("generation", env=_env(standin.base_url))
        async for stub in _stub(addr):
            err = await _error(stub, _req(question="What is the capital of France?"))
    assert err.code() == grpc.StatusCode.INTERNAL
    info = error_info_of(err)
    assert info is not None and (info.reason, info.domain) == ("LLM_MALFORMED_RESPONSE", DOMAIN)
    assert "malformed chat-completion stream" in err.details()
