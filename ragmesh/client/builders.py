"""Building gateway requests from plain Python values (shared by both clients).

Enum arguments accept the protobuf value or a short name, case-insensitive:
`"hybrid"` or `SearchMode.SEARCH_MODE_HYBRID`, `"cosine"`, `"hnsw"`, `"chinese"`,
`"failed"`.
"""

from __future__ import annotations

import io
import os
from collections.abc import (
    AsyncIterator,
    Awaitable,
    Callable,
    Iterable,
    Iterator,
    Mapping,
    Sequence,
)
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, TypeVar

from google.protobuf import struct_pb2

from ragmesh.client.errors import DeadlineExceededError
from ragmesh.client.media import SNIFF_BYTES, guess_media_type
from ragmesh.common.v1 import common_pb2
from ragmesh.gateway.v1 import gateway_pb2

# 64 KiB pieces: far below any message limit, few enough messages to be cheap.
UPLOAD_CHUNK_BYTES = 64 * 1024

UploadSource = str | os.PathLike[str] | bytes | bytearray | memoryview | BinaryIO
FilterSpec = common_pb2.FilterCondition | tuple[str, str, Any]

_OPERATORS = {
    "eq": common_pb2.FILTER_OPERATOR_EQ,
    "==": common_pb2.FILTER_OPERATOR_EQ,
    "=": common_pb2.FILTER_OPERATOR_EQ,
    "ne": common_pb2.FILTER_OPERATOR_NE,
    "!=": common_pb2.FILTER_OPERATOR_NE,
    "in": common_pb2.FILTER_OPERATOR_IN,
    "lt": common_pb2.FILTER_OPERATOR_LT,
    "<": common_pb2.FILTER_OPERATOR_LT,
    "le": common_pb2.FILTER_OPERATOR_LE,
    "<=": common_pb2.FILTER_OPERATOR_LE,
    "gt": common_pb2.FILTER_OPERATOR_GT,
    ">": common_pb2.FILTER_OPERATOR_GT,
    "ge": common_pb2.FILTER_OPERATOR_GE,
    ">=": common_pb2.FILTER_OPERATOR_GE,
}


def _enum(enum_type: Any, prefix: str, value: int | str | None, what: str) -> int:
    """A protobuf enum value from itself, its full name or its short name."""
    if value is None or value == "":
        return 0
    if isinstance(value, int):
        return int(value)
    name = str(value).strip().upper().replace("-", "_")
    full = name if name.startswith(prefix) else f"{prefix}{name}"
    try:
        return int(enum_type.Value(full))
    except ValueError:
        names = enum_type.DESCRIPTOR.values_by_name
        choices = [n[len(prefix) :].lower() for n in names if not n.endswith("UNSPECIFIED")]
        raise ValueError(f"unknown {what} {value!r}; choose one of {', '.join(choices)}") from None


def search_mode(value: int | str | None) -> int:
    return _enum(common_pb2.SearchMode, "SEARCH_MODE_", value, "search mode")


def fusion_method(value: int | str | None) -> int:
    return _enum(common_pb2.FusionMethod, "FUSION_METHOD_", value, "fusion method")


def metric(value: int | str | None) -> int:
    return _enum(common_pb2.Metric, "METRIC_", value, "metric")


def index_type(value: int | str | None) -> int:
    return _enum(common_pb2.IndexType, "INDEX_TYPE_", value, "index type")


def text_language(value: int | str | None) -> int:
    return _enum(common_pb2.TextLanguage, "TEXT_LANGUAGE_", value, "language")


def answer_mode(value: int | str | None) -> int:
    """`verbatim`, `generative`, `auto` (or the enum's number)."""
    return _enum(gateway_pb2.AnswerMode, "ANSWER_MODE_", value, "answer mode")


#: one earlier turn of a conversation: ("user", "text"), {"role": "assistant",
#: "content": "text"} or a common_pb2.ChatTurn
TurnSpec = tuple[str, str] | Mapping[str, str] | common_pb2.ChatTurn


