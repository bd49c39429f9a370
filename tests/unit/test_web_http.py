"""The web service's own answers, before any gateway call: bad JSON, bodies over the
limit (declared and chunked), fields that fail validation, unknown routes, and a
gateway that cannot be reached (a real closed port: 503 with Retry-After)."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from devstack.procs import free_port
from services.web.app import create_app
from services.web.config import WebSettings
from services.web.limits import mcp_body_limit


@pytest.fixture(scope="module")
def client() -> Iterator[TestClient]:
    # Nothing listens on this port: every gateway call fails at once.
    dead = f"127.0.0.1:{free_port()}"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("RAGMESH_GATEWAY_ADDR", dead)
        app = create_app(WebSettings(max_body_bytes=4096, max_upload_bytes=8192))
        with TestClient(app) as c:
            yield c


def error_of(resp: object) -> dict[str, object]:
    body = resp.json()  # type: ignore[attr-defined]
    assert set(body) == {"error"}
    return dict(body["error"])


CHAT = "/v1/chat/completions"


def test_malformed_json_is_400_malformed_json(client: TestClient) -> None:
    resp = client.post(
        CHAT, content=b'{"model": "x",', headers={"content-type": "application/json"}
    )
    assert resp.status_code == 400
    err = error_of(resp)
    assert err["code"] == "MALFORMED_JSON"
    assert err["type"] == "invalid_request_error"
    assert err["status"] == "INVALID_ARGUMENT"


def test_a_missing_field_is_named(client: TestClient) -> None:
    resp = client.post(CHAT, json={"model": "ragmesh/kb"})
    assert resp.status_code == 400
    err = error_of(resp)
    assert (err["code"], err["param"]) == ("INVALID_REQUEST_BODY", "messages")


def test_a_wrong_type_is_named(client: TestClient) -> None:
    body = {"model": "ragmesh/kb", "messages": [{"role": "user", "content": "q"}], "max_tokens": -3}
    err = error_of(client.post(CHAT, json=body))
    assert (err["code"], err["param"]) == ("INVALID_REQUEST_BODY", "max_tokens")


@pytest.mark.parametrize(
    ("messages", "extra", "code"),
    [
        ([{"role": "assistant", "content": "hi"}], {}, "LAST_MESSAGE_NOT_USER"),
        ([{"role": "user", "content": "q"}], {"n": 2}, "UNSUPPORTED_N"),
        (
            [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}],
            {},
            "UNSUPPORTED_CONTENT",
        ),
        ([{"role": "user", "content": "q"}], {"model": "ragmesh/"}, "INVALID_MODEL"),
        (
            [{"role": "user", "content": "q"}],
            {"ragmesh": {"mode": "telepathic"}},
            "INVALID_OPTION",
        ),
    ],
)
def test_chat_requests_ragmesh_cannot_answer(
    client: TestClient, messages: list[object], extra: dict[str, object], code: str
) -> None:
    resp = client.post(CHAT, json={"model": "ragmesh/kb", "messages": messages, **extra})
    assert resp.status_code == 400, resp.text
    assert error_of(resp)["code"] == code


def test_a_declared_body_over_the_limit_is_413_before_reading(client: TestClient) -> None:
    resp = client.post(CHAT, content=b"x" * 5000, headers={"content-type": "application/json"})
    assert resp.status_code == 413
    err = error_of(resp)
    assert err["code"] == "BODY_TOO_LARGE"
    assert err["metadata"] == {"limit_bytes": "4096"}


def test_a_chunked_body_over_the_limit_is_cut_off(client: TestClient) -> None:
    def pieces() -> Iterator[bytes]:
        for _ in range(10):
            yield b" " * 1000  # no Content-Length: counted as it arrives

    resp = client.post(CHAT, content=pieces(), headers={"content-type": "application/json"})
    assert resp.status_code == 413
    assert error_of(resp)["code"] == "BODY_TOO_LARGE"


def test_uploads_have_their_own_larger_limit(client: TestClient) -> None:
    url = "/api/v1/knowledge-bases/kb/documents"
    # Over the JSON limit, under the upload limit: reaches the (dead) gateway.
    small = client.post(url, files={"file": ("a.txt", b"a" * 6000)})
    assert small.status_code == 503
    big = client.post(url, files={"file": ("a.txt", b"a" * 9000)})
    assert big.status_code == 413
    assert error_of(big)["code"] == "BODY_TOO_LARGE"


def test_an_upload_needs_a_file_or_text(client: TestClient) -> None:
    url = "/api/v1/knowledge-bases/kb/documents"
    resp = client.post(url, data={"document_id": "x"})
    assert resp.status_code == 400
    assert error_of(resp)["code"] == "MISSING_UPLOAD"
    resp = client.post(url, data={"text": "hello", "metadata": "{nope"})
    assert (resp.status_code, error_of(resp)["code"]) == (400, "MALFORMED_JSON")


def test_unknown_routes_and_methods(client: TestClient) -> None:
    resp = client.get("/v1/nothing-here")
    assert (resp.status_code, error_of(resp)["code"]) == (404, "NO_SUCH_ROUTE")
    resp = client.delete("/v1/chat/completions")
    assert (resp.status_code, error_of(resp)["code"]) == (405, "METHOD_NOT_ALLOWED")


def test_an_unreachable_gateway_is_503_with_retry_after(client: TestClient) -> None:
    body = {"model": "ragmesh/kb", "messages": [{"role": "user", "content": "q"}]}
    resp = client.post(CHAT, json=body)
    assert resp.status_code == 503
    assert resp.headers["retry-after"] == "1"
    err = error_of(resp)
    assert (err["code"], err["type"]) == ("GATEWAY_UNAVAILABLE", "server_error")
    # The gateway's address stays in the log, out of the answer.
    assert "127.0.0.1" not in str(err["message"])
    ready = client.get("/readyz")
    assert ready.status_code == 503
    assert client.get("/healthz").json() == {"status": "ok"}


def test_the_schema_and_docs_are_served(client: TestClient) -> None:
    schema = client.get("/openapi.json").json()
    for path in (
        "/v1/chat/completions",
        "/v1/models",
        "/api/v1/knowledge-bases",
        "/api/v1/knowledge-bases/{kb}/documents",
        "/api/v1/knowledge-bases/{kb}/search",
        "/api/v1/jobs/{job_id}/events",
        "/api/v1/knowledge-bases/{kb}/documents/{document_id}/text",
    ):
        assert path in schema["paths"], path
    docs = client.get("/docs")
    assert docs.status_code == 200 and "swagger" in docs.text.lower()


MCP = "/mcp"
MCP_HEADERS = {"content-type": "application/json", "accept": "application/json, text/event-stream"}
# The fixture's limits: the MCP `upload` tool carries a file of up to max_upload_bytes as
# base64 (4 bytes for every 3) inside a JSON-RPC envelope of up to max_body_bytes.
MCP_LIMIT = mcp_body_limit(WebSettings(max_body_bytes=4096, max_upload_bytes=8192))


def initialize(padding: int) -> bytes:
    """An MCP `initialize` request (answered without the gateway), padded with blanks."""
    message = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "initialize",
        "params": {
            "protocolVersion": "2025-06-18",
            "capabilities": {},
            "clientInfo": {"name": "test", "version": "1"},
        },
    }
    return json.dumps(message).encode() + b" " * padding


def test_the_mcp_limit_fits_a_base64_upload_in_its_envelope() -> None:
    assert len(base64.b64encode(b"x" * 8192)) + 4096 == MCP_LIMIT


def test_mcp_takes_a_file_as_large_as_rest_does() -> None:
    # The MCP SDK's own default limit (4 MiB) refused `upload` of a ~3 MiB file with a bare
    # "Request body too large", though REST takes 32 MiB: a 5 MiB request must reach MCP.
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("RAGMESH_GATEWAY_ADDR", f"127.0.0.1:{free_port()}")
        with TestClient(create_app(WebSettings())) as default:
            resp = default.post(MCP, content=initialize(5 * 1024 * 1024), headers=MCP_HEADERS)
    assert resp.status_code == 200, resp.text


def test_an_mcp_body_over_its_limit_is_413_before_reading(client: TestClient) -> None:
    # The MCP SDK reads a POST's body whole, with no limit of its own: without ours an
    # unauthenticated caller could make the web service hold any number of bytes.
    resp = client.post(MCP, content=initialize(MCP_LIMIT), headers=MCP_HEADERS)
    assert resp.status_code == 413
    body = resp.json()
    assert (body["jsonrpc"], body["id"]) == ("2.0", None)
    assert body["error"]["code"] == -32600  # JSON-RPC "invalid request", as the SDK answers
    assert str(MCP_LIMIT) in body["error"]["message"]
    assert body["error"]["data"] == {"reason": "BODY_TOO_LARGE", "limit_bytes": MCP_LIMIT}


def test_a_chunked_mcp_body_over_its_limit_is_cut_off(client: TestClient) -> None:
    def pieces() -> Iterator[bytes]:
        yield initialize(0)
        for _ in range(MCP_LIMIT // 1000 + 1):
            yield b" " * 1000  # no Content-Length: counted as it arrives

    # Counted by the MCP SDK, with the same limit (its own plain-text answer).
    resp = client.post(MCP, content=pieces(), headers=MCP_HEADERS)
    assert (resp.status_code, resp.text) == (413, "Request body too large")


@pytest.mark.parametrize("chunked", [False, True])
def test_an_mcp_body_under_its_limit_reaches_mcp(client: TestClient, chunked: bool) -> None:
    # Over the JSON limit (an `upload` of a file near the upload limit is), under MCP's.
    message = initialize(MCP_LIMIT - len(initialize(0)))
    assert 4096 < len(message) == MCP_LIMIT
    content: bytes | Iterator[bytes] = message
    if chunked:
        content = iter([message[i : i + 1000] for i in range(0, len(message), 1000)])
    resp = client.post(MCP, content=content, headers=MCP_HEADERS)
    assert resp.status_code == 200, resp.text
    assert resp.json()["result"]["serverInfo"]["name"]
