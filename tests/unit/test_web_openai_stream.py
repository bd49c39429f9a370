"""POST /v1/chat/completions over a real HTTP connection (uvicorn on a free port),
in front of a stand-in gateway whose Ask waits as long as the test says: what the
client receives while the answer is not there yet (the status, the sources,
keep-alive comments), gateway errors before and after the stream started, and a
client that gives up before the first byte ending the Ask at once.

The stand-in's Ask records how it ended; a client that goes away must end it
(cancelled) long before the test would release it. No sleeps decide an outcome:
the waits are upper bounds on events that come at once when the code is right."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import grpc
import httpx
import pytest
import uvicorn

from devstack.procs import free_port
from ragmesh.client.errors import RagmeshError
from ragmesh.common.v1 import common_pb2
from ragmesh.gateway.v1 import gateway_pb2 as pb
from services.web.app import create_app
from services.web.config import WebSettings

SOURCE = common_pb2.Citation(document_id="guide", file_name="guide.md", text="Milvus.", number=1)
SOURCES = pb.AskResponse(sources=pb.AskSources(sources=[SOURCE]))
DELTA = pb.AskResponse(delta=pb.AskDelta(text="Milvus [1]."))
FINAL = pb.AskResponse(final=pb.AskFinal(answer="Milvus [1].", finish_reason="STOP"))
WAIT = "wait"  # a step of the script: until the test releases the Ask
NOT_FOUND = RagmeshError(
    "knowledge base 'kb' not found",
    code=grpc.StatusCode.NOT_FOUND,
    reason="KNOWLEDGE_BASE_NOT_FOUND",
    domain="gateway",
)
#: longest a test waits for what must come at once (a loaded machine stretches "at once")
PROMPT_S = 10.0


class FakeGateway:
    """The gateway client's calls the chat route makes; Ask plays `script`."""

    def __init__(self, script: list[Any]) -> None:
        self.script = script
        self.release = threading.Event()
        self.started = threading.Event()
        self.ended = threading.Event()
        self.outcome = ""

    def with_metadata(self, metadata: Any) -> FakeGateway:
        return self

    async def close(self) -> None:
        return None

    def ask(self, *args: Any, **kwargs: Any) -> AsyncIterator[pb.AskResponse]:
        return self._ask()

    async def _ask(self) -> AsyncIterator[pb.AskResponse]:
        self.started.set()
        try:
            for step in self.script:
                if step == WAIT:
                    while not await asyncio.to_thread(self.release.wait, 0.05):
                        pass  # (set by the test's thread)
                elif isinstance(step, Exception):
                    raise step
                else:
                    yield step
        except (asyncio.CancelledError, GeneratorExit):
            self.outcome = "cancelled"
            raise
        except Exception:
            self.outcome = "failed"
            raise
        else:
            self.outcome = "done"
        finally:
            self.ended.set()