def chat_role(value: int | str | None) -> int:
    """`user` or `assistant` (or the enum's number)."""
    return _enum(common_pb2.ChatRole, "CHAT_ROLE_", value, "chat role")


def chat_history(turns: Sequence[TurnSpec] | None) -> list[common_pb2.ChatTurn]:
    """Ask's history, oldest first, from tuples, dicts or ChatTurn messages."""
    out: list[common_pb2.ChatTurn] = []
    for turn in turns or ():
        if isinstance(turn, common_pb2.ChatTurn):
            out.append(turn)
            continue
        role, content = (turn["role"], turn["content"]) if isinstance(turn, Mapping) else turn
        out.append(common_pb2.ChatTurn(role=chat_role(role), content=content))  # type: ignore[arg-type]
    return out


def job_state(value: int | str | None) -> int:
    return _enum(gateway_pb2.JobState, "JOB_STATE_", value, "job state")


def short_name(enum_type: Any, value: int) -> str:
    """`JOB_STATE_SUCCEEDED` → `succeeded` (for display)."""
    full: str = enum_type.Name(value)
    parts = full.split("_")
    # Drop the enum's prefix: the words the enum name contributes (JOB_STATE_, SEARCH_MODE_).
    prefix_words = (
        2 if parts[0] in {"JOB", "SEARCH", "DOCUMENT", "FUSION", "INDEX", "TEXT", "ANSWER"} else 1
    )
    return "_".join(parts[prefix_words:]).lower()


def to_struct(values: Mapping[str, Any] | None) -> struct_pb2.Struct | None:
    if values is None:
        return None
    struct = struct_pb2.Struct()
    try:
        struct.update(dict(values))
    except OverflowError as exc:
        # A Struct's numbers are doubles: an int past their range (JSON allows any).
        raise ValueError(f"a number out of range (numbers are doubles, ±1.8e308): {exc}") from exc
    return struct


def filter_condition(field: str, operator: str, value: Any) -> common_pb2.FilterCondition:
    """`filter_condition("language", "==", "en")`, `("chunk_index", "in", [0, 1])`."""
    op = _OPERATORS.get(operator.strip().lower())
    if op is None:
        raise ValueError(f"unknown filter operator {operator!r}; use one of {sorted(_OPERATORS)}")
    cond = common_pb2.FilterCondition(field=field, operator=op)
    if isinstance(value, (list, tuple)):
        cond.value.list_value.extend(list(value))
    elif isinstance(value, bool):
        cond.value.bool_value = value
    elif isinstance(value, (int, float)):
        cond.value.number_value = float(value)
    else:
        cond.value.string_value = str(value)
    return cond


def filters_of(filters: Sequence[FilterSpec] | None) -> list[common_pb2.FilterCondition]:
    out: list[common_pb2.FilterCondition] = []
    for spec in filters or ():
        if isinstance(spec, common_pb2.FilterCondition):
            out.append(spec)
        else:
            out.append(filter_condition(*spec))
    return out


def fusion_of(
    fusion: common_pb2.Fusion | str | None,
) -> common_pb2.Fusion | None:
    if fusion is None or isinstance(fusion, common_pb2.Fusion):
        return fusion
    return common_pb2.Fusion(method=fusion_method(fusion))  # type: ignore[arg-type]


def search_request(
    knowledge_base_id: str,
    query: str,
    *,
    top_k: int = 0,
    mode: int | str | None = None,
    fusion: common_pb2.Fusion | str | None = None,
    min_score: float | None = None,
    filters: Sequence[FilterSpec] | None = None,
    rerank: bool | None = None,
) -> gateway_pb2.SearchRequest:
    req = gateway_pb2.SearchRequest(
        knowledge_base_id=knowledge_base_id,
        query=query,
        top_k=top_k,
        mode=search_mode(mode),  # type: ignore[arg-type]
        filters=filters_of(filters),
    )
    fusion_msg = fusion_of(fusion)
    if fusion_msg is not None:
        req.fusion.CopyFrom(fusion_msg)
    if min_score is not None:
        req.min_score = min_score
    if rerank is not None:
        req.rerank = rerank
    return req


