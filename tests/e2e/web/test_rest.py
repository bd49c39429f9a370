"""The REST + SSE mapping with plain HTTP (httpx), against the real stack: knowledge
bases, multipart upload, a job watched as server-sent events, documents, text,
search, and the gateway's errors as HTTP statuses."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx

from tests.e2e.web.conftest import KB, MAX_WEB_UPLOAD, WebStack

API = "/api/v1"


def watch(web: WebStack, job_id: str) -> list[tuple[str, dict[str, Any]]]:
    """The job's server-sent events until `end`: (event name, data) pairs."""
    events: list[tuple[str, dict[str, Any]]] = []
    name = "message"
    with httpx.stream(
        "GET", f"{web.url}{API}/jobs/{job_id}/events", headers=web.alpha, timeout=240
    ) as resp:
        assert resp.status_code == 200
        assert resp.headers["content-type"].startswith("text/event-stream")
        for line in resp.iter_lines():
            if line.startswith("event: "):
                name = line[len("event: ") :]
            elif line.startswith("data: "):
                events.append((name, json.loads(line[len("data: ") :])))
                if name == "end":
                    break
    return events


def test_knowledge_base_lifecycle(web: WebStack) -> None:
    http = httpx.Client(base_url=web.url + API, headers=web.alpha, timeout=60)
    created = http.post(
        "/knowledge-bases", json={"knowledge_base_id": "rest-kb", "description": "via REST"}
    )
    assert created.status_code == 201, created.text
    assert created.json()["knowledge_base_id"] == "rest-kb"
    again = http.post("/knowledge-bases", json={"knowledge_base_id": "rest-kb"})
    assert again.status_code == 409
    assert again.json()["error"]["status"] == "ALREADY_EXISTS"
    bad = http.post("/knowledge-bases", json={"knowledge_base_id": "Not Valid!"})
    assert (bad.status_code, bad.json()["error"]["status"]) == (400, "INVALID_ARGUMENT")
    bad_metric = http.post("/knowledge-bases", json={"knowledge_base_id": "x", "metric": "nope"})
    assert bad_metric.json()["error"]["code"] == "INVALID_OPTION"
    ids = [kb["knowledge_base_id"] for kb in http.get("/knowledge-bases").json()["knowledge_bases"]]
    assert {"rest-kb", KB} <= set(ids)
    assert http.get("/knowledge-bases/rest-kb").json()["description"] == "via REST"
    assert http.delete("/knowledge-bases/rest-kb").status_code == 204
    gone = http.get("/knowledge-bases/rest-kb")
    assert (gone.status_code, gone.json()["error"]["code"]) == (404, "KNOWLEDGE_BASE_NOT_FOUND")
    # Unauthenticated: no key at all.
    assert httpx.get(f"{web.url}{API}/knowledge-bases").status_code == 401


def test_upload_watch_read_search_and_delete_a_document(web: WebStack) -> None:
    http = httpx.Client(base_url=web.url + API, headers=web.alpha, timeout=60)
    body = b"# Tides\n\nThe Quellmar tide mill grinds barley only at spring tides.\n"
    resp = http.post(
        f"/knowledge-bases/{KB}/documents",
        files={"file": ("tides.md", body, "text/markdown")},
        data={"metadata": json.dumps({"team": "mills"})},
    )
    assert resp.status_code == 202, resp.text
    job = resp.json()["job"]
    assert resp.json()["document"]["document_id"] == "tides.md"
    events = watch(web, job["job_id"])
    assert events[-1][0] == "end"
    states = [data["state"] for name, data in events if name == "job"]
    assert states[-1] == "JOB_STATE_SUCCEEDED", states
    jobs = http.get("/jobs", params={"knowledge_base_id": KB}).json()["jobs"]
    assert job["job_id"] in {j["job_id"] for j in jobs}
    assert http.get(f"/jobs/{job['job_id']}").json()["state"] == "JOB_STATE_SUCCEEDED"
    docs = http.get(f"/knowledge-bases/{KB}/documents").json()["documents"]
    doc = next(d for d in docs if d["document_id"] == "tides.md")
    assert doc["metadata"] == {"team": "mills"} and isinstance(doc["size_bytes"], int)
    text = http.get(f"/knowledge-bases/{KB}/documents/tides.md/text").json()
    assert "Quellmar" in text["text"]
    hits = http.post(
        f"/knowledge-bases/{KB}/search",
        json={"query": "Which mill grinds barley at spring tides?", "top_k": 3},
    ).json()["hits"]
    assert hits[0]["document_id"] == "tides.md"
    assert text["text"][hits[0]["start_offset"] : hits[0]["end_offset"]] == hits[0]["text"]
    filtered = http.post(
        f"/knowledge-bases/{KB}/search",
        json={
            "query": "barley",
            "filters": [{"field": "document_id", "op": "eq", "value": "reactors.md"}],
        },
    ).json()["hits"]
    assert filtered and {h["document_id"] for h in filtered} == {"reactors.md"}
    assert http.delete(f"/knowledge-bases/{KB}/documents/tides.md").status_code == 204
    gone = http.get(f"/knowledge-bases/{KB}/documents/tides.md")
    assert (gone.status_code, gone.json()["error"]["code"]) == (404, "DOCUMENT_NOT_FOUND")


