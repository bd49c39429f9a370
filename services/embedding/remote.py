"""The `tei` and `openai` backends: embeddings from a server over HTTP.

`tei` speaks HuggingFace text-embeddings-inference's API directly with httpx
(POST /embed, GET /info; the text-embeddings-inference-client package pins an
old httpx). `openai` uses the `openai` package against any OpenAI-compatible
/v1/embeddings. Vectors are L2-normalised here whatever the server does, so
cosine == inner product holds for every backend.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from typing import Any

import httpx
import numpy as np
import openai

from services.common import errors
from services.embedding.embedder import ModelInfo, Vectors, l2_normalize

log = logging.getLogger("ragmesh.embedding")

UNAVAILABLE = "EMBEDDING_BACKEND_UNAVAILABLE"


def _status_error(backend: str, status: int, body: str) -> errors.ServiceError:
    """An HTTP error status from the embedding server as a ServiceError."""
    message = f"{backend} server answered HTTP {status}: {body[:500]}"
    meta = {"backend": backend, "http_status": status}
    if status in (400, 413, 422):
        return errors.InvalidArgument(
            message, reason="EMBEDDING_BACKEND_REJECTED_INPUT", metadata=meta
        )
    if status == 429:
        return errors.ResourceExhausted(
            message, reason="EMBEDDING_BACKEND_OVERLOADED", metadata=meta, retry_after_s=1.0
        )
    if status in (401, 403):
        return errors.FailedPrecondition(
            message, reason="EMBEDDING_BACKEND_AUTH_FAILED", metadata=meta
        )
    if status >= 500 or status == 404:
        return errors.Unavailable(message, reason=UNAVAILABLE, metadata=meta)
    return errors.Internal(message, reason="EMBEDDING_BACKEND_ERROR", metadata=meta)


def _vectors(rows: Any, expected: int, backend: str) -> Vectors:
    try:
        array = np.asarray(rows, dtype=np.float32)
    except (TypeError, ValueError):
        array = np.empty(0, dtype=np.float32)
    if array.ndim != 2 or array.shape[0] != expected or array.shape[1] == 0:
        raise errors.Internal(
            f"{backend} server returned {array.shape} for {expected} texts",
            reason="EMBEDDING_BACKEND_BAD_RESPONSE",
        )
    return l2_normalize(array)


class TeiEmbedder:
    """A HuggingFace text-embeddings-inference server."""

    parallel_calls = 1

    def __init__(
        self, base_url: str, *, timeout_s: float = 30.0, connect_timeout_s: float = 3.0
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.client = httpx.AsyncClient(
            base_url=self.base_url, timeout=httpx.Timeout(timeout_s, connect=connect_timeout_s)
        )
        self._info: ModelInfo | None = None
        self._max_client_batch = 32
        self._down = False

    async def _request(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            response = await self.client.request(method, path, **kwargs)
        except httpx.TimeoutException as exc:
            raise errors.Unavailable(
                f"TEI server at {self.base_url} timed out ({type(exc).__name__})",
                reason="EMBEDDING_BACKEND_TIMEOUT",
                metadata={"backend": "tei"},
            ) from exc
        except httpx.TransportError as exc:
            raise errors.Unavailable(
                f"TEI server at {self.base_url} is unreachable: {exc or type(exc).__name__}",
                reason=UNAVAILABLE,
                metadata={"backend": "tei"},
            ) from exc
        if response.status_code != 200:
            raise _status_error("tei", response.status_code, response.text)
        return response.json()

    async def info(self) -> ModelInfo:
        if self._info is None:
            body = await self._request("GET", "/info")
            if not isinstance(body, dict):
                raise errors.Internal(
                    f"TEI /info answered {str(body)[:200]}",
                    reason="EMBEDDING_BACKEND_BAD_RESPONSE",
                )
            self._max_client_batch = int(body.get("max_client_batch_size") or 32)
            probe = await self._request("POST", "/embed", json={"inputs": ["probe"]})
            self._info = ModelInfo(
                model=str(body.get("model_id", "")),
                dimension=int(_vectors(probe, 1, "tei").shape[1]),
                max_tokens=int(body.get("max_input_length") or 512),
                normalized=True,
                backend="tei",
            )
        return self._info

    async def embed(self, texts: Sequence[str], *, truncate: bool) -> Vectors:
        await self.info()
        rows: list[list[float]] = []
        # TEI refuses more than max_client_batch_size inputs in one request (HTTP 413).
        for start in range(0, len(texts), self._max_client_batch):
            part = list(texts[start : start + self._max_client_batch])
            rows.extend(
                await self._request(
                    "POST", "/embed", json={"inputs": part, "truncate": truncate, "normalize": True}
                )
            )
        return _vectors(rows, len(texts), "tei")

    async def ready(self) -> bool:
        try:
            await self._request("GET", "/info")
            await self.info()
        except errors.ServiceError as exc:
            log.log(
                logging.DEBUG if self._down else logging.WARNING, "TEI not ready: %s", exc.message
            )
            self._down = True
            return False
        self._down = False
        return True

    async def close(self) -> None:
        await self.client.aclose()


class OpenAIEmbedder:
    """Any OpenAI-compatible /v1/embeddings (OpenAI, vLLM, llama.cpp, Infinity...)."""

    parallel_calls = 1

    def __init__(
        self,
        base_url: str,
        model: str,
        api_key: str,
        *,
        max_tokens: int,
        dimension: int = 0,
        timeout_s: float = 30.0,
        connect_timeout_s: float = 3.0,
        truncator: Callable[[str, int], str] | None = None,
    ) -> None:
        self.base_url = base_url
        self.truncator = truncator
        self._down = False
        self.model = model
        self.max_tokens = max_tokens
        self.dimension = dimension
        self.client = openai.AsyncOpenAI(
            base_url=base_url,
            api_key=api_key,
            max_retries=0,
            timeout=openai.Timeout(timeout_s, connect=connect_timeout_s),
        )

    def _translate(self, exc: Exception) -> errors.ServiceError:
        meta = {"backend": "openai"}
        if isinstance(exc, openai.APITimeoutError):
            return errors.Unavailable(
                f"OpenAI-compatible server at {self.base_url} timed out",
                reason="EMBEDDING_BACKEND_TIMEOUT",
                metadata=meta,
            )
        if isinstance(exc, openai.APIConnectionError):
            return errors.Unavailable(
                f"OpenAI-compatible server at {self.base_url} is unreachable: {exc}",
                reason=UNAVAILABLE,
                metadata=meta,
            )
        if isinstance(exc, openai.APIStatusError):
            return _status_error("openai", exc.status_code, exc.message)
        return errors.Internal(
            f"OpenAI-compatible server: {exc}",
            reason="EMBEDDING_BACKEND_BAD_RESPONSE",
            metadata=meta,
        )

    async def _create(self, texts: list[str]) -> Vectors:
        try:
            response = await self.client.embeddings.create(
                input=texts, model=self.model, encoding_format="float"
            )
        except openai.OpenAIError as exc:
            raise self._translate(exc) from exc
        rows = [d.embedding for d in sorted(response.data, key=lambda d: d.index)]
        return _vectors(rows, len(texts), "openai")

    async def info(self) -> ModelInfo:
        if not self.dimension:
            self.dimension = int((await self._create(["probe"])).shape[1])
        return ModelInfo(
            model=self.model,
            dimension=self.dimension,
            max_tokens=self.max_tokens,
            normalized=True,
            backend="openai",
        )

    async def embed(self, texts: Sequence[str], *, truncate: bool) -> Vectors:
        # The OpenAI API has no truncate flag: cut long texts here with our tokenizer.
        if truncate and self.truncator is not None:
            texts = [self.truncator(t, self.max_tokens) for t in texts]
        return await self._create(list(texts))

    async def ready(self) -> bool:
        try:
            await asyncio.wait_for(self.client.models.list(), timeout=5)
            await self.info()
        except (openai.OpenAIError, errors.ServiceError, TimeoutError) as exc:
            # Warn once per outage, not at every readiness poll.
            log.log(
                logging.DEBUG if self._down else logging.WARNING,
                "OpenAI-compatible server not ready: %s",
                exc,
            )
            self._down = True
            return False
        self._down = False
        return True

    async def close(self) -> None:
        await self.client.close()
