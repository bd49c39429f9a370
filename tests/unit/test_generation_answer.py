"""AnswerGenerator without an LLM: input validation, abstention (proved not to call the LLM
by pointing it at a port where nothing listens), question language, settings."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from devstack.procs import free_port
from services.common.errors import InvalidArgument, Unavailable
from services.generation.answer import AnswerEvent
from services.generation.config import GenerationSettings
from services.generation.language import detect_language, pick_message
from services.generation.server import GenerationService
from services.generation.types import AnswerDelta, AnswerRequest, FinalAnswer, FinishReason, Passage


@pytest.fixture(scope="module")
async def dead_llm_service():  # type: ignore[no-untyped-def]
    """The service with its LLM at a loopback port nothing listens on."""
    settings = GenerationSettings(
        llm_base_url=f"http://127.0.0.1:{free_port()}/v1",
        llm_max_retries=0,
        max_passages=5,
        max_passage_chars=100,
        max_question_chars=50,
        max_tokens_max=512,
        min_relevance=0.3,
    )
    service = GenerationService(settings)
    yield service
    await service.close()


async def _collect(service: GenerationService, request: AnswerRequest) -> list[AnswerEvent]:
    return [event async for event in service.generator.generate(request)]


P = Passage("d:0", "Some text.", 0.9)


@pytest.mark.parametrize(
    ("request_", "reason", "field"),
    [
        (AnswerRequest("", (P,)), "EMPTY_QUESTION", "question"),
        (AnswerRequest(" \n\t ", (P,)), "EMPTY_QUESTION", "question"),
        (AnswerRequest("x" * 51, (P,)), "QUESTION_TOO_LONG", "question"),
        (AnswerRequest("q?", (P,) * 6), "TOO_MANY_PASSAGES", "passages"),
        (
            AnswerRequest("q?", (Passage("a", "x" * 101, 1.0),)),
            "PASSAGE_TOO_LONG",
            "passages[0].text",
        ),
        (AnswerRequest("q?", (P, Passage("", "x", 1.0))), "MISSING_PASSAGE_ID", "passages[1].id"),
        (AnswerRequest("q?", (P, P)), "DUPLICATE_PASSAGE_ID", "passages[1].id"),
        (AnswerRequest("q?", (Passage("a", "  ", 1.0),)), "EMPTY_PASSAGE", "passages[0].text"),
        (
            AnswerRequest("q?", (Passage("a", "x", 1.0, title="t" * 1001),)),
            "PASSAGE_FIELD_TOO_LONG",
            "passages[0].title",
        ),
        (
            AnswerRequest("q?", (Passage("a", "x", float("nan")),)),
            "INVALID_PASSAGE_SCORE",
            "passages[0].score",
        ),
        (AnswerRequest("q?", (P,), max_tokens=513), "MAX_TOKENS_OUT_OF_RANGE", "max_tokens"),
        (AnswerRequest("q?", (P,), max_tokens=-1), "MAX_TOKENS_OUT_OF_RANGE", "max_tokens"),
        (AnswerRequest("q?", (P,), temperature=2.5), "TEMPERATURE_OUT_OF_RANGE", "temperature"),
        (AnswerRequest("q?", (P,), temperature=-0.1), "TEMPERATURE_OUT_OF_RANGE", "temperature"),
        (
            AnswerRequest("q?", (P,), min_relevance=float("nan")),
            "INVALID_MIN_RELEVANCE",
            "min_relevance",
        ),
    ],
)
async def test_bad_input_is_invalid_argument_with_a_reason(
    dead_llm_service: GenerationService, request_: AnswerRequest, reason: str, field: str
) -> None:
    with pytest.raises(InvalidArgument) as err:
        await _collect(dead_llm_service, request_)
    assert err.value.reason == reason
    assert err.value.metadata["field"] == field
    assert err.value.message


@pytest.mark.parametrize(
    ("question", "passages", "min_relevance", "language"),
    [
        ("What is the capital of France?", (), None, "en"),
        ("法国的首都是哪里？", (), None, "zh"),
        (
            "What is the capital of France?",
            (Passage("a", "x", 0.1), Passage("b", "y", 0.29)),
            None,
            "en",
        ),
        ("法国的首都是哪里？", (Passage("a", "x", 0.9),), 0.95, "zh"),  # request override
    ],
)
async def test_abstains_without_calling_the_llm(
    dead_llm_service: GenerationService,
    question: str,
    passages: tuple[Passage, ...],
    min_relevance: float | None,
    language: str,
) -> None:
    events = await _collect(
        dead_llm_service, AnswerRequest(question, passages, min_relevance=min_relevance)
    )
    *deltas, final = events
    assert isinstance(final, FinalAnswer)
    expected = dead_llm_service.settings.abstention_messages[language]
    assert [d.text for d in deltas if isinstance(d, AnswerDelta)] == [expected]
    assert final.answer == expected
    assert final.abstained and not final.grounded
    assert final.finish_reason is FinishReason.ABSTAINED
    assert final.used_passage_ids == ()
    assert final.dropped_passage_ids == tuple(p.id for p in passages)
    assert final.citations == () and final.usage.total_tokens == 0
    assert final.model == ""


async def test_a_relevant_passage_does_reach_the_dead_llm(
    dead_llm_service: GenerationService,
) -> None:
    """The counterpart of the abstention tests: with one passage above the threshold the
    LLM is called, and being unreachable it is UNAVAILABLE."""
    request = AnswerRequest("What?", (Passage("a", "x", 0.1), Passage("b", "y", 0.3)))
    with pytest.raises(Unavailable) as err:
        await _collect(dead_llm_service, request)
    assert err.value.reason == "LLM_UNAVAILABLE"
    assert "unreachable" in err.value.message


@pytest.mark.parametrize(
    ("text", "language"),
    [
        ("What is the capital of France?", "en"),
        ("法国的首都是哪里？", "zh"),
        ("Milvus 是什么？", "zh"),
        ("怎么用 Python 连接 Milvus server 做 hybrid search?", "zh"),
        ("Explain the BM25 function in Milvus (中文名: 全文检索) please", "en"),
        ("東京はどこですか", "ja"),
        ("서울은 어디에 있나요?", "ko"),
        ("1234 ?!", "en"),
    ],
)
def test_question_language(text: str, language: str) -> None:
    assert detect_language(text) == language


def test_abstention_message_falls_back_to_english() -> None:
    messages = {"en": "Not found.", "zh": "未找到。"}
    assert pick_message(messages, "ko") == "Not found."
    assert pick_message(messages, "zh") == "未找到。"


def test_settings_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(
        "RAGMESH_GENERATION_ABSTENTION_MESSAGES",
        '{"en": "Nothing.", "zh": "没有。", "fr": "Rien."}',
    )
    monkeypatch.setenv("RAGMESH_GENERATION_MIN_RELEVANCE", "0.42")
    monkeypatch.setenv("RAGMESH_GENERATION_TOKEN_COUNTING", "estimate")
    settings = GenerationSettings()
    assert settings.abstention_messages["fr"] == "Rien."
    assert settings.min_relevance == 0.42
    assert settings.token_counting == "estimate"


@pytest.mark.parametrize(
    "kwargs",
    [
        {"abstention_messages": {"zh": "没有。"}},
        {"max_tokens_default": 600, "max_tokens_max": 512},
        {"context_window_tokens": 1024, "max_tokens_max": 1000},
        {"token_counting": "magic"},
        {"temperature": 3.0},
    ],
)
def test_inconsistent_settings_are_refused(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        GenerationSettings(**kwargs)  # type: ignore[arg-type]
