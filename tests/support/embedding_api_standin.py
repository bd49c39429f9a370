"""A stand-in for the HTTP embedding and reranking servers ragmesh can use, with the
REAL local model behind it: HuggingFace text-embeddings-inference (GET /info, POST
/embed, POST /rerank), an OpenAI-compatible API (POST /v1/embeddings, GET /v1/models)
and the Cohere/Jina-style POST /v1/rerank that vLLM and Infinity serve.

No cross-encoder runs here, so the reranking endpoints score a text by its cosine
similarity to the query under the same model (a real relevance signal, though a
weaker one than a cross-encoder's); `rerank_delay_s` makes them slow on purpose.

No TEI server can run here, so the `tei` and `openai` backends are tested against
this: it follows each documented API (request and response shapes, error statuses
and bodies) and answers with all-MiniLM-L6-v2 run by sentence-transformers, so the
vectors can be compared with the local backend's.
"""

from __future__ import annotations

import base64
import contextlib
import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import numpy as np

from services.common.models import MINILM_NAME, minilm_model_dir

MAX_CLIENT_BATCH_SIZE = 8  # small, so that the client's splitting is exercised


class _Model:
    def __init__(self) -> None:
        from sentence_transformers import SentenceTransformer

        self.model = SentenceTransformer(
            str(minilm_model_dir()), device="cpu", local_files_only=True
        )
        self.max_tokens = int(self.model.max_seq_length or 256)
        self.lock = threading.Lock()

    def token_count(self, text: str) -> int:
        # Under the lock too: the tokenizer is shared with encode(), which sets its padding
        # and truncation; a count from another request's thread in between made encode()
        # fail ("Unable to create tensor ... padding=True") in a clean-clone CI run.
        with self.lock:
            return len(self.model.tokenizer(text)["input_ids"])

    def embed(self, texts: list[str]) -> list[list[float]]:
        with self.lock:
            vectors = self.model.encode(texts, convert_to_numpy=True, show_progress_bar=False)
        return np.asarray(vectors, dtype=np.float32).tolist()  # type: ignore[no-any-return]


