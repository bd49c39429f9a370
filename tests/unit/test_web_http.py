"""The web service's own answers, before any gateway call: bad JSON, bodies over the
limit (declared and chunked), fields that fail validation, unknown routes, and a
gateway that cannot be reached (a real closed port: 503 with Retry-After)."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
from collections.abc import AsyncIterator, Iterator

import pytest
from fastapi import FastAPI
from fastapi.responses import StreamingResponse
from fastapi.testclient import TestClient

from devstack.procs import free_port
from services.web.app import create_app
from services.web.config import WebSettings
from services.web.deps import REQUEST_ID, UNSENDABLE_KEY, forwarded_metadata
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


@pytest.mark.parametrize(
    ("method", "path", "allow"),
    [
        ("DELETE", "/v1/chat/completions", "POST"),
        ("POST", "/healthz", "GET, HEAD"),
        # GET and DELETE are two routes at one path: Allow names both.
        ("POST", "/api/v1/knowledge-bases/kb", "DELETE, GET, HEAD"),
    ],
)
def test_a_405_says_what_is_allowed(client: TestClient, method: str, path: str, allow: str) -> None:
    resp = client.request(method, path)
    assert resp.status_code == 405
    assert resp.headers["allow"] == allow  # HTTP requires it with a 405
    err = error_of(resp)
    assert (err["code"], err["type"]) == ("METHOD_NOT_ALLOWED", "invalid_request_error")


def test_head_is_answered_like_get_without_a_body(client: TestClient) -> None:
    for path, status in (("/healthz", 200), ("/readyz", 503)):
        resp = client.head(path)  # /readyz: the gateway is down here
        assert (resp.status_code, resp.content) == (status, b""), path
        assert resp.headers["content-type"] == "application/json", path


def test_headers_grpc_cannot_carry_are_made_safe() -> None:
    # Not printable ASCII in gRPC metadata failed every call: 500 and two tracebacks.
    headers = {
        "authorization": "Bearer cl\xe9",
        REQUEST_ID: "id\x01",
        "x-forwarded-for": "caf\xe9, 203.0.113.9, " + "9" * 65 + ", 198.51.100.7",
    }
    assert forwarded_metadata(headers, "10.0.0.1") == [
        ("authorization", UNSENDABLE_KEY),
        ("x-forwarded-for", "203.0.113.9, 198.51.100.7, 10.0.0.1"),
    ]
    # The stand-in key can match none: the gateway refuses keys under 8 characters.
    assert len(UNSENDABLE_KEY.split(" ", 1)[1]) < 8
    long_id = forwarded_metadata({REQUEST_ID: "x" * 129}, None)
    assert long_id == []  # the gateway makes its own request id
    # gRPC refuses metadata over 8 KiB (RESOURCE_EXHAUSTED: a 429 that is no rate limit).
    assert forwarded_metadata({"authorization": "Bearer " + "k" * 5000}, None) == [
        ("authorization", UNSENDABLE_KEY)
    ]
    # Behind a proxy it trusts, uvicorn takes the client's address from X-Forwarded-For.
    assert forwarded_metadata({}, "\x01") == []
    fine = {"authorization": "Bearer k-1 2", REQUEST_ID: "r-1", "x-forwarded-for": "1.2.3.4"}
    assert forwarded_metadata(fine, "10.0.0.1") == [
        ("authorization", "Bearer k-1 2"),
        (REQUEST_ID, "r-1"),
        ("x-forwarded-for", "1.2.3.4, 10.0.0.1"),
    ]


def test_headers_grpc_cannot_carry_reach_the_gateway(
    client: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    # The call is made (and fails here as the gateway is down) instead of a 500.
    headers = {
        "Authorization": b"Bearer \x01caf\xc3\xa9",
        "X-Request-Id": "é".encode(),
        "X-Forwarded-For": "é".encode(),
    }
    with caplog.at_level(logging.ERROR):
        resp = client.get("/api/v1/knowledge-bases", headers=headers)
    assert (resp.status_code, error_of(resp)["code"]) == (503, "GATEWAY_UNAVAILABLE")
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


def test_an_unexpected_error_is_answered_and_logged_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # An `Exception` handler made Starlette's ServerErrorMiddleware answer and then raise
    # the exception again, for the server to log a second traceback (TestClient raises it).
    def boom() -> None:
        raise RuntimeError("a bug")

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("RAGMESH_GATEWAY_ADDR", f"127.0.0.1:{free_port()}")
        app: FastAPI = create_app(WebSettings(mcp_enabled=False))
        app.add_api_route("/boom", boom)
        with TestClient(app) as test, caplog.at_level(logging.ERROR):
            resp = test.get("/boom")
    assert resp.status_code == 500
    err = error_of(resp)
    assert (err["code"], err["message"]) == ("INTERNAL_ERROR", "internal error: RuntimeError")
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == [
        "unexpected error"
    ]


def test_head_on_a_stream_ends_with_the_headers() -> None:
    # HEAD is run as GET: a server-sent-events stream must not run on after the headers.
    produced: list[int] = []

    async def endless() -> StreamingResponse:
        async def events() -> AsyncIterator[str]:
            while True:
                produced.append(1)
                yield "data: {}\n\n"
                await asyncio.sleep(0.01)

        return StreamingResponse(events(), media_type="text/event-stream")

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("RAGMESH_GATEWAY_ADDR", f"127.0.0.1:{free_port()}")
        app = create_app(WebSettings(mcp_enabled=False))
        app.add_api_route("/endless", endless)
        with TestClient(app) as test:
            resp = test.head("/endless")
    assert (resp.status_code, resp.content) == (200, b"")
    assert resp.headers["content-type"].startswith("text/event-stream")
    assert len(produced) == 1


@pytest.mark.parametrize(
    ("url", "param"),
    [
        ("/api/v1/knowledge-bases?page_size=99999999999", "page_size"),
        ("/api/v1/knowledge-bases/kb/documents?page_size=99999999999", "page_size"),
        ("/api/v1/jobs?page_size=99999999999", "page_size"),
        ("/api/v1/knowledge-bases/kb/documents/x/text?offset=99999999999999999999", "offset"),
        ("/api/v1/knowledge-bases/kb/documents/x/text?max_chars=99999999999", "max_chars"),
    ],
)
def test_a_number_out_of_range_in_a_query_is_named(
    client: TestClient, url: str, param: str
) -> None:
    # int32 / int64 fields: protobuf refused them with a bare ValueError (500, or 400
    # naming another parameter).
    resp = client.get(url)
    assert resp.status_code == 400, resp.text
    err = error_of(resp)
    assert (err["code"], err["param"]) == ("INVALID_REQUEST_BODY", param)


BIG = "1" + "0" * 400  # past a double's range: a Struct cannot hold it


@pytest.mark.parametrize(
    ("path", "body", "param"),
    [
        ("/api/v1/knowledge-bases/kb/search", {"query": "q", "top_k": 99999999999}, "top_k"),
        (
            CHAT,
            {
                "model": "ragmesh/kb",
                "messages": [{"role": "user", "content": "q"}],
                "ragmesh": {"top_k": 99999999999},
            },
            "ragmesh.top_k",
        ),
        (
            "/api/v1/knowledge-bases",
            {"knowledge_base_id": "x", "index_params": {"M": BIG}},
            "index_params",
        ),
    ],
)
def test_a_number_out_of_range_in_a_body_is_named(
    client: TestClient, path: str, body: dict[str, object], param: str
) -> None:
    content = json.dumps(body).replace(f'"{BIG}"', BIG)  # a JSON number
    resp = client.post(path, content=content, headers={"content-type": "application/json"})
    assert resp.status_code == 400, resp.text
    err = error_of(resp)
    assert (err["code"], err["param"]) == ("INVALID_REQUEST_BODY", param)


def test_options_the_gateway_cannot_take_are_named(client: TestClient) -> None:
    search = "/api/v1/knowledge-bases/kb/search"
    cases = [
        (search, {"query": "q", "mode": "telepathic"}, "mode"),
        (
            search,
            {"query": "q", "filters": [{"field": "a", "op": "~", "value": 1}]},
            "filters.0.op",
        ),
        ("/api/v1/knowledge-bases", {"knowledge_base_id": "x", "metric": "nope"}, "metric"),
    ]
    for path, body, param in cases:
        err = error_of(client.post(path, json=body))
        assert (err["code"], err["param"]) == ("INVALID_OPTION", param), body


UPLOAD = "/api/v1/knowledge-bases/kb/documents"


def test_upload_metadata_out_of_range_is_400(client: TestClient) -> None:
    resp = client.post(UPLOAD, data={"text": "x", "metadata": '{"a": ' + BIG + "}"})
    assert resp.status_code == 400, resp.text
    err = error_of(resp)
    assert (err["code"], err["param"]) == ("INVALID_REQUEST_BODY", "metadata")
    deep = client.post(UPLOAD, data={"text": "x", "metadata": "[" * 2500})
    assert (deep.status_code, error_of(deep)["code"]) == (400, "MALFORMED_JSON")


@pytest.mark.parametrize(
    ("files", "data", "param"),
    [
        ([("file", ("a.txt", b"a")), ("file", ("b.txt", b"b"))], {}, "file"),
        ([], {"text": ["one", "two"]}, "text"),
        ([("file", ("a.txt", b"a"))], {"document_id": ["a", "b"]}, "document_id"),
    ],
)
def test_an_upload_takes_each_field_once(
    client: TestClient, files: list[object], data: dict[str, object], param: str
) -> None:
    # FastAPI kept the last of two and dropped the others unseen (202).
    resp = client.post(UPLOAD, files=files or None, data=data)  # type: ignore[arg-type]
    assert resp.status_code == 400, resp.text
    err = error_of(resp)
    assert (err["code"], err["param"]) == ("INVALID_REQUEST_BODY", param)
    if param in ("file", "text"):
        assert "one file per request" in str(err["message"])


def test_a_text_field_has_the_upload_limit() -> None:
    # Starlette's multipart parser limits a field to 1 MiB; a `file` part could be 32.
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("RAGMESH_GATEWAY_ADDR", f"127.0.0.1:{free_port()}")
        app = create_app(WebSettings(max_upload_bytes=4 * 1024 * 1024, mcp_enabled=False))
        with TestClient(app) as test:
            text = "a" * (2 * 1024 * 1024)
            resp = test.post(UPLOAD, data={"text": text, "file_name": "t.txt"})
            # Past the parser: the (closed) gateway's answer.
            assert (resp.status_code, error_of(resp)["code"]) == (503, "GATEWAY_UNAVAILABLE")
            over = test.post(UPLOAD, data={"text": text * 2, "file_name": "t.txt"})
            assert (over.status_code, error_of(over)["code"]) == (413, "BODY_TOO_LARGE")


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
    # The error answers as they are: OpenAI's shape, 400 for validation (never a 422).
    for path, operations in schema["paths"].items():
        for method, operation in operations.items():
            responses = operation["responses"]
            assert "422" not in responses, (method, path)
            if path.startswith(("/v1/", "/api/")):
                ref = responses["400"]["content"]["application/json"]["schema"]["$ref"]
                assert ref == "#/components/schemas/ErrorResponse", (method, path)
    schemas = schema["components"]["schemas"]
    assert "HTTPValidationError" not in schemas
    assert set(schemas["ErrorDetail"]["properties"]) >= {"message", "type", "param", "code"}
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
