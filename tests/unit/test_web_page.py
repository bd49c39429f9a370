"""The web page's files: served at / and /static/ with a strict Content-Security-Policy,
every module they import present, nothing loaded from another origin, and every file
in the package data (so that the wheel and the container image carry them)."""

from __future__ import annotations

import fnmatch
import re
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from devstack.procs import free_port
from services.web.app import create_app
from services.web.config import WebSettings
from services.web.page import STATIC_DIR

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def client() -> Iterator[TestClient]:
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("RAGMESH_GATEWAY_ADDR", f"127.0.0.1:{free_port()}")  # nothing listens
        with TestClient(create_app(WebSettings())) as c:
            yield c


def static_files() -> list[Path]:
    return sorted(p for p in STATIC_DIR.rglob("*") if p.is_file())


def test_the_page_is_served_at_the_root(client: TestClient) -> None:
    resp = client.get("/")
    assert resp.status_code == 200
    assert resp.headers["content-type"].startswith("text/html")
    csp = resp.headers["content-security-policy"]
    assert "default-src 'self'" in csp and "script-src 'self'" in csp
    assert "connect-src 'self'" in csp
    assert '<script type="module" src="/static/js/app.js">' in resp.text
    js = client.get("/static/js/app.js")
    assert js.status_code == 200 and "javascript" in js.headers["content-type"]
    assert client.get("/static/js/nope.js").status_code == 404


def test_every_import_resolves_and_nothing_is_external(client: TestClient) -> None:
    for path in static_files():
        text = path.read_text(encoding="utf-8")
        # No other origin: no fonts, scripts, styles or calls from elsewhere.
        assert not re.search(r"(https?:)?//[a-z0-9.-]+\.[a-z]{2,}/", text, re.I), path
        for dep in re.findall(r'^import .* from "\./([\w.]+)";$', text, re.M):
            assert (path.parent / dep).is_file(), f"{path.name} imports missing {dep}"
            assert client.get(f"/static/js/{dep}").status_code == 200
    html = (STATIC_DIR / "index.html").read_text(encoding="utf-8")
    for ref in re.findall(r'(?:src|href)="(/static/[^"]+)"', html):
        assert client.get(ref).status_code == 200, ref


def test_the_package_data_carries_every_static_file() -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    patterns = config["tool"]["setuptools"]["package-data"]["services.web"]
    web_dir = STATIC_DIR.parent
    files = static_files()
    assert files
    for path in files:
        rel = path.relative_to(web_dir).as_posix()
        assert any(fnmatch.fnmatch(rel, p) for p in patterns), f"{rel} is not package data"


def test_job_cancel_and_retry_are_in_the_schema(client: TestClient) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    assert "post" in paths["/api/v1/jobs/{job_id}/cancel"]
    assert "post" in paths["/api/v1/jobs/{job_id}/retry"]
    # The page is not an API route.
    assert "/" not in paths