class EmbeddingAPIStandin:
    """Serves both APIs on 127.0.0.1:<free port> from a background thread."""

    def __init__(self, model: _Model | None = None) -> None:
        self.model = model or _Model()
        self.requests: list[tuple[str, str]] = []
        self.rerank_delay_s = 0.0
        self.connections: set[socket.socket] = set()
        standin = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def setup(self) -> None:
                super().setup()
                standin.connections.add(self.connection)

            def finish(self) -> None:
                super().finish()
                standin.connections.discard(self.connection)

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def _send(self, status: int, body: Any) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _body(self) -> Any:
                length = int(self.headers.get("Content-Length") or 0)
                return json.loads(self.rfile.read(length) or b"null")

            def do_GET(self) -> None:
                standin.requests.append(("GET", self.path))
                if self.path == "/info":
                    self._send(200, standin.tei_info())
                elif self.path == "/v1/models":
                    self._send(
                        200,
                        {
                            "object": "list",
                            "data": [
                                {
                                    "id": MINILM_NAME,
                                    "object": "model",
                                    "created": 0,
                                    "owned_by": "test",
                                }
                            ],
                        },
                    )
                else:
                    self._send(404, {"error": f"no route {self.path}"})

            def do_POST(self) -> None:
                standin.requests.append(("POST", self.path))
                body = self._body()
                route = {
                    "/embed": standin.tei_embed,
                    "/v1/embeddings": standin.openai_embeddings,
                    "/rerank": standin.tei_rerank,
                    "/v1/rerank": standin.cohere_rerank,
                }.get(self.path)
                if route is None:
                    self._send(404, {"error": f"no route {self.path}"})
                else:
                    self._send(*route(body))

        self._handler = Handler
        self.port = 0
        self.server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> EmbeddingAPIStandin:
        """Serve on a free port, or again on the same port after `stop()`."""
        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), self._handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None
        # A stopped server also drops its keep-alive connections, as a dead process would.
        for connection in list(self.connections):
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)

    # --- text-embeddings-inference (https://huggingface.github.io/text-embeddings-inference)
    def tei_info(self) -> dict[str, Any]:
        return {
            "model_id": MINILM_NAME,
            "model_sha": None,
            "model_dtype": "float32",
            "model_type": {"embedding": {"pooling": "mean"}},
            "max_concurrent_requests": 512,
            "max_input_length": self.model.max_tokens,
            "max_batch_tokens": 16384,
            "max_batch_requests": None,
            "max_client_batch_size": MAX_CLIENT_BATCH_SIZE,
            "tokenization_workers": 1,
            "version": "1.8.0-standin",
        }

    def tei_embed(self, body: Any) -> tuple[int, Any]:
        inputs = body.get("inputs") if isinstance(body, dict) else None
        texts = [inputs] if isinstance(inputs, str) else inputs
        if not isinstance(texts, list) or not texts:
            return 422, {"error": "`inputs` cannot be empty", "error_type": "Validation"}
        if len(texts) > MAX_CLIENT_BATCH_SIZE:
            return 413, {
                "error": f"batch size {len(texts)} > maximum allowed batch size "
                f"{MAX_CLIENT_BATCH_SIZE}",
                "error_type": "Validation",
            }
        if not body.get("truncate", False):
            for text in texts:
                tokens = self.model.token_count(text)
                if tokens > self.model.max_tokens:
                    return 413, {
                        "error": "Input validation error: `inputs` must have less "
                        f"than {self.model.max_tokens} tokens. Given: {tokens}",
                        "error_type": "Validation",
                    }
        return 200, self.model.embed(texts)

    # --- OpenAI (https://platform.openai.com/docs/api-reference/embeddings/create)
    def openai_embeddings(self, body: Any) -> tuple[int, Any]:
        inputs = body.get("input") if isinstance(body, dict) else None
        texts = [inputs] if isinstance(inputs, str) else inputs
        if not isinstance(texts, list) or not texts or not all(isinstance(t, str) for t in texts):
            return 400, {
                "error": {
                    "message": "'input' must be a string or a list of strings",
                    "type": "invalid_request_error",
                    "param": "input",
                    "code": None,
                }
            }
        counts = [self.model.token_count(t) for t in texts]
        if max(counts) > self.model.max_tokens:
            return 400, {
                "error": {
                    "message": f"This model's maximum context length is "
                    f"{self.model.max_tokens} tokens, however you requested "
                    f"{max(counts)} tokens",
                    "type": "invalid_request_error",
                    "param": "input",
                    "code": None,
                }
            }
        rows = self.model.embed(texts)
        as_base64 = body.get("encoding_format") == "base64"
        data = [
            {
                "object": "embedding",
                "index": i,
                "embedding": base64.b64encode(np.asarray(row, dtype=np.float32).tobytes()).decode()
                if as_base64
                else row,
            }
            for i, row in enumerate(rows)
        ]
        return 200, {
            "object": "list",
            "data": data,
            "model": body.get("model", MINILM_NAME),
            "usage": {"prompt_tokens": sum(counts), "total_tokens": sum(counts)},
        }

    # --- reranking
    def _relevance(self, query: str, texts: list[str]) -> list[float]:
        if self.rerank_delay_s:
            time.sleep(self.rerank_delay_s)
        vectors = np.asarray(self.model.embed([query, *texts]), dtype=np.float32)
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        return [float(s) for s in vectors[1:] @ vectors[0]]

    def tei_rerank(self, body: Any) -> tuple[int, Any]:
        """TEI `POST /rerank`: `[{"index", "score"}]`, best first."""
        query = body.get("query") if isinstance(body, dict) else None
        texts = body.get("texts") if isinstance(body, dict) else None
        if not isinstance(query, str) or not isinstance(texts, list) or not texts:
            return 422, {"error": "`texts` cannot be empty", "error_type": "Validation"}
        if len(texts) > MAX_CLIENT_BATCH_SIZE * 4:
            return 413, {
                "error": f"batch size {len(texts)} > maximum allowed batch size "
                f"{MAX_CLIENT_BATCH_SIZE * 4}",
                "error_type": "Validation",
            }
        scores = self._relevance(query, texts)
        ranked = sorted(range(len(texts)), key=lambda i: -scores[i])
        return 200, [{"index": i, "score": scores[i]} for i in ranked]

    def cohere_rerank(self, body: Any) -> tuple[int, Any]:
        """`POST /v1/rerank` (Cohere/Jina/vLLM): `{"results": [{"index",
        "relevance_score"}]}`, best first, at most top_n."""
        query = body.get("query") if isinstance(body, dict) else None
        documents = body.get("documents") if isinstance(body, dict) else None
        if not isinstance(query, str) or not isinstance(documents, list) or not documents:
            return 400, {"error": {"message": "query and documents are required"}}
        texts = [d["text"] if isinstance(d, dict) else str(d) for d in documents]
        scores = self._relevance(query, texts)
        ranked = sorted(range(len(texts)), key=lambda i: -scores[i])
        top_n = body.get("top_n") or len(texts)
        return 200, {
            "id": "rerank-standin",
            "model": body.get("model", MINILM_NAME),
            "results": [{"index": i, "relevance_score": scores[i]} for i in ranked[:top_n]],
            "usage": {"total_tokens": sum(self.model.token_count(t) for t in texts)},
        }


def main() -> None:
    """`python -m tests.support.embedding_api_standin`: serve until Ctrl-C."""
    standin = EmbeddingAPIStandin().start()
    print(f"TEI: {standin.url}  OpenAI: {standin.url}/v1  (Ctrl-C stops)", flush=True)
    threading.Event().wait()


if __name__ == "__main__":
    main()