def ask_request(
    knowledge_base_id: str,
    question: str,
    *,
    top_k: int = 0,
    mode: int | str | None = None,
    filters: Sequence[FilterSpec] | None = None,
    max_tokens: int = 0,
    temperature: float | None = None,
    rerank: bool | None = None,
    answer_mode_: int | str | None = None,
    require_citations: bool = False,
    history: Sequence[TurnSpec] | None = None,
) -> gateway_pb2.AskRequest:
    req = gateway_pb2.AskRequest(
        history=chat_history(history),
        knowledge_base_id=knowledge_base_id,
        question=question,
        top_k=top_k,
        mode=search_mode(mode),  # type: ignore[arg-type]
        filters=filters_of(filters),
        max_tokens=max_tokens,
        answer_mode=answer_mode(answer_mode_),  # type: ignore[arg-type]
        require_citations=require_citations,
    )
    if temperature is not None:
        req.temperature = temperature
    if rerank is not None:
        req.rerank = rerank
    return req


def create_knowledge_base_request(
    knowledge_base_id: str,
    *,
    description: str = "",
    language: int | str | None = None,
    metric_: int | str | None = None,
    index_type_: int | str | None = None,
    index_params: Mapping[str, Any] | None = None,
    rerank: bool = False,
    answer_mode_: int | str | None = None,
    model: str = "",
) -> gateway_pb2.CreateKnowledgeBaseRequest:
    return gateway_pb2.CreateKnowledgeBaseRequest(
        knowledge_base_id=knowledge_base_id,
        description=description,
        language=text_language(language),  # type: ignore[arg-type]
        metric=metric(metric_),  # type: ignore[arg-type]
        index_type=index_type(index_type_),  # type: ignore[arg-type]
        index_params=to_struct(index_params),
        rerank=rerank,
        answer_mode=answer_mode(answer_mode_),  # type: ignore[arg-type]
        model=model,
    )


@dataclass
class OpenedSource:
    """An upload source opened for streaming: its name, media type and a reader."""

    file_name: str
    media_type: str
    head: bytes
    stream: BinaryIO
    owned: bool  # close `stream` when done
    start: int | None = None  # position of `head` in a seekable stream

    def close(self) -> None:
        if self.owned:
            self.stream.close()

    def rewind(self) -> bool:
        """Back to just after `head`, to stream the bytes again; False when the
        stream cannot seek."""
        if self.start is None:
            return False
        self.stream.seek(self.start + len(self.head))
        return True


def open_source(source: UploadSource, file_name: str = "", media_type: str = "") -> OpenedSource:
    """Open a path, bytes or a binary file object for upload; sniff its media type."""
    owned = False
    stream: BinaryIO
    if isinstance(source, (bytes, bytearray, memoryview)):
        if not file_name:
            raise ValueError("uploading bytes needs a file_name (it names the document)")
        stream = io.BytesIO(bytes(source))
    elif isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if not path.is_file():
            raise FileNotFoundError(f"no such file: {path}")
        stream = path.open("rb")
        owned = True
        file_name = file_name or path.name
    else:
        stream = source
        file_name = file_name or Path(str(getattr(source, "name", "") or "")).name
        if not file_name:
            raise ValueError("uploading a file object without a name needs a file_name")
    try:
        start: int | None = stream.tell() if stream.seekable() else None
    except (AttributeError, OSError):
        start = None
    head = stream.read(SNIFF_BYTES)
    return OpenedSource(
        file_name=file_name,
        media_type=media_type or guess_media_type(file_name, head),
        head=head,
        stream=stream,
        owned=owned,
        start=start,
    )


