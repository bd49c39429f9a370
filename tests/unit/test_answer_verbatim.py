"""Choosing a verbatim answer's sentences: scores, budget, order, duplicates, offsets."""

from __future__ import annotations

from services.gateway.answers.verbatim import (
    Budget,
    Passage,
    Scored,
    Selection,
    candidates,
    heading_like,
    lexical_overlaps,
    select,
    terms,
)

DOC = (
    "SQLite is a C library. It implements a small, fast SQL database engine. "
    "Version 3.0 was released in 2004. The project is in the public domain."
)


def vec(text: str) -> list[float]:
    """A stand-in embedding: bag of a few words (the test is about selection; the
    real model is used end to end in tests/e2e/test_verbatim_answers.py)."""
    words = ["sqlite", "library", "engine", "released", "2004", "domain", "fast"]
    lowered = text.lower()
    return [1.0 if w in lowered else 0.0 for w in words] + [0.1]


def test_terms_drop_question_words_and_make_chinese_bigrams() -> None:
    assert terms("What is the capital of France?") == ["capital", "france"]
    assert terms("北京是什么") == ["北京", "京是"]
    assert terms("How many libraries") == ["librarie"]  # a plural s dropped, stems match


def test_lexical_overlap_weighs_rare_terms() -> None:
    scores = lexical_overlaps(
        "When was SQLite released?", ["SQLite was released in 2004.", "SQLite is small."]
    )
    assert scores[0] == 1.0 and 0 < scores[1] < 0.5


def test_candidates_carry_document_offsets_and_skip_repeats() -> None:
    text = DOC
    first = Passage(1, "sqlite.txt", text[:72], 0)
    # An overlapping chunk of the same document, and the same words in another one.
    second = Passage(2, "sqlite.txt", text[23:], 23)
    third = Passage(3, "copy.txt", "SQLite is a C library.", 500)
    cands = candidates([first, second, third], 400)
    assert [c.text for c in cands] == [
        "SQLite is a C library.",
        "It implements a small, fast SQL database engine.",
        "Version 3.0 was released in 2004.",
        "The project is in the public domain.",
    ]
    for c in cands:
        assert DOC[c.document_start : c.document_end] == c.text


def test_select_answers_with_the_best_sentences_in_reading_order() -> None:
    passages = [Passage(1, "a", DOC, 100)]
    cands = candidates(passages, 400)
    question = "When was SQLite version 3.0 released?"
    chosen = select(question, vec(question), cands, [vec(c.text) for c in cands], Budget())
    texts = [s.candidate.text for s in chosen.chosen]
    assert "Version 3.0 was released in 2004." in texts
    starts = [s.candidate.sentence.start for s in chosen.chosen]
    assert starts == sorted(starts)
    assert 0 < chosen.relevance <= 1.0


def test_budget_limits_sentences_and_characters() -> None:
    passages = [Passage(1, "a", DOC, 0)]
    cands = candidates(passages, 400)
    question = "SQLite library engine released 2004 domain fast"
    vectors = [vec(c.text) for c in cands]
    one = select(question, vec(question), cands, vectors, Budget(max_sentences=1))
    assert len(one.chosen) == 1
    short = select(question, vec(question), cands, vectors, Budget(max_chars=40, max_score_drop=9))
    assert sum(len(s.candidate.text) for s in short.chosen) <= 40
    wide = select(question, vec(question), cands, vectors, Budget(max_score_drop=9))
    assert len(wide.chosen) == 3


def test_a_sentence_longer_than_the_budget_is_offered_as_clauses() -> None:
    long = "，".join(f"第{i}个条款说明了很多很多很多的事情" for i in range(30)) + "。"
    cands = candidates([Passage(1, "a", long, 10)], 100)
    assert cands and all(len(c.text) <= 100 for c in cands)
    for c in cands:
        assert long[c.document_start - 10 : c.document_end - 10] == c.text


def test_no_candidates_means_no_relevance() -> None:
    chosen = select("anything", [1.0], [], [], Budget())
    assert chosen.chosen == [] and chosen.relevance == 0.0


def test_headings_and_titles_are_not_answers() -> None:
    for title in ("# ragmesh overview", "## Who made ragmesh", "Who made ragmesh", "向量检索简介"):
        assert heading_like(title), title
    for sentence in (
        "ragmesh is open source.",
        "长江是中国最长的河流。",
        "- NULL, INTEGER, REAL, TEXT and BLOB are the storage classes of SQLite",
    ):
        assert not heading_like(sentence), sentence
    text = "# SQLite\n\nSQLite is small.\n\nWho made it\n\nD. Richard Hipp wrote it."
    cands = candidates([Passage(1, "d", text, 0)], 400)
    assert [c.text for c in cands] == ["SQLite is small.", "D. Richard Hipp wrote it."]


def test_the_abstention_threshold_is_the_knowledge_base_models() -> None:
    from services.gateway.answers.compose import AnswerComposer
    from services.gateway.config import AnswerSettings

    settings = AnswerSettings(
        abstain_below=0.4, abstain_below_by_model={"universal-sentence-encoder-multilingual-3": 0.2}
    )
    assert settings.abstain_threshold("universal-sentence-encoder-multilingual-3") == 0.2
    assert settings.abstain_threshold("sentence-transformers/all-MiniLM-L6-v2") == 0.4
    assert settings.abstain_threshold("") == 0.4
    composer = AnswerComposer(None, settings)  # type: ignore[arg-type]  # no RPC here
    passage = Passage(1, "d", "A sentence.", 0)
    chosen = [Scored(candidates([passage], 400)[0], 0.3, 0.3)]
    # The same signal is enough for the multilingual model, not for MiniLM.
    assert not composer.abstains(
        Selection(chosen, 0.3), "universal-sentence-encoder-multilingual-3"
    )
    assert composer.abstains(Selection(chosen, 0.3), "sentence-transformers/all-MiniLM-L6-v2")
    assert composer.abstains(Selection([], 0.9), "universal-sentence-encoder-multilingual-3")
