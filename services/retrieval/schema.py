"""The collection schema and the plain objects the retrieval logic works with.

One Milvus collection per knowledge base. Filterable attributes live in scalar
fields (a filter on a JSON field costs ~25x more on Milvus Lite); free-form
upload metadata goes into the `metadata` JSON field.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass, field
from typing import Any

# Field names.
F_ID = "id"
F_DOCUMENT_ID = "document_id"
F_CHUNK_INDEX = "chunk_index"
F_DOCUMENT_VERSION = "document_version"
F_TEXT = "text"
F_TITLE = "title"
F_HEADING_PATH = "heading_path"  # a JSON-encoded list of strings
F_START_OFFSET = "start_offset"
F_END_OFFSET = "end_offset"
F_TOKEN_COUNT = "token_count"
F_SOURCE = "source"
F_LANGUAGE = "language"
F_MEDIA_TYPE = "media_type"
F_METADATA = "metadata"
F_DENSE = "dense"
F_SPARSE = "sparse"
# Pages of a chunk (paginated documents); collections made before them lack these.
F_PAGE_START = "page_start"
F_PAGE_END = "page_end"
F_PAGE_LABEL = "page_label"
PAGE_FIELDS = (F_PAGE_START, F_PAGE_END, F_PAGE_LABEL)
# What BM25 indexes in newer collections: the text plus split code identifiers
# (services/retrieval/identifiers.py). Never returned.
F_BM25_TEXT = "bm25_text"
BM25_FUNCTION = "text_bm25"

# Largest size (UTF-8 bytes) of each VARCHAR field but `text` (a setting).
VARCHAR_LIMITS: dict[str, int] = {
    F_ID: 300,
    F_DOCUMENT_ID: 256,
    F_DOCUMENT_VERSION: 128,
    F_TITLE: 1_024,
    F_HEADING_PATH: 4_096,
    F_SOURCE: 1_024,
    F_LANGUAGE: 32,
    F_MEDIA_TYPE: 128,
    F_PAGE_LABEL: 160,
}


class ValueKind(enum.Enum):
    STRING = "string"
    INT = "int"
    JSON = "json"  # a value inside the metadata JSON field: string, number or bool


# Scalar fields a search may filter on, and their types.
FILTER_FIELDS: dict[str, ValueKind] = {
    F_DOCUMENT_ID: ValueKind.STRING,
    F_CHUNK_INDEX: ValueKind.INT,
    F_DOCUMENT_VERSION: ValueKind.STRING,
    F_SOURCE: ValueKind.STRING,
    F_LANGUAGE: ValueKind.STRING,
    F_MEDIA_TYPE: ValueKind.STRING,
    F_TITLE: ValueKind.STRING,
}
METADATA_PREFIX = "metadata."

# Every stored field a search or list returns (vectors excluded).
OUTPUT_FIELDS = [
    F_ID,
    F_DOCUMENT_ID,
    F_CHUNK_INDEX,
    F_DOCUMENT_VERSION,
    F_TEXT,
    F_TITLE,
    F_HEADING_PATH,
    F_START_OFFSET,
    F_END_OFFSET,
    F_TOKEN_COUNT,
    F_SOURCE,
    F_LANGUAGE,
    F_MEDIA_TYPE,
    F_METADATA,
]

COLLECTION_NAME_RE = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]{0,254}")
MIN_DIMENSION = 2
MAX_DIMENSION = 32_768


class Metric(enum.Enum):
    COSINE = "COSINE"
    L2 = "L2"
    IP = "IP"


class IndexType(enum.Enum):
    FLAT = "FLAT"
    IVF_FLAT = "IVF_FLAT"
    HNSW = "HNSW"
    AUTOINDEX = "AUTOINDEX"


class Language(enum.Enum):
    ENGLISH = "english"
    CHINESE = "chinese"


class SearchMode(enum.Enum):
    DENSE = "DENSE"
    SPARSE = "SPARSE"
    HYBRID = "HYBRID"


class FusionMethod(enum.Enum):
    RRF = "RRF"
    WEIGHTED = "WEIGHTED"


class FilterOp(enum.Enum):
    EQ = "=="
    NE = "!="
    IN = "in"
    LT = "<"
    LE = "<="
    GT = ">"
    GE = ">="


class UpsertMode(enum.Enum):
    REPLACE = "REPLACE"
    APPEND_BATCH = "APPEND_BATCH"


# Index build parameters each index type accepts, with their inclusive bounds.
INDEX_PARAM_BOUNDS: dict[IndexType, dict[str, tuple[int, int]]] = {
    IndexType.FLAT: {},
    IndexType.AUTOINDEX: {},
    IndexType.HNSW: {"M": (2, 2048), "efConstruction": (1, 65_536)},
    IndexType.IVF_FLAT: {"nlist": (1, 65_536)},
}
DEFAULT_INDEX_PARAMS: dict[IndexType, dict[str, int]] = {
    IndexType.FLAT: {},
    IndexType.AUTOINDEX: {},
    IndexType.HNSW: {"M": 16, "efConstruction": 200},
    IndexType.IVF_FLAT: {"nlist": 128},
}

# The Lucene/Milvus `_english_` stop words, spelled out because Milvus Lite's
# analyzer only takes an explicit list.
ENGLISH_STOP_WORDS = [
    "a", "an", "and", "are", "as", "at", "be", "but", "by", "for", "if", "in", "into",
    "is", "it", "no", "not", "of", "on", "or", "such", "that", "the", "their", "then",
    "there", "these", "they", "this", "to", "was", "will", "with",
]  # fmt: skip


def analyzer_params(language: Language) -> dict[str, Any]:
    """BM25 analyzer settings that Milvus Lite 3 and Milvus >= 2.5 both accept."""
    if language is Language.CHINESE:
        return {"tokenizer": "jieba"}
    return {
        "tokenizer": "standard",
        "filter": ["lowercase", {"type": "stop", "stop_words": ENGLISH_STOP_WORDS}],
    }


def chunk_id(document_id: str, chunk_index: int) -> str:
    return f"{document_id}:{chunk_index}"


@dataclass(frozen=True)
class CollectionSpec:
    name: str
    dimension: int
    metric: Metric = Metric.COSINE
    index_type: IndexType = IndexType.HNSW
    index_params: dict[str, int] = field(default_factory=dict)
    language: Language = Language.ENGLISH
    labels: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class CollectionInfo:
    spec: CollectionSpec
    sparse_enabled: bool
    chunk_count: int = 0
    #: the collection stores page fields (created after they were added)
    pages: bool = False
    #: the field the BM25 function reads: `bm25_text` (text + split identifiers) or `text`
    bm25_input: str = F_TEXT

    @property
    def output_fields(self) -> list[str]:
        """Every stored field a search or list returns (vectors and bm25_text excluded)."""
        return [*OUTPUT_FIELDS, *PAGE_FIELDS] if self.pages else list(OUTPUT_FIELDS)


@dataclass
class ChunkRecord:
    """One stored chunk (the vector only on the write path)."""

    document_id: str
    chunk_index: int
    text: str = ""
    document_version: str = ""
    title: str = ""
    heading_path: list[str] = field(default_factory=list)
    start_offset: int = 0
    end_offset: int = 0
    token_count: int = 0
    source: str = ""
    language: str = ""
    media_type: str = ""
    metadata: dict[str, Any] = field(default_factory=dict)
    vector: list[float] | None = None
    #: physical pages (1-based; 0: none) and their label text ("22", "22–23")
    page_start: int = 0
    page_end: int = 0
    page_label: str = ""

    @property
    def id(self) -> str:
        return chunk_id(self.document_id, self.chunk_index)


@dataclass(frozen=True)
class FilterSpec:
    """One structured filter condition; `value` is a str, int, float, bool or list."""

    field: str
    op: FilterOp
    value: Any


@dataclass(frozen=True)
class ScoredId:
    """One result of a single retriever: higher score is better."""

    id: str
    score: float


@dataclass
class SearchHit:
    chunk: ChunkRecord
    score: float
    dense_rank: int = 0
    sparse_rank: int = 0


@dataclass(frozen=True)
class DocumentSummary:
    document_id: str
    chunk_count: int
    document_version: str


@dataclass(frozen=True)
class Capabilities:
    backend: str  # "milvus-lite" or "milvus-server"
    server_version: str
    sparse_supported: bool
    hybrid_supported: bool
    index_types: tuple[IndexType, ...]
    analyzers: tuple[str, ...]


@dataclass(frozen=True)
class FusionSpec:
    method: FusionMethod | None = None
    rrf_k: int = 0
    dense_weight: float = 0.0
    sparse_weight: float = 0.0


@dataclass
class SearchQuery:
    collection: str
    vector: list[float] = field(default_factory=list)
    text: str = ""
    mode: SearchMode | None = None
    fusion: FusionSpec = field(default_factory=FusionSpec)
    top_k: int = 0
    min_score: float | None = None
    filters: list[FilterSpec] = field(default_factory=list)
    exclude_document_ids: list[str] = field(default_factory=list)
