"""The embedding service's logic, apart from gRPC: validation, token counting,
input-type prefixes and micro-batched calls to the configured backend."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any, Protocol

from services.common import errors, tracing
from services.common.models import MULTILINGUAL_NAME, canonical_model_name, minilm_model_dir
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
        precision=settings.onnx_precision,
        bf16=settings.bf16,
    )


def tokenizer_path(settings: EmbeddingSettings) -> Path:
    if settings.tokenizer_path is not None:
        return settings.tokenizer_path
    return (settings.model_dir or minilm_model_dir()) / "tokenizer.json"


class TextCounter(Protocol):
    """A model's own token counting: TokenCounter (tokenizers) or UsemTokenizer."""

    def count(self, texts: Sequence[str]) -> list[int]: ...


@dataclass
class ModelSlot:
    """One served model: its backend, its tokenizer and its own micro-batcher (texts of
    different models never share a forward pass)."""

    name: str
    embedder: Embedder
    counter: TextCounter
    batcher: MicroBatcher


def _multilingual_slot(settings: EmbeddingSettings, make_batcher: Any) -> ModelSlot | None:
    """USE multilingual v3 when its package is installed (it is in the server extra)."""
    try:
        from services.embedding.local import UsemEmbedder
        from services.embedding.usem import UsemTokenizer

        embedder = UsemEmbedder(
            settings.cache_dir,
            threads=settings.threads,
            token_budget=settings.multilingual_token_budget,
        )
        counter = UsemTokenizer(embedder.model_dir)
    except (ImportError, FileNotFoundError) as exc:
        log.warning("multilingual model not served: %s", exc)
        return None
    return ModelSlot(MULTILINGUAL_NAME, embedder, counter, make_batcher(embedder))


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
        self.batcher = self._make_batcher(self.embedder)
        # The default model's name is known once its backend answers (start/info);
        # until then it is reachable as "" only.
        self._default = ModelSlot("", self.embedder, self.counter, self.batcher)
        self._extra: list[ModelSlot] = []
        if settings.multilingual:
            slot = _multilingual_slot(settings, self._make_batcher)
            if slot is not None:
                self._extra.append(slot)

    def _make_batcher(self, embedder: Embedder) -> MicroBatcher:
        async def call(texts: list[str], truncate: bool) -> Vectors:
            return await embedder.embed(texts, truncate=truncate)

        return MicroBatcher(
            call,
            max_batch_texts=self.settings.micro_batch_max_texts,
            max_wait_s=self.settings.micro_batch_wait_ms / 1000,
            max_concurrent_batches=self.settings.max_concurrent_batches or embedder.parallel_calls,
        )

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

    async def _default_name(self) -> str:
        if not self._default.name:
            self._default.name = (await self.embedder.info()).model
        return self._default.name

    async def model_names(self) -> list[str]:
        """Every served model, the default first."""
        try:
            default = [await self._default_name()]
        except errors.Unavailable:
            default = []
        return default + [s.name for s in self._extra if s.name not in default]

    async def slot(self, model: str = "") -> ModelSlot:
        """The served model named `model` (full name or alias; "" = the default)."""
        name = canonical_model_name(model) if model else ""
        if not name:
            return self._default
        for slot in self._extra:
            if slot.name == name:
                return slot
        if name == await self._default_name():
            return self._default
        raise errors.NotFound(
            f"model {model!r} is not served here; served: {', '.join(await self.model_names())}",
            reason="UNKNOWN_MODEL",
            metadata={"model": model},
        )

    async def info(self, model: str = "") -> ModelInfo:
        return await (await self.slot(model)).embedder.info()

    async def ready(self) -> bool:
        return await self.embedder.ready()

    async def close(self) -> None:
        for slot in (self._default, *self._extra):
            await slot.batcher.close()
            await slot.embedder.close()

    def validate(
        self,
        texts: Sequence[str],
        truncate: bool,
        max_tokens: int,
        prefix: str = "",
        counter: TextCounter | None = None,
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
        counter = counter or self.counter
        counts = counter.count([prefix + t for t in texts] if prefix else texts)
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
        self,
        texts: Sequence[str],
        input_type: InputType | None = None,
        truncate: bool = False,
        model: str = "",
    ) -> EmbedResult:
        slot = await self.slot(model)
        info = await slot.embedder.info()
        kind = input_type or DEFAULT_INPUT_TYPE
        prefix = (
            self.settings.query_prefix if kind is InputType.QUERY else self.settings.document_prefix
        )
        if slot is not self._default:
            prefix = ""  # the configured prefixes belong to the default (configured) model
        if sum(len(t) for t in texts) <= INLINE_VALIDATION_CHARS:
            # A query or two tokenise in microseconds; a thread hop would cost more.
            counts = self.validate(texts, truncate, info.max_tokens, prefix, slot.counter)
        else:
            # Tokenising hundreds of texts takes milliseconds: keep it off the event loop.
            counts = await asyncio.to_thread(
                self.validate, texts, truncate, info.max_tokens, prefix, slot.counter
            )
        prefixed = [prefix + t for t in texts] if prefix else list(texts)
        # The wait for a batch slot and the model's run (batches mix callers' texts).
        with tracing.span(
            "embed.batch",
            {
                "ragmesh.texts": len(texts),
                "ragmesh.input_type": kind.name,
                "ragmesh.model": info.model,
            },
        ):
            vectors = await slot.batcher.embed(prefixed, truncate=truncate)
        return EmbedResult(vectors=vectors, token_counts=counts, info=info)
