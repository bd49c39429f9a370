"""Packing passages into the context window with the byte-estimate counter (deterministic;
the server tokenizer is exercised against the real LLM server in test_generation_llm.py)."""

from __future__ import annotations

import pytest

from services.common.errors import InvalidArgument
from services.generation.config import DEFAULT_PROMPT_TEMPLATE
from services.generation.packing import ByteEstimateCounter, pack
from services.generation.prompt import PromptTemplate
from services.generation.types import Passage

TEMPLATE = PromptTemplate.load(DEFAULT_PROMPT_TEMPLATE)
COUNTER = ByteEstimateCounter(1.0)
QUESTION = "What is said?"


def _text(messages: list) -> str:  # type: ignore[type-arg]
    return "\n".join(m.content for m in messages)


async def _tokens(text: str) -> int:
    (n,) = await COUNTER.count([text])
    return n


async def _fixed() -> int:
    return await _tokens(_text(TEMPLATE.render(QUESTION, [])))


def _passage(pid: str, score: float, size: int = 200) -> Passage:
    return Passage(pid, (pid + " ") * (size // (len(pid) + 1)), score)


class CountingCounter(ByteEstimateCounter):
    """The byte estimate, recording what it was asked to count."""

    def __init__(self, bytes_per_token: float) -> None:
        super().__init__(bytes_per_token)
        self.calls: list[int] = []

    async def count(self, texts):  # type: ignore[no-untyped-def]
        self.calls.append(len(texts))
        return await super().count(texts)


async def test_a_prompt_whose_byte_bound_fits_is_not_counted() -> None:
    passages = [_passage("a", 0.9), _passage("b", 0.1), _passage("c", 0.5)]
    counter = CountingCounter(1.0)
    packed = await pack(TEMPLATE, QUESTION, passages, budget_tokens=4000, counter=counter)
    assert [p.id for p in packed.used] == ["a", "b", "c"]  # the given order is kept
    assert packed.dropped == ()
    assert counter.calls == []  # no round trip to a tokenizer
    assert not packed.counted
    text = _text(packed.messages)
    assert packed.prompt_tokens == -(-len(text.encode()) // 4)  # the typical estimate


async def test_a_prompt_that_fits_by_count_is_counted_once() -> None:
    passages = [_passage("a", 0.9), _passage("b", 0.1), _passage("c", 0.5)]
    counter = CountingCounter(4.0)  # counts a quarter of the byte bound
    text_bytes = len(_text(TEMPLATE.build(QUESTION, passages)).encode())
    packed = await pack(
        TEMPLATE, QUESTION, passages, budget_tokens=text_bytes // 2, counter=counter
    )
    assert counter.calls == [1]  # the whole prompt, in one call
    assert packed.counted and packed.dropped == ()
    assert packed.prompt_tokens == (await counter.count([_text(packed.messages)]))[0]


async def test_lowest_scored_are_dropped_first_and_order_is_kept() -> None:
    passages = [_passage("a", 0.9), _passage("b", 0.1), _passage("c", 0.5), _passage("d", 0.7)]
    # room for the instruction, the question and about two passages
    budget = await _fixed() + 2 * 250  # a block costs ~235: two fit, three do not
    packed = await pack(TEMPLATE, QUESTION, passages, budget_tokens=budget, counter=COUNTER)
    assert [p.id for p in packed.used] == ["a", "d"]
    assert packed.dropped == ("b", "c")
    assert packed.prompt_tokens <= budget
    # what is sent really fits, and the kept passages are whole, renumbered from 1
    assert await _tokens(_text(packed.messages)) <= budget
    user = packed.messages[1].content
    assert f'<passage n="1">\n{passages[0].text.strip()}\n</passage>' in user
    assert f'<passage n="2">\n{passages[3].text.strip()}\n</passage>' in user


async def test_equal_scores_drop_the_later_passage_first() -> None:
    passages = [_passage("a", 0.5), _passage("b", 0.5), _passage("c", 0.5)]
    budget = await _fixed() + 2 * 250  # a block costs ~235: two fit, three do not
    packed = await pack(TEMPLATE, QUESTION, passages, budget_tokens=budget, counter=COUNTER)
    assert [p.id for p in packed.used] == ["a", "b"]
    assert packed.dropped == ("c",)


async def test_a_passage_that_does_not_fit_is_dropped_whole_never_cut() -> None:
    big = _passage("big", 0.2, size=2000)
    small = _passage("small", 0.9)
    budget = await _fixed() + 1000  # half of the big passage would fit
    packed = await pack(TEMPLATE, QUESTION, [big, small], budget_tokens=budget, counter=COUNTER)
    assert [p.id for p in packed.used] == ["small"]
    assert packed.dropped == ("big",)
    assert "big " not in _text(packed.messages)


async def test_when_the_best_passage_cannot_fit_the_request_is_refused() -> None:
    big = _passage("big", 0.9, size=2000)
    small = _passage("small", 0.2)
    budget = await _fixed() + 1000
    with pytest.raises(InvalidArgument) as err:
        await pack(TEMPLATE, QUESTION, [big, small], budget_tokens=budget, counter=COUNTER)
    assert err.value.reason == "PASSAGE_EXCEEDS_CONTEXT_WINDOW"
    assert err.value.metadata["passage_id"] == "big"


async def test_question_too_long_for_the_window() -> None:
    with pytest.raises(InvalidArgument) as err:
        await pack(TEMPLATE, "why " * 500, [_passage("a", 1.0)], budget_tokens=600, counter=COUNTER)
    assert err.value.reason == "QUESTION_TOO_LONG_FOR_CONTEXT"


async def test_byte_estimate_is_an_upper_bound_for_multibyte_text() -> None:
    assert await COUNTER.count(["abc", "北京", ""]) == [4, 7, 1]
    assert await ByteEstimateCounter(3.0).count(["abcdef"]) == [3]