class Server:
    def __init__(self, gateway: FakeGateway, keepalive_s: float) -> None:
        settings = WebSettings(sse_keepalive_s=keepalive_s, mcp_enabled=False)
        self.port = free_port()
        config = uvicorn.Config(
            create_app(settings, client=gateway),  # type: ignore[arg-type]
            host="127.0.0.1",
            port=self.port,
            log_config=None,
            lifespan="on",
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> str:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            assert time.monotonic() < deadline and self.thread.is_alive(), "uvicorn did not start"
            time.sleep(0.02)
        return f"http://127.0.0.1:{self.port}/v1/chat/completions"

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(15)


@pytest.fixture
def serve() -> Iterator[Any]:
    """serve(script, keepalive_s) -> (url, gateway); the Ask is released at the end."""
    running: list[tuple[Server, FakeGateway]] = []

    def start(script: list[Any], keepalive_s: float = 30.0) -> tuple[str, FakeGateway]:
        gateway = FakeGateway(script)
        server = Server(gateway, keepalive_s)
        url = server.__enter__()
        running.append((server, gateway))
        return url, gateway

    yield start
    for server, gateway in running:
        gateway.release.set()
        server.__exit__()


def body(stream: bool) -> dict[str, Any]:
    return {
        "model": "ragmesh/kb",
        "messages": [{"role": "user", "content": "Where are the vectors?"}],
        "stream": stream,
    }


def lines_until(lines: Iterator[str], predicate: Any) -> list[str]:
    """The stream's lines read until one satisfies `predicate` (or it ends)."""
    seen: list[str] = []
    for line in lines:
        seen.append(line)
        if predicate(line):
            break
    return seen


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
def test_a_client_gone_before_the_first_byte_ends_the_ask(serve: Any, stream: bool) -> None:
    # The answer never comes (the LLM is busy). The client gives up once its request is
    # being answered, before anything was sent (the keep-alive interval, 30 s, is longer
    # than its patience).
    url, gateway = serve([SOURCES, WAIT, FINAL] if not stream else [WAIT, SOURCES, FINAL])
    payload = json.dumps(body(stream)).encode()
    port = int(url.split(":")[2].split("/")[0])
    with socket.create_connection(("127.0.0.1", port), timeout=PROMPT_S) as conn:
        conn.sendall(
            b"POST /v1/chat/completions HTTP/1.1\r\nHost: test\r\n"
            b"Content-Type: application/json\r\n"
            + f"Content-Length: {len(payload)}\r\n\r\n".encode()
            + payload
        )
        assert gateway.started.wait(PROMPT_S)
        conn.settimeout(0.3)
        with pytest.raises(TimeoutError):
            conn.recv(1)  # nothing yet: not even the status line
    # Ended at once (a fraction of a second); not when the test releases it.
    assert gateway.ended.wait(PROMPT_S), "the Ask went on after its client had gone"
    assert gateway.outcome == "cancelled"


def test_a_stream_starts_with_the_sources_then_keeps_alive_until_the_answer(
    serve: Any,
) -> None:
    url, gateway = serve([SOURCES, WAIT, DELTA, FINAL], keepalive_s=0.2)
    with httpx.Client(timeout=PROMPT_S) as c, c.stream("POST", url, json=body(True)) as resp:
        assert resp.status_code == 200
        lines = resp.iter_lines()
        assert resp.headers["content-type"].startswith("text/event-stream")
        seen = lines_until(lines, lambda line: line == ": keep-alive")
        first = json.loads(seen[0].removeprefix("data: "))
        assert first["ragmesh"]["sources"][0]["document_id"] == "guide"
        assert seen[-1] == ": keep-alive" and not gateway.ended.is_set()
        gateway.release.set()
        rest = lines_until(lines, lambda line: line == "data: [DONE]")
    assert rest[-1] == "data: [DONE]"
    assert any("Milvus [1]." in line for line in rest)
    assert gateway.outcome == "done"


def test_a_gateway_slow_to_its_first_event_still_gets_headers_and_keepalives(
    serve: Any,
) -> None:
    """A gateway quiet for longer than the keep-alive interval before its first event
    (a slow retrieval, a conversation's rewrite): the stream starts anyway."""
    url, gateway = serve([WAIT, SOURCES, DELTA, FINAL], keepalive_s=0.2)
    with httpx.Client(timeout=PROMPT_S) as c, c.stream("POST", url, json=body(True)) as resp:
        assert resp.status_code == 200
        lines = resp.iter_lines()
        seen = lines_until(lines, lambda line: line == ": keep-alive")
        assert seen[0] == ": keep-alive" and not gateway.ended.is_set()
        gateway.release.set()
        rest = lines_until(lines, lambda line: line == "data: [DONE]")
    chunks = [json.loads(x.removeprefix("data: ")) for x in rest if x.startswith("data: {")]
    assert chunks[0]["ragmesh"]["sources"][0]["document_id"] == "guide"
    assert rest[-1] == "data: [DONE]"


def test_a_gateway_error_before_the_first_event_is_the_http_status(serve: Any) -> None:
    url, _ = serve([NOT_FOUND])
    resp = httpx.post(url, json=body(True), timeout=PROMPT_S)
    assert resp.status_code == 404
    assert resp.json()["error"]["code"] == "KNOWLEDGE_BASE_NOT_FOUND"


def test_a_gateway_error_after_the_stream_started_is_an_event(serve: Any) -> None:
    url, gateway = serve([WAIT, NOT_FOUND], keepalive_s=0.2)
    with httpx.Client(timeout=PROMPT_S) as c, c.stream("POST", url, json=body(True)) as resp:
        assert resp.status_code == 200
        lines = resp.iter_lines()
        lines_until(lines, lambda line: line == ": keep-alive")
        gateway.release.set()
        rest = lines_until(lines, lambda line: line.startswith("data: {"))
    assert json.loads(rest[-1].removeprefix("data: "))["error"]["code"] == (
        "KNOWLEDGE_BASE_NOT_FOUND"
    )


def test_a_client_gone_while_the_answer_waits_ends_the_ask(serve: Any) -> None:
    url, gateway = serve([SOURCES, WAIT, FINAL], keepalive_s=0.2)
    with httpx.Client(timeout=PROMPT_S) as c, c.stream("POST", url, json=body(True)) as resp:
        lines = resp.iter_lines()
        lines_until(lines, lambda line: line.startswith("data: "))
    assert gateway.ended.wait(PROMPT_S), "the Ask went on after its client had gone"
    assert gateway.outcome == "cancelled"
