"""The Milvus schema and indexes of a knowledge base's collection: a row per
chunk with its dense vector, the filterable scalar fields, its pages, and
(where Milvus has full-text search) a BM25 sparse field computed from the
`bm25_text` field: the text plus its code identifiers split into words
(services/retrieval/identifiers.py; Milvus's BM25 function takes one input
field). With `identifiers=False` BM25 reads `text` itself, as collections
made before `bm25_text` existed do."""

from __future__ import annotations

from typing import Any

from pymilvus import DataType, Function, FunctionType, MilvusClient

from services.retrieval.config import MILVUS_VARCHAR_MAX
from services.retrieval.schema import (
    BM25_FUNCTION,
    F_BM25_TEXT,
    F_CHUNK_INDEX,
    F_DENSE,
    F_DOCUMENT_ID,
    F_DOCUMENT_VERSION,
    F_END_OFFSET,
    F_HEADING_PATH,
    F_ID,
    F_LANGUAGE,
    F_MEDIA_TYPE,
    F_METADATA,
    F_PAGE_END,
    F_PAGE_LABEL,
    F_PAGE_START,
    F_SOURCE,
    F_SPARSE,
    F_START_OFFSET,
    F_TEXT,
    F_TITLE,
    F_TOKEN_COUNT,
    VARCHAR_LIMITS,
    CollectionSpec,
    analyzer_params,
)


def build_schema(
    client: MilvusClient,
    spec: CollectionSpec,
    params: dict[str, Any],
    sparse: bool,
    description: str,
    identifiers: bool = True,
) -> tuple[Any, Any]:
    """(schema, index params) for `client.create_collection`."""
    schema = client.create_schema(
        auto_id=False, enable_dynamic_field=False, description=description
    )
    schema.add_field(F_ID, DataType.VARCHAR, is_primary=True, max_length=VARCHAR_LIMITS[F_ID])
    schema.add_field(F_DOCUMENT_ID, DataType.VARCHAR, max_length=VARCHAR_LIMITS[F_DOCUMENT_ID])
    schema.add_field(F_CHUNK_INDEX, DataType.INT64)
    schema.add_field(
        F_DOCUMENT_VERSION, DataType.VARCHAR, max_length=VARCHAR_LIMITS[F_DOCUMENT_VERSION]
    )
    analysed: dict[str, Any] = {
        "max_length": MILVUS_VARCHAR_MAX,
        "enable_analyzer": True,
        "analyzer_params": analyzer_params(spec.language),
    }
    bm25_input = F_BM25_TEXT if identifiers else F_TEXT
    if sparse and bm25_input == F_TEXT:
        schema.add_field(F_TEXT, DataType.VARCHAR, **analysed)
    else:
        schema.add_field(F_TEXT, DataType.VARCHAR, max_length=MILVUS_VARCHAR_MAX)
    for name in (F_TITLE, F_HEADING_PATH, F_SOURCE, F_LANGUAGE, F_MEDIA_TYPE, F_PAGE_LABEL):
        schema.add_field(name, DataType.VARCHAR, max_length=VARCHAR_LIMITS[name])
    for name in (F_START_OFFSET, F_END_OFFSET, F_TOKEN_COUNT, F_PAGE_START, F_PAGE_END):
        schema.add_field(name, DataType.INT64)
    if sparse and bm25_input == F_BM25_TEXT:
        schema.add_field(F_BM25_TEXT, DataType.VARCHAR, **analysed)
    schema.add_field(F_METADATA, DataType.JSON)
    schema.add_field(F_DENSE, DataType.FLOAT_VECTOR, dim=spec.dimension)
    index_params = client.prepare_index_params()
    index_params.add_index(
        F_DENSE, index_type=spec.index_type.value, metric_type=spec.metric.value, params=params
    )
    if sparse:
        schema.add_field(F_SPARSE, DataType.SPARSE_FLOAT_VECTOR)
        schema.add_function(
            Function(
                name=BM25_FUNCTION,
                function_type=FunctionType.BM25,
                input_field_names=[bm25_input],
                output_field_names=[F_SPARSE],
            )
        )
        index_params.add_index(F_SPARSE, index_type="SPARSE_INVERTED_INDEX", metric_type="BM25")
    return schema, index_params
