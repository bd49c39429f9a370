"""ChunkDocument's logic: validate, detect, parse, normalise, split.

Plain objects in and out; no grpc here (server.py translates).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from services.chunking import media
from services.chunking.config import ChunkingSettings
from services.chunking.pages import PageSpan
from services.chunking.parsing import Document, ParseLimits, assemble, parse
from services.chunking.splitter import Splitter
from services.chunking.tokens import TokenCounter
from services.common.errors import InvalidArgument, ResourceExhausted
from services.common.models import minilm_model_dir

log = logging.getLogger("ragmesh.chunking")

#: Bytes a serialised Chunk costs besides its text, heading path, title and ids
#: (tags, lengths, five varints): used to refuse early a response that cannot be sent.
CHUNK_OVERHEAD_BYTES = 40


@dataclass
class ChunkRequest:
    content: bytes | None = None
    text: str | None = None
    media_type: str = ""
    document_id: str = ""
    file_name: str = ""
    max_tokens: int = 0
    overlap_tokens: int = -1
    include_normalized_text: bool = False


@dataclass
class ChunkResult:
    index: int
    text: str
    start: int
    end: int
    token_count: int
    heading_path: tuple[str, ...]


@dataclass
class ChunkedDocument:
    chunks: list[ChunkResult]
    media_type: str
    title: str
    text: str
    tokenizer: str
    total_tokens: int
    invalid_utf8_replacements: int
    timings: dict[str, float] = field(default_factory=dict)
    #: the page map (paginated formats): chunk offsets → pages (services/chunking/pages.py)
    pages: list[PageSpan] = field(default_factory=list)


def load_counter(settings: ChunkingSettings) -> TokenCounter:
    path = (
        Path(settings.tokenizer_path)
        if settings.tokenizer_path
        else minilm_model_dir() / "tokenizer.json"
    )
    return TokenCounter(path, settings.tokenizer_name)


class Chunker:
    def __init__(
        self,
        settings: ChunkingSettings,
        counter: TokenCounter,
        max_response_bytes: int | None = None,
    ) -> None:
        self.settings = settings
        self.counter = counter
        self.max_response_bytes = max_response_bytes
        self.parse_limits = ParseLimits(
            max_pdf_pages=settings.max_pdf_pages, max_html_depth=settings.max_html_depth
        )

    def limits(self, max_tokens: int, overlap_tokens: int) -> tuple[int, int]:
        """The request's (max_tokens, overlap_tokens) with defaults applied, validated."""
        s = self.settings
        special = self.counter.special_tokens
        if max_tokens < 0:
            raise InvalidArgument(
                f"max_tokens must be positive (0 for the default {s.default_max_tokens}), "
                f"got {max_tokens}",
                reason="MAX_TOKENS_OUT_OF_RANGE",
                metadata={"max_tokens": max_tokens},
            )
        if max_tokens > s.model_max_tokens:
            raise InvalidArgument(
                f"max_tokens {max_tokens} exceeds the embedding model's limit of "
                f"{s.model_max_tokens} tokens ({self.counter.name})",
                reason="MAX_TOKENS_OUT_OF_RANGE",
                metadata={"max_tokens": max_tokens, "limit": s.model_max_tokens},
            )
        max_tokens = max_tokens or min(s.default_max_tokens, s.model_max_tokens)
        if max_tokens <= special:
            raise InvalidArgument(
                f"max_tokens {max_tokens} leaves no room for text: the model adds "
                f"{special} special tokens to every chunk",
                reason="MAX_TOKENS_OUT_OF_RANGE",
                metadata={"max_tokens": max_tokens, "minimum": special + 1},
            )
        budget = max_tokens - special
        if overlap_tokens == -1:
            # A configured default never makes a small max_tokens invalid.
            overlap_tokens = min(s.default_overlap_tokens, budget // 2)
        if overlap_tokens < 0:
            raise InvalidArgument(
                f"overlap_tokens must be >= 0 (or -1 for the default), got {overlap_tokens}",
                reason="INVALID_OVERLAP",
                metadata={"overlap_tokens": overlap_tokens},
            )
        if overlap_tokens >= budget:
            raise InvalidArgument(
                f"overlap_tokens {overlap_tokens} must be smaller than max_tokens "
                f"{max_tokens} minus the {special} special tokens, i.e. below {budget}",
                reason="OVERLAP_TOO_LARGE",
                metadata={"overlap_tokens": overlap_tokens, "max_tokens": max_tokens},
            )
        return max_tokens, overlap_tokens

    def _check_size(self, size: int) -> None:
        limit = self.settings.max_document_bytes
        if size > limit:
            raise ResourceExhausted(
                f"document is {size} bytes; the limit is {limit} bytes "
                "(RAGMESH_CHUNKING_MAX_DOCUMENT_BYTES)",
                reason="DOCUMENT_TOO_LARGE",
                metadata={"size_bytes": size, "limit_bytes": limit},
            )

    def parse(self, req: ChunkRequest) -> tuple[Document, str, int]:
        """Validated, parsed and normalised: (document, media type, replacements)."""
        if req.text is not None:
            self._check_size(len(req.text.encode("utf-8", errors="surrogatepass")))
            if not req.text:
                raise InvalidArgument("the document text is empty", reason="EMPTY_DOCUMENT")
            parsed, replaced = parse(req.text, media.PLAIN, limits=self.parse_limits)
            media_type = media.PLAIN
        else:
            content = req.content or b""
            self._check_size(len(content))
            if not content:
                raise InvalidArgument(
                    "the document is empty (no content bytes and no text)",
                    reason="EMPTY_DOCUMENT",
                )
            resolved = media.resolve(content, req.media_type, req.file_name)
            media_type = resolved.essence
            parsed, replaced = parse(content, media_type, resolved.charset, self.parse_limits)
        doc = assemble(parsed, fallback_title=req.file_name)
        if not doc.text:
            raise InvalidArgument(
                f"the {media_type} document contains no text"
                + (" (a scanned PDF needs OCR first)" if media_type == media.PDF else ""),
                reason="NO_TEXT_CONTENT",
                metadata={"media_type": media_type},
            )
        return doc, media_type, replaced

    def chunk(self, req: ChunkRequest, check: Callable[[], None] | None = None) -> ChunkedDocument:
        max_tokens, overlap = self.limits(req.max_tokens, req.overlap_tokens)
        t0 = time.perf_counter()
        doc, media_type, replaced = self.parse(req)
        t1 = time.perf_counter()
        offsets = self.counter.offsets(doc.text)
        t2 = time.perf_counter()
        splitter = Splitter(self.counter, max_tokens, overlap, self.settings.max_chunk_chars)
        self._refuse_oversized_response(req, doc, len(offsets), splitter)
        spans = splitter.split(doc, offsets, check)
        t3 = time.perf_counter()
        chunks = [
            ChunkResult(i, doc.text[s.start : s.end], s.start, s.end, s.token_count, s.heading_path)
            for i, s in enumerate(spans)
        ]
        return ChunkedDocument(
            chunks=chunks,
            media_type=media_type,
            title=doc.title,
            text=doc.text,
            tokenizer=self.counter.name,
            total_tokens=sum(c.token_count for c in chunks),
            invalid_utf8_replacements=replaced,
            timings={"parse_s": t1 - t0, "tokenize_s": t2 - t1, "split_s": t3 - t2},
            pages=doc.pages,
        )

    def _refuse_oversized_response(
        self, req: ChunkRequest, doc: Document, tokens: int, splitter: Splitter
    ) -> None:
        """RESOURCE_EXHAUSTED before splitting when the chunks cannot fit in one message.

        An estimate: text bytes grow by the overlap's share, plus per-chunk overhead.
        """
        if self.max_response_bytes is None:
            return
        text_bytes = len(doc.text.encode("utf-8", errors="surrogatepass"))
        advance = max(1, splitter.budget - splitter.overlap)
        # A chunk also ends at max_chars: text that tokenizes into few tokens (one
        # 1 MB "word") still makes a chunk every max_chars characters.
        est_chunks = max(tokens // advance, len(doc.text) // splitter.max_chars) + len(doc.sections)
        # Every chunk repeats the document id: its UTF-8 bytes, not its characters (a
        # 1 MB id of emoji was counted a quarter of its size, and the response grew
        # past protobuf's 2 GiB and failed to serialize).
        per_chunk = (
            CHUNK_OVERHEAD_BYTES
            + len(req.document_id.encode("utf-8", errors="surrogatepass"))
            + len(doc.title.encode("utf-8", errors="surrogatepass"))
        )
        estimate = text_bytes * splitter.budget // advance + est_chunks * per_chunk
        if req.include_normalized_text:
            estimate += text_bytes
        if estimate > self.max_response_bytes:
            raise ResourceExhausted(
                f"the chunks of this document would take about {estimate} bytes, over the "
                f"{self.max_response_bytes}-byte message limit (RAGMESH_MAX_MESSAGE_BYTES); "
                "use a smaller overlap, a larger max_tokens, or omit include_normalized_text",
                reason="RESPONSE_TOO_LARGE",
                metadata={"estimate_bytes": estimate, "limit_bytes": self.max_response_bytes},
            )
