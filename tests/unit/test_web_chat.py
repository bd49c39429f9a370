"""Ask events as OpenAI chat completions and chunks (services/web/chat.py)."""

from __future__ import annotations

from ragmesh.client.results import AskResult
from ragmesh.common.v1 import common_pb2
from ragmesh.gateway.v1 import gateway_pb2 as pb
from services.web.chat import ChunkWriter, completion_json
from services.web.protocol import ChatCompletionRequest, conversation, knowledge_base_of

SOURCE = common_pb2.Citation(
    document_id="guide",
    file_name="guide.pdf",
    text="Milvus stores the vectors.",
    start_offset=10,
    end_offset=36,
    number=1,
    page_start=3,
    page_end=3,
    page_label="3",
)


def events(deltas: list[str], answer: str) -> list[pb.AskResponse]:
    cited = common_pb2.Citation()
    cited.CopyFrom(SOURCE)
    cited.cited = True
    return [
        pb.AskResponse(sources=pb.AskSources(sources=[SOURCE])),
        pb.AskResponse(queued=common_pb2.QueuePosition(position=1)),
        *[pb.AskResponse(delta=pb.AskDelta(text=d)) for d in deltas],
        pb.AskResponse(
            final=pb.AskFinal(
                answer=answer,
                citations=[cited],
                grounded=True,
                finish_reason="STOP",
                usage=common_pb2.TokenUsage(prompt_tokens=50, completion_tokens=7, total_tokens=57),
            )
        ),
    ]


def test_chunks_carry_role_sources_deltas_finish_citations_and_usage() -> None:
    writer = ChunkWriter("ragmesh/docs", "docs", include_usage=True)
    chunks = [c for e in events(["Milvus ", "[1]."], "Milvus [1].") for c in writer.on_event(e)]
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert chunks[0]["ragmesh"]["sources"][0]["location"] == "p. 3, chars 10–36"
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"])
    assert text == "Milvus [1]."
    finish = chunks[-2]
    assert finish["choices"][0]["finish_reason"] == "stop"
    citation = finish["ragmesh"]["citations"][0]
    assert (citation["number"], citation["cited"], citation["document_id"]) == (1, True, "guide")
    assert (citation["start_offset"], citation["end_offset"], citation["page_label"]) == (
        10,
        36,
        "3",
    )
    assert "answer" not in finish["ragmesh"]  # the streamed text is the answer
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["total_tokens"] == 57
    assert {c["id"] for c in chunks} == {writer.id}


def test_what_the_final_answer_adds_is_streamed_and_a_rewrite_travels_whole() -> None:
    writer = ChunkWriter("m", "kb")
    chunks = [c for e in events(["Milvus"], "Milvus [1].") for c in writer.on_event(e)]
    assert chunks[-2]["choices"][0]["delta"] == {"content": " [1]."}
    writer = ChunkWriter("m", "kb")
    chunks = [c for e in events(["Something"], "Not in the documents.") for c in writer.on_event(e)]
    assert chunks[-1]["ragmesh"]["answer"] == "Not in the documents."


def test_a_whole_completion() -> None:
    result = AskResult()
    for e in events(["Milvus [1]."], "Milvus [1]."):
        result.add(e)
    body = completion_json("ragmesh/docs", "docs", result)
    assert body["object"] == "chat.completion"
    assert body["choices"][0]["message"] == {"role": "assistant", "content": "Milvus [1]."}
    assert body["usage"] == {"prompt_tokens": 50, "completion_tokens": 7, "total_tokens": 57}
    assert [c["number"] for c in body["ragmesh"]["citations"]] == [1]
    assert body["ragmesh"]["grounded"] is True


def test_messages_become_a_question_and_history() -> None:
    req = ChatCompletionRequest.model_validate(
        {
            "model": "ragmesh/docs",
            "messages": [
                {"role": "system", "content": "be brief"},
                {"role": "user", "content": "What is Milvus?"},
                {"role": "assistant", "content": "A vector database [1]."},
                {"role": "assistant", "content": None, "tool_calls": []},
                {"role": "user", "content": [{"type": "text", "text": "Who makes it?"}]},
            ],
        }
    )
    conv = conversation(req)
    assert conv.question == "Who makes it?"
    assert [(t.role, t.content) for t in conv.history] == [
        ("user", "What is Milvus?"),
        ("assistant", "A vector database [1]."),
    ]
    assert knowledge_base_of("ragmesh/docs", "ragmesh/") == "docs"
    assert knowledge_base_of("docs", "ragmesh/") == "docs"


def test_the_search_query_travels_in_the_extension() -> None:
    final = pb.AskFinal(
        answer="330 metres [1].",
        finish_reason="STOP",
        search_query="How tall is the Eiffel Tower?",
        search_query_source=pb.SEARCH_QUERY_SOURCE_LLM_REWRITE,
    )
    result = AskResult()
    result.add(pb.AskResponse(final=final))
    ext = completion_json("ragmesh/docs", "docs", result)["ragmesh"]
    assert ext["search_query"] == "How tall is the Eiffel Tower?"
    assert ext["search_query_source"] == "SEARCH_QUERY_SOURCE_LLM_REWRITE"
    assert ext["search_query_fallback"] == ""
    assert result.search_query_source == "llm_rewrite"
