"""A stand-in for an OpenAI-compatible server, for the faults the real llama.cpp server
cannot be made to produce: malformed streams, 429 and 5xx answers. Everything else is
tested against the real server.

It runs in a thread of the test process; each POST to /v1/chat/completions takes the
next scripted reply (the last one repeats), and every request is recorded.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Reply:
    status: int = 200
    body: bytes = b""
    content_type: str = "text/event-stream"
    headers: dict[str, str] = field(default_factory=dict)


def sse(*events: str | dict[str, Any]) -> bytes:
    """A server-sent-event body; dicts become JSON."""
    lines = []
    for event in events:
        data = json.dumps(event) if isinstance(event, dict) else event
        lines.append(f"data: {data}\n\n")
    return "".join(lines).encode()


def chunk(text: str | None = None, finish: str | None = None) -> dict[str, Any]:
    delta = {} if text is None else {"role": "assistant", "content": text}
    return {
        "id": "chatcmpl-standin",
        "object": "chat.completion.chunk",
        "created": 0,
        "model": "standin",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }


def good_stream(text: str = "Paris [1].") -> Reply:
    return Reply(body=sse(chunk(text), chunk(None, "stop"), "[DONE]"))


class StandInLLM:
    def __init__(self, replies: list[Reply] | None = None) -> None:
        self.replies = list(replies or [good_stream()])
        self.requests: list[dict[str, Any]] = []
        #: the HTTP headers of each request, in order
        self.received_headers: list[dict[str, str]] = []
        self._lock = threading.Lock()
        standin = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def _send(self, reply: Reply) -> None:
                self.send_response(reply.status)
                self.send_header("Content-Type", reply.content_type)
                self.send_header("Content-Length", str(len(reply.body)))
                for key, value in reply.headers.items():
                    self.send_header(key, value)
                self.end_headers()
                self.wfile.write(reply.body)

            def do_GET(self) -> None:
                body = json.dumps({"object": "list", "data": [{"id": "standin"}]}).encode()
                self._send(Reply(body=body, content_type="application/json"))

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", 0))
                payload = json.loads(self.rfile.read(length) or b"{}")
                with standin._lock:
                    standin.requests.append({"path": self.path, **payload})
                    standin.received_headers.append({k.lower(): v for k, v in self.headers.items()})
                    if not self.path.endswith("/chat/completions"):  # no tokenize endpoint
                        reply = Reply(status=404, body=b"{}", content_type="application/json")
                    elif len(standin.replies) > 1:
                        reply = standin.replies.pop(0)
                    else:
                        reply = standin.replies[0]
                self._send(reply)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/v1"

    @property
    def chat_requests(self) -> list[dict[str, Any]]:
        return [r for r in self.requests if r["path"].endswith("/chat/completions")]

    def __enter__(self) -> StandInLLM:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
