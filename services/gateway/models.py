"""Which embedding model a new knowledge base gets: the one named at creation, else the
one configured for its language (Chinese → the multilingual model, which understands
Chinese; English → the embedding service's default, MiniLM)."""

from __future__ import annotations

from ragmesh.common.v1 import common_pb2
from services.common.models import canonical_model_name


def model_for(requested: str, language: int, *, chinese_model: str, english_model: str) -> str:
    """The model name to ask the embedding service for ("" = its default)."""
    if requested.strip():
        return canonical_model_name(requested)
    if language == common_pb2.TEXT_LANGUAGE_CHINESE:
        return canonical_model_name(chinese_model) if chinese_model else ""
    return canonical_model_name(english_model) if english_model else ""