def upload_requests(
    header: gateway_pb2.UploadHeader,
    opened: OpenedSource,
    chunk_bytes: int = UPLOAD_CHUNK_BYTES,
) -> Iterator[gateway_pb2.UploadDocumentRequest]:
    """The client stream of an upload: the header, then the bytes in pieces."""
    yield gateway_pb2.UploadDocumentRequest(header=header)
    pending = opened.head
    while True:
        while len(pending) < chunk_bytes:
            more = opened.stream.read(chunk_bytes - len(pending))
            if not more:
                break
            pending += more
        if not pending:
            return
        yield gateway_pb2.UploadDocumentRequest(data=pending[:chunk_bytes])
        pending = pending[chunk_bytes:]


def upload_header(
    knowledge_base_id: str,
    opened: OpenedSource,
    *,
    document_id: str = "",
    metadata: Mapping[str, Any] | None = None,
) -> gateway_pb2.UploadHeader:
    return gateway_pb2.UploadHeader(
        knowledge_base_id=knowledge_base_id,
        document_id=document_id,
        file_name=opened.file_name,
        media_type=opened.media_type,
        metadata=to_struct(metadata),
    )


TERMINAL_JOB_STATES = frozenset(
    {gateway_pb2.JOB_STATE_SUCCEEDED, gateway_pb2.JOB_STATE_FAILED, gateway_pb2.JOB_STATE_CANCELLED}
)


def job_is_done(job: gateway_pb2.IngestionJob) -> bool:
    return job.state in TERMINAL_JOB_STATES


def job_wait_timeout(
    job_id: str, job: gateway_pb2.IngestionJob | None, timeout: float
) -> DeadlineExceededError:
    """wait_for_job's error when `timeout` passed first (`job`: the state last seen)."""
    state = short_name(gateway_pb2.JobState, job.state) if job is not None else "not seen"
    return DeadlineExceededError(
        f"job {job_id} still {state} after {timeout:.0f}s", reason="JOB_WAIT_TIMEOUT"
    )


Page = TypeVar("Page")


def pages(fetch: Callable[[str], Page]) -> Iterator[Page]:
    """Every page of a List call: `fetch(page_token)` until no next_page_token."""
    token = ""
    while True:
        page = fetch(token)
        yield page
        token = page.next_page_token  # type: ignore[attr-defined]
        if not token:
            return


async def apages(fetch: Callable[[str], Awaitable[Page]]) -> AsyncIterator[Page]:
    """`pages` for the asyncio client."""
    token = ""
    while True:
        page = await fetch(token)
        yield page
        token = page.next_page_token  # type: ignore[attr-defined]
        if not token:
            return


def text_request(
    knowledge_base_id: str, document_id: str, offset: int, max_chars: int
) -> gateway_pb2.GetDocumentTextRequest:
    return gateway_pb2.GetDocumentTextRequest(
        knowledge_base_id=knowledge_base_id,
        document_id=document_id,
        offset=offset,
        max_chars=max_chars,
    )


def text_pages(
    fetch: Callable[[int], gateway_pb2.GetDocumentTextResponse],
) -> Iterator[gateway_pb2.GetDocumentTextResponse]:
    """Every page of a document's text: `fetch(offset)` until no next_offset."""
    offset = 0
    while True:
        page = fetch(offset)
        yield page
        offset = page.next_offset
        if not offset:
            return


def download(
    messages: Iterable[gateway_pb2.DownloadDocumentResponse],
) -> tuple[gateway_pb2.DownloadHeader, bytes]:
    """A DownloadDocument stream gathered: its header and the bytes."""
    header, data = gateway_pb2.DownloadHeader(), bytearray()
    for message in messages:
        if message.WhichOneof("payload") == "header":
            header.CopyFrom(message.header)
        else:
            data += message.data
    return header, bytes(data)
