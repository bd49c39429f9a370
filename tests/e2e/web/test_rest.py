"""The REST + SSE mapping with plain HTTP (httpx), against the real stack: knowledge
bases, multipart upload, a job watched as server-sent events, documents, text,
search, and the gateway's errors as HTTP statuses."""

from __future__ import annotations

import json
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