def test_text_upload_and_limits(web: WebStack) -> None:
    http = httpx.Client(base_url=web.url + API, headers=web.alpha, timeout=60)
    resp = http.post(
        f"/knowledge-bases/{KB}/documents",
        data={"text": "Plain text notes.", "file_name": "notes.txt", "document_id": "notes"},
    )
    assert resp.status_code == 202, resp.text
    assert watch(web, resp.json()["job"]["job_id"])[-2][1]["state"] == "JOB_STATE_SUCCEEDED"
    # Larger than the web service's upload limit: 413 before the gateway sees it.
    big = http.post(
        f"/knowledge-bases/{KB}/documents",
        files={"file": ("big.txt", b"a" * (MAX_WEB_UPLOAD + 1), "text/plain")},
    )
    assert (big.status_code, big.json()["error"]["code"]) == (413, "BODY_TOO_LARGE")
    # A job id that cannot exist: the gateway's INVALID_ARGUMENT as 400.
    bad = http.get("/jobs/not-a-job")
    assert (bad.status_code, bad.json()["error"]["status"]) == (400, "INVALID_ARGUMENT")
    # Unknown job state filter.
    bad = http.get("/jobs", params={"state": "sleeping"})
    assert (bad.status_code, bad.json()["error"]["code"]) == (400, "INVALID_OPTION")
    assert http.delete(f"/knowledge-bases/{KB}/documents/notes").status_code == 204


def test_headers_grpc_cannot_carry(web: WebStack) -> None:
    # Bytes that are not printable ASCII in these headers failed every call before it
    # left the web service: 500 INTERNAL_ERROR and two tracebacks, no key needed.
    url = f"{web.url}{API}/knowledge-bases"
    # Each from a source of its own: the gateway locks a source out after 3 failures.
    source = {"X-Forwarded-For": "203.0.113.40"}
    wrong = httpx.get(url, headers={"Authorization": "Bearer wrong-key-0001", **source})
    assert wrong.status_code == 401
    # The last: too long for gRPC metadata (it was a 429 RESOURCE_EXHAUSTED).
    keys = ["Bearer é".encode(), b"Bearer \x01alpha-key-0001", b"Bearer " + b"k" * 9000]
    for i, key in enumerate(keys):
        source = {"X-Forwarded-For": f"203.0.113.{41 + i}"}
        resp = httpx.get(url, headers={"Authorization": key, **source})
        assert resp.status_code == 401, resp.text
        assert resp.json() == wrong.json()  # as any wrong key: the gateway's answer
    for header in ("X-Request-Id", "X-Forwarded-For"):
        resp = httpx.get(url, headers={**web.alpha, header: "é, \x01".encode()})
        assert resp.status_code == 200, (header, resp.text)


def test_head_is_answered_like_get(web: WebStack) -> None:
    head = httpx.head(f"{web.url}/v1/models", headers=web.alpha)
    assert (head.status_code, head.content) == (200, b"")
    assert head.headers["content-type"] == "application/json"


def test_the_error_domains_docs_show_are_real(web: WebStack) -> None:
    # docs/web.md's example showed "gateway"; the gateway's errors carry "gateway.ragmesh".
    doc = (Path(__file__).resolve().parents[3] / "docs" / "web.md").read_text()
    gone = httpx.get(f"{web.url}{API}/knowledge-bases/nope", headers=web.alpha).json()["error"]
    assert gone["code"] == "KNOWLEDGE_BASE_NOT_FOUND"
    assert f'"domain": "{gone["domain"]}"' in doc, gone
    # The web service's own: a 405, with its Allow header.
    not_allowed = httpx.put(f"{web.url}{API}/knowledge-bases", headers=web.alpha)
    assert f'"domain": "{not_allowed.json()["error"]["domain"]}"' in doc
    assert not_allowed.headers["allow"] == "GET, HEAD, POST"


def test_files_of_a_folder_keep_their_sub_folders_apart(web: WebStack) -> None:
    """The page sends a folder's files with `path_in_folder`: `a/README.md` and
    `b/README.md` were both `README.md`, the second silently replacing the first."""
    http = httpx.Client(base_url=web.url + API, headers=web.alpha, timeout=60)
    ids = []
    for folder in ("a", "b"):
        resp = http.post(
            f"/knowledge-bases/{KB}/documents",
            files={"file": (f"docs/{folder}/README.md", f"# {folder}\n".encode(), "text/markdown")},
            data={"file_name": f"docs/{folder}/README.md", "path_in_folder": f"{folder}/README.md"},
        )
        assert resp.status_code == 202, resp.text
        ids.append(resp.json()["document"]["document_id"])
    assert ids == ["a-README.md", "b-README.md"]
    for doc_id in ids:
        assert http.delete(f"/knowledge-bases/{KB}/documents/{doc_id}").status_code == 204
