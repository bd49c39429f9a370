"""The embedding service's logic, apart from gRPC: validation, token counting,
input-type prefixes and micro-batched calls to the configured backend."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

from services.common import errors, tracing
from services.common.models import minilm_model_dir
from services.embedding.batcher import MicroBatcher
from services.embedding.config import EmbeddingSettings
from services.embedding.embedder import Embedder, ModelInfo, Vectors
from services.embedding.tokens import TokenCounter

log = logging.getLogger("ragmesh.embedding")


class InputType(Enum):
    QUERY = "query"
    DOCUMENT = "document"


# INPUT_TYPE_UNSPECIFIED means DOCUMENT: passages are what gets embedded in bulk, and
# for the bundled model (no instruction prefixes) both kinds embed identically anyway.
DEFAULT_INPUT_TYPE = InputType.DOCUMENT
# Requests up to this many characters are validated on the event loop itself.
INLINE_VALIDATION_CHARS = 4000


@dataclass(frozen=True)
class EmbedResult:
    vectors: Vectors
    token_counts: list[int]
    info: ModelInfo


def create_embedder(settings: EmbeddingSettings, counter: TokenCounter) -> Embedder:
    if settings.backend == "tei":
        from services.embedding.remote import TeiEmbedder

        return TeiEmbedder(
            settings.tei_url,
            timeout_s=settings.request_timeout_s,
            connect_timeout_s=settings.connect_timeout_s,
        )
    if settings.backend == "openai":
        from services.embedding.remote import OpenAIEmbedder

        return OpenAIEmbedder(
            settings.openai_base_url,
            settings.openai_model,
            settings.openai_api_key,
            max_tokens=settings.openai_max_tokens,
            dimension=settings.openai_dimension,
            timeout_s=settings.request_timeout_s,
            connect_timeout_s=settings.connect_timeout_s,
            truncator=counter.truncate,
        )
    from services.embedding.local import LocalEmbedder

    return LocalEmbedder(
        settings.runtime,
        settings.model_dir or minilm_model_dir(),
        settings.cache_dir,
        batch_size=settings.forward_batch_size,
        threads=settings.threads,
        spinning=settings.onnx_spinning,
    )


def tokenizer_path(settings: EmbeddingSettings) -> Path:
    if settings.tokenizer_path is not None:
        return settings.tokenizer_path
    return (settings.model_dir or minilm_model_dir()) / "tokenizer.json"


class EmbeddingCore:
    def __init__(
        self,
        settings: EmbeddingSettings,
        embedder: Embedder | None = None,
        counter: TokenCounter | None = None,
    ) -> None:
        self.settings = settings
        self.counter = counter or TokenCounter(tokenizer_path(settings))
        self.embedder = embedder or create_embedder(settings, self.counter)
        self.batcher = MicroBatcher(
            self._call_backend,
            max_batch_texts=settings.micro_batch_max_texts,
            max_wait_s=settings.micro_batch_wait_ms / 1000,
            max_concurrent_batches=settings.max_concurrent_batches,
        )

    async def _call_backend(self, texts: list[str], truncate: bool) -> Vectors:
        return await self.embedder.embed(texts, truncate=truncate)

    async def start(self) -> None:
        """Load the model (local) or ask the server what it runs (tei/openai). A server
        that is down now is not fatal: health stays NOT_SERVING until it answers."""
        try:
            info = await self.embedder.info()
            log.info(
                "embedding model %s (dim %d, max %d tokens) via %s %s",
                info.model,
                info.dimension,
                info.max_tokens,
                info.backend,
                info.runtime,
            )
        except errors.Unavailable as exc:
            log.warning("embedding backend not reachable yet: %s", exc.message)

    async def info(self) -> ModelInfo:
        return await self.embedder.info()

    async def ready(self) -> bool:
        return await self.embedder.ready()

    async def close(self) -> None:
        await self.batcher.close()
        await self.embedder.close()

    def validate(
        self, texts: Sequence[str], truncate: bool, max_tokens: int, prefix: str = ""
    ) -> list[int]:
        """Check the request; return each text's token count (prefix included, after
        truncation: what the model will see)."""
        limit = self.settings.max_texts_per_call
        if not texts:
            raise errors.InvalidArgument(
                "texts is empty: give at least one text to embed",
                reason="NO_TEXTS",
                metadata={"field": "texts"},
            )
        if len(texts) > limit:
            raise errors.InvalidArgument(
                f"{len(texts)} texts in one call; at most {limit} are accepted, split the call",
                reason="TOO_MANY_TEXTS",
                metadata={"count": len(texts), "max": limit},
            )
        for i, text in enumerate(texts):
            if not text.strip():
                raise errors.InvalidArgument(
                    f"texts[{i}] is empty or only whitespace; nothing to embed",
                    reason="EMPTY_TEXT",
                    metadata={"index": i},
                )
            if len(text) > self.settings.max_text_chars:
                raise errors.InvalidArgument(
                    f"texts[{i}] has {len(text)} characters, more than the "
                    f"{self.settings.max_text_chars} accepted even with truncate",
                    reason="TEXT_TOO_LARGE",
                    metadata={
                        "index": i,
                        "chars": len(text),
                        "max_chars": self.settings.max_text_chars,
                    },
                )
        counts = self.counter.count([prefix + t for t in texts] if prefix else texts)
        if not truncate:
            for i, count in enumerate(counts):
                if count > max_tokens:
                    raise errors.InvalidArgument(
                        f"texts[{i}] is {count} tokens, more than the model's {max_tokens}; "
                        "split it or set truncate",
                        reason="TEXT_TOO_LONG",
                        metadata={"index": i, "tokens": count, "max_tokens": max_tokens},
                    )
        return [min(c, max_tokens) for c in counts]

    async def embed(
        self, texts: Sequence[str], input_type: InputType | None = None, truncate: bool = False
    ) -> EmbedResult:
        info = await self.embedder.info()
        kind = input_type or DEFAULT_INPUT_TYPE
        prefix = (
            self.settings.query_prefix if kind is InputType.QUERY else self.settings.document_prefix
        )
        if sum(len(t) for t in texts) <= INLINE_VALIDATION_CHARS:
            # A query or two tokenise in microseconds; a thread hop would cost more.
            counts = self.validate(texts, truncate, info.max_tokens, prefix)
        else:
            # Tokenising hundreds of texts takes milliseconds: keep it off the event loop.
            counts = await asyncio.to_thread(
                self.validate, texts, truncate, info.max_tokens, prefix
            )
        prefixed = [prefix + t for t in texts] if prefix else list(texts)
        # The wait for a batch slot and the model's run (batches mix callers' texts).
        with tracing.span(
            "embed.batch", {"ragmesh.texts": len(texts), "ragmesh.input_type": kind.name}
        ):
            vectors = await self.batcher.embed(prefixed, truncate=truncate)
        return EmbedResult(vectors=vectors, token_counts=counts, info=info)
