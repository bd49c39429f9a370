"""Multi-turn Ask through the whole stack (llama.cpp with SmolLM2-135M).

Each exchange's follow-up ("How tall is it?", "它有多高？") names nothing the
knowledge base can find: asked alone, the document that answers it is not the
first hit (distractors about other tall things are). With the conversation it
is: the gateway searches a standalone query, written by the LLM (RewriteQuery,
through the generation service's admission queue) or, when the LLM cannot in
time, the deterministic fallback (the last user turns and the question). Which
path wrote the query is asserted, and both are exercised for real: the fallback
by a second gateway whose rewrite budget is too small for any LLM call.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from ragmesh.common.v1 import common_pb2
from ragmesh.gateway.v1 import gateway_pb2 as pb
from ragmesh.gateway.v1 import gateway_pb2_grpc
from services.common.status import error_info_of
from tests.e2e.conftest import ALPHA_KEY, Stack, build_stack

pytestmark = [pytest.mark.slow, pytest.mark.llm]

KB, KB_ZH = "talk", "talk-zh"
DOCUMENTS = {
    "eiffel.txt": "The Eiffel Tower is a wrought-iron lattice tower on the Champ de Mars in "
    "Paris, France. It is 330 metres tall and was completed in 1889.\n",
    "giraffe.txt": "Giraffes are the tallest living animals. How tall is a giraffe? An adult "
    "giraffe stands about 5 metres tall.\n",
    "houses.txt": "How tall may a new house be? The building code limits new houses to 12 "
    "metres in height, measured from the street.\n",
}
DOCUMENTS_ZH = {
    "dongfang.txt": "东方明珠广播电视塔位于上海浦东陆家嘴。塔高468米，于1994年建成。\n",
    "giraffe.txt": "长颈鹿是世界上最高的动物，成年长颈鹿高约5米。\n",
    "yaoming.txt": "姚明是中国著名的篮球运动员，身高2.26米。\n",
}
EN = (
    KB,
    [
        common_pb2.ChatTurn(role=common_pb2.CHAT_ROLE_USER, content="What is the Eiffel Tower?"),
        common_pb2.ChatTurn(
            role=common_pb2.CHAT_ROLE_ASSISTANT,
            content="The Eiffel Tower is a wrought-iron lattice tower in Paris, France.",
        ),
    ],
    "How tall is it?",
    "eiffel.txt",
    "330",
)
ZH = (
    KB_ZH,
    [
        common_pb2.ChatTurn(role=common_pb2.CHAT_ROLE_USER, content="东方明珠塔在哪里？"),
        common_pb2.ChatTurn(
            role=common_pb2.CHAT_ROLE_ASSISTANT, content="东方明珠广播电视塔位于上海浦东陆家嘴。"
        ),
    ],
    "它有多高？",
    "dongfang.txt",
    "468",
)


@pytest.fixture(scope="module")
def stack(
    redis_url: str,
    llm_base_url: str,
    start_ragmesh_service: Any,
    tmp_path_factory: pytest.TempPathFactory,
    log_dir: Path,
) -> Iterator[Stack]:
    """The shared stack's services, with a rewrite budget the 135M model meets on a
    loaded 2-core machine (its default, 5 s, is for a served LLM): the LLM path
    is what these tests watch; the fallback has a gateway of its own below."""
    s = build_stack(
        start_ragmesh_service,
        redis_url,
        tmp_path_factory.mktemp("milvus"),
        log_dir,
        llm_base_url=llm_base_url,
        gateway_env={"RAGMESH_GATEWAY_REWRITE_TIMEOUT_S": "120"},
        generation_env={"RAGMESH_GENERATION_LLM_TIMEOUT_S": "240"},
    )
    try:
        yield s
    finally:
        for proc in s.workers:
            proc.stop()


@pytest.fixture(scope="module")
def knowledge_bases(stack: Stack) -> Stack:
    for kb, docs, language in (
        (KB, DOCUMENTS, common_pb2.TEXT_LANGUAGE_ENGLISH),
        (KB_ZH, DOCUMENTS_ZH, common_pb2.TEXT_LANGUAGE_CHINESE),
    ):
        stack.call(
            "CreateKnowledgeBase",
            pb.CreateKnowledgeBaseRequest(knowledge_base_id=kb, language=language),
        )
        for name, text in docs.items():
            job = stack.wait(stack.upload(kb, name, text.encode()).job.job_id)
            assert job.state == pb.JOB_STATE_SUCCEEDED, job.error
    return stack


@pytest.fixture(scope="module")
def hurried_gateway(
    knowledge_bases: Stack, start_ragmesh_service: Any
) -> gateway_pb2_grpc.RagServiceStub:
    """A second gateway on the same services whose rewrite budget (1 ms) no LLM
    call can meet: every rewrite times out for real and the fallback is searched."""
    shared = {
        k: v for k, v in knowledge_bases.worker_env.items() if not k.startswith("RAGMESH_WORKER_")
    }
    _, addr = start_ragmesh_service(
        "gateway",
        env={
            **shared,
            "RAGMESH_GATEWAY_API_KEYS": f"{ALPHA_KEY}:alpha",
            "RAGMESH_GATEWAY_REWRITE_TIMEOUT_S": "0.001",
        },
    )
    return gateway_pb2_grpc.RagServiceStub(grpc.insecure_channel(addr))


def ask(
    rag: gateway_pb2_grpc.RagServiceStub, kb: str, question: str, **fields: Any
) -> tuple[list[common_pb2.Citation], pb.AskFinal]:
    request = pb.AskRequest(knowledge_base_id=kb, question=question, top_k=3, **fields)
    events = list(
        rag.Ask(request, metadata=[("authorization", f"Bearer {ALPHA_KEY}")], timeout=300)
    )
    sources = [s for e in events if e.WhichOneof("event") == "sources" for s in e.sources.sources]
    finals = [e.final for e in events if e.WhichOneof("event") == "final"]
    assert len(finals) == 1, events
    return sources, finals[0]


@pytest.mark.parametrize("exchange", [EN, ZH], ids=["en", "zh"])
def test_the_follow_up_alone_does_not_find_its_document(
    knowledge_bases: Stack, exchange: tuple[Any, ...]
) -> None:
    kb, _, follow_up, gold, _ = exchange
    sources, final = ask(knowledge_bases.rag, kb, follow_up, answer_mode=pb.ANSWER_MODE_VERBATIM)
    assert sources and sources[0].file_name != gold, [s.file_name for s in sources]
    assert final.search_query == follow_up
    assert final.search_query_source == pb.SEARCH_QUERY_SOURCE_QUESTION


def test_llm_rewrite_finds_it_and_answers_with_the_history(knowledge_bases: Stack) -> None:
    kb, history, follow_up, gold, _ = EN
    sources, final = ask(
        knowledge_bases.rag,
        kb,
        follow_up,
        history=history,
        answer_mode=pb.ANSWER_MODE_GENERATIVE,
        temperature=0.0,
        max_tokens=24,
    )
    print(f"query {final.search_query!r}; answer {final.answer!r}")
    assert final.search_query_source == pb.SEARCH_QUERY_SOURCE_LLM_REWRITE, final
    assert final.search_query_fallback == ""
    assert final.search_query != follow_up
    assert sources[0].file_name == gold, [s.file_name for s in sources]
    assert final.answer_mode == pb.ANSWER_MODE_GENERATIVE
    assert final.answer and not final.abstained


@pytest.mark.parametrize("exchange", [EN, ZH], ids=["en", "zh"])
def test_fallback_query_finds_it_when_the_rewrite_times_out(
    hurried_gateway: gateway_pb2_grpc.RagServiceStub, exchange: tuple[Any, ...]
) -> None:
    kb, history, follow_up, gold, fact = exchange
    sources, final = ask(
        hurried_gateway, kb, follow_up, history=history, answer_mode=pb.ANSWER_MODE_VERBATIM
    )
    assert final.search_query_source == pb.SEARCH_QUERY_SOURCE_FALLBACK, final
    assert final.search_query_fallback == "TIMEOUT"
    assert final.search_query == f"{history[0].content} {follow_up}"
    assert sources[0].file_name == gold, [s.file_name for s in sources]
    # the verbatim answer is scored against the standalone query: it quotes the fact
    assert fact in final.answer and not final.abstained, final.answer


def test_chinese_llm_rewrite_finds_it(knowledge_bases: Stack) -> None:
    kb, history, follow_up, gold, _ = ZH
    sources, final = ask(
        knowledge_bases.rag, kb, follow_up, history=history, answer_mode=pb.ANSWER_MODE_VERBATIM
    )
    print(f"query {final.search_query!r}; answer {final.answer!r}")
    assert final.search_query_source == pb.SEARCH_QUERY_SOURCE_LLM_REWRITE, final
    assert final.search_query != follow_up
    assert sources[0].file_name == gold, [s.file_name for s in sources]
    assert not final.abstained


@pytest.mark.parametrize(
    ("turn", "reason"),
    [
        (
            common_pb2.ChatTurn(role=common_pb2.CHAT_ROLE_UNSPECIFIED, content="x"),
            "INVALID_HISTORY_ROLE",
        ),
        (common_pb2.ChatTurn(role=common_pb2.CHAT_ROLE_USER, content="  "), "EMPTY_HISTORY_TURN"),
        (
            common_pb2.ChatTurn(role=common_pb2.CHAT_ROLE_USER, content="x" * 9000),
            "HISTORY_TURN_TOO_LONG",
        ),
    ],
)
def test_bad_history_is_invalid(
    knowledge_bases: Stack, turn: common_pb2.ChatTurn, reason: str
) -> None:
    with pytest.raises(grpc.RpcError) as info:
        ask(knowledge_bases.rag, KB, "How tall is it?", history=[turn])
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "history[0]" in (info.value.details() or "")
    detail = error_info_of(info.value)
    assert detail is not None and detail.reason == reason
