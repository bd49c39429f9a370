"""Numbers past what Ask's fields hold (int32) are refused by the chat route's
validation, naming the field (`param`), before any gateway call: not by the SDK's
request builder as an INVALID_OPTION of "ragmesh" ("Value out of range")."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from devstack.procs import free_port
from services.web.app import create_app
from services.web.config import WebSettings

CHAT = "/v1/chat/completions"


@pytest.fixture(scope="module")
def client() -> Iterator[TestClient]:
    # Nothing listens on this port: a request that got past validation would be a 503.
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("RAGMESH_GATEWAY_ADDR", f"127.0.0.1:{free_port()}")
        with TestClient(create_app(WebSettings(mcp_enabled=False))) as c:
            yield c


@pytest.mark.parametrize(
    ("extra", "param"),
    [
        ({"max_tokens": 99999999999}, "max_tokens"),
        ({"max_completion_tokens": 2**31}, "max_completion_tokens"),
        ({"ragmesh": {"top_k": 2**31}}, "ragmesh.top_k"),
    ],
)
def test_a_number_past_int32_is_refused_naming_its_field(
    client: TestClient, extra: dict[str, Any], param: str
) -> None:
    body = {"model": "ragmesh/kb", "messages": [{"role": "user", "content": "q"}], **extra}
    for stream in (False, True):
        resp = client.post(CHAT, json={**body, "stream": stream})
        assert resp.status_code == 400
        err = resp.json()["error"]
        assert (err["code"], err["param"]) == ("INVALID_REQUEST_BODY", param), err


def test_the_schema_states_the_bounds(client: TestClient) -> None:
    schemas = client.get("/openapi.json").json()["components"]["schemas"]
    max_tokens = schemas["ChatCompletionRequest"]["properties"]["max_tokens"]["anyOf"][0]
    assert (max_tokens["minimum"], max_tokens["maximum"]) == (1, 2**31 - 1)
    assert schemas["RetrievalOptions"]["properties"]["top_k"]["maximum"] == 2**31 - 1
