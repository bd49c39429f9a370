"""Failures of the tei and openai backends map to precise errors: a server that is
down, one that hangs, and HTTP error statuses that only a real product would send
(here from a tiny server answering with a chosen status and body)."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from devstack.procs import free_port
from services.common import errors
from services.embedding.remote import OpenAIEmbedder, TeiEmbedder


class FixedAnswer:
    """An HTTP server answering every request with `status` and `body`."""

    def __init__(self) -> None:
        self.status = 200
        self.body: object = {}
        self.info: object = None  # the body for GET /info, when not `body`
        answer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: object) -> None:
                pass

            def _answer(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                body = answer.info if self.path == "/info" and answer.info else answer.body
                data = json.dumps(body).encode()
                self.send_response(answer.status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = _answer

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def fixed() -> Iterator[FixedAnswer]:
    server = FixedAnswer()
    yield server
    server.close()


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A port that accepts connections and never answers."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        yield listener.getsockname()[1]


def tei(url: str) -> TeiEmbedder:
    return TeiEmbedder(url, timeout_s=0.5, connect_timeout_s=0.5)


def openai_(url: str) -> OpenAIEmbedder:
    return OpenAIEmbedder(
        f"{url}/v1", "m", "key", max_tokens=256, dimension=3, timeout_s=0.5, connect_timeout_s=0.5
    )


async def test_server_down() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    for embedder in (tei(url), openai_(url)):
        with pytest.raises(errors.Unavailable) as caught:
            await embedder.embed(["x"], truncate=False)
        assert caught.value.reason == "EMBEDDING_BACKEND_UNAVAILABLE"
        assert "unreachable" in caught.value.message
        assert not await embedder.ready()
        await embedder.close()


async def test_server_that_hangs(silent_port: int) -> None:
    url = f"http://127.0.0.1:{silent_port}"
    for embedder in (tei(url), openai_(url)):
        with pytest.raises(errors.Unavailable) as caught:
            await embedder.embed(["x"], truncate=False)
        assert caught.value.reason == "EMBEDDING_BACKEND_TIMEOUT"
        await embedder.close()


@pytest.mark.parametrize(
    ("status", "error", "reason"),
    [
        (413, errors.InvalidArgument, "EMBEDDING_BACKEND_REJECTED_INPUT"),
        (422, errors.InvalidArgument, "EMBEDDING_BACKEND_REJECTED_INPUT"),
        (429, errors.ResourceExhausted, "EMBEDDING_BACKEND_OVERLOADED"),
        (401, errors.FailedPrecondition, "EMBEDDING_BACKEND_AUTH_FAILED"),
        (503, errors.Unavailable, "EMBEDDING_BACKEND_UNAVAILABLE"),
        (424, errors.Internal, "EMBEDDING_BACKEND_ERROR"),
    ],
)
async def test_http_error_statuses(
    fixed: FixedAnswer, status: int, error: type[errors.ServiceError], reason: str
) -> None:
    fixed.status, fixed.body = status, {"error": "upstream says no", "error_type": "Validation"}
    for embedder in (tei(fixed.url), openai_(fixed.url)):
        with pytest.raises(error) as caught:
            await embedder.embed(["x"], truncate=False)
        assert caught.value.reason == reason
        assert caught.value.metadata["http_status"] == str(status)
        await embedder.close()


async def test_a_malformed_answer(fixed: FixedAnswer) -> None:
    fixed.status = 200
    # TEI: /info is fine, but /embed returns one row for two texts.
    fixed.info = {"model_id": "m", "max_input_length": 256, "max_client_batch_size": 8}
    fixed.body = [[0.1, 0.2, 0.3]]
    embedder = tei(fixed.url)
    with pytest.raises(errors.Internal) as caught:
        await embedder.embed(["a", "b"], truncate=False)
    assert caught.value.reason == "EMBEDDING_BACKEND_BAD_RESPONSE"
    await embedder.close()
    # /info that is not an object, and rows that are not numbers.
    good_info = {"model_id": "m", "max_input_length": 256}
    for info, body in ((["not", "an", "object"], [[1.0]]), (good_info, [["a", "b"]])):
        fixed.info, fixed.body = info, body
        embedder = tei(fixed.url)
        with pytest.raises(errors.Internal) as caught:
            await embedder.info()
        assert caught.value.reason == "EMBEDDING_BACKEND_BAD_RESPONSE"
        await embedder.close()
    fixed.info = None
    fixed.body = {
        "object": "list",
        "data": [{"object": "embedding", "index": 0, "embedding": [3.0, 4.0, 0.0]}],
        "model": "m",
        "usage": {"prompt_tokens": 1, "total_tokens": 1},
    }
    openai_embedder = openai_(fixed.url)
    with pytest.raises(errors.Internal) as caught:
        await openai_embedder.embed(["a", "b"], truncate=False)
    assert caught.value.reason == "EMBEDDING_BACKEND_BAD_RESPONSE"
    # One text, one row: accepted and normalised by the service.
    vectors = await openai_embedder.embed(["a"], truncate=False)
    assert vectors.tolist() == [[pytest.approx(0.6), pytest.approx(0.8), 0.0]]
    await openai_embedder.close()
