"""The `ragmesh` command line against a whole stack started by the launcher
(`make run`), found through the client config alone — no flags, as a user
would type the commands after `make run`."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from devstack.launched import REPO, STARTUP_WAIT_S, LaunchedStack

pytestmark = [pytest.mark.slow, pytest.mark.llm]


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LaunchedStack]:
    launched = LaunchedStack(tmp_path_factory.mktemp("cli-stack"), demo=True).start()
    try:
        launched.wait_for_line(r"^ragmesh is up\.$", timeout=STARTUP_WAIT_S)
        launched.wait_for_line(r"knowledge base `demo` ready: 4 documents", timeout=600)
        yield launched
    finally:
        launched.stop()
        launched.kill_leftovers()


def ragmesh(
    stack: LaunchedStack, *args: str, timeout: float = 300, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ragmesh.cli", *args],
        cwd=REPO,
        env={**stack.cli_env(), **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def as_json(done: subprocess.CompletedProcess[str]) -> Any:
    try:
        return json.loads(done.stdout)
    except ValueError:
        raise AssertionError(
            f"not JSON (exit {done.returncode}):\n{done.stdout}\n{done.stderr}"
        ) from None


def test_status(stack: LaunchedStack) -> None:
    done = ragmesh(stack, "status")
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.count("SERVING") == 5
    assert "API key: accepted" in done.stdout


def test_kb_create_list_delete_and_exit_codes(stack: LaunchedStack) -> None:
    created = as_json(ragmesh(stack, "kb", "create", "cli-scratch", "--description", "t", "--json"))
    assert created["knowledge_base_id"] == "cli-scratch"
    assert created["dimension"] == 384
    again = ragmesh(stack, "kb", "create", "cli-scratch")
    assert again.returncode == 4, again.stderr
    assert "ALREADY_EXISTS" in again.stderr
    listed = as_json(ragmesh(stack, "kb", "list", "--json"))
    assert {"demo", "cli-scratch"} <= {kb["knowledge_base_id"] for kb in listed}
    table = ragmesh(stack, "kb", "list")
    assert "cli-scratch" in table.stdout and "demo" in table.stdout
    bad = ragmesh(stack, "kb", "create", "Bad Name!")
    assert bad.returncode == 2 and "INVALID_ARGUMENT" in bad.stderr
    # The server's message verbatim: not read as Rich markup, never a MarkupError traceback.
    assert "'Bad Name!' must match ^[a-z0-9][a-z0-9_-]{0,62}$" in bad.stderr, bad.stderr
    odd = ragmesh(stack, "docs", "list", "--kb", "[/x]")
    assert odd.returncode == 2 and "'[/x]'" in odd.stderr, odd.stderr
    odd_filter = ragmesh(stack, "search", "q", "--filter", "metadata.[/b]=1")
    assert odd_filter.returncode == 2 and "'metadata.[/b]'" in odd_filter.stderr, odd_filter.stderr
    assert "Traceback" not in odd.stderr + odd_filter.stderr
    assert ragmesh(stack, "kb", "delete", "cli-scratch", "--yes").returncode == 0
    missing = ragmesh(stack, "kb", "delete", "cli-scratch", "--yes")
    assert missing.returncode == 3 and "NOT_FOUND" in missing.stderr
    wrong_key = ragmesh(stack, "kb", "list", env={"RAGMESH_API_KEY": "not-a-valid-key"})
    assert wrong_key.returncode == 5 and "UNAUTHENTICATED" in wrong_key.stderr


def test_docs_download_writes_the_original_or_says_why_not(
    stack: LaunchedStack, tmp_path: Path
) -> None:
    out = tmp_path / "overview.md"
    done = ragmesh(stack, "docs", "download", "ragmesh-overview.md", "-o", str(out))
    assert done.returncode == 0, done.stdout + done.stderr
    assert out.read_text().startswith("# ragmesh overview")
    missing = tmp_path / "missing" / "overview.md"
    failed = ragmesh(stack, "docs", "download", "ragmesh-overview.md", "-o", str(missing))
    assert failed.returncode == 1, failed.stdout + failed.stderr
    assert failed.stderr == f"error: cannot write {missing}: No such file or directory\n"


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("docs")
    (root / "guides").mkdir()
    (root / "guides" / "lighthouse.md").write_text(
        "# Lighthouse keeping\n\nThe Skerryvore lighthouse keeper trims the lamp wick every "
        "evening at dusk and records the weather in the log book.\n"
    )
    (root / "teapots.html").write_text(
        "<html><head><title>Teapots</title></head><body><h1>Teapots</h1><p>A Yixing clay "
        "teapot should be seasoned with one kind of tea only.</p></body></html>"
    )
    (root / "notes.txt").write_text("Basalt columns form when thick lava cools slowly.\n")
    (root / "broken.pdf").write_bytes(b"%PDF-1.4\n1 0 obj\n<< /Type /Catalog ")  # truncated
    (root / "photo.png").write_bytes(b"\x89PNG\r\n\x1a\n")  # skipped: not a document
    return root


def to_ms(timestamp: str) -> tuple[str, str]:
    """An RFC 3339 timestamp (0, 3, 6 or 9 fractional digits) as a sortable pair, to the ms."""
    seconds, _, fraction = timestamp.rstrip("Z").partition(".")
    return seconds, (fraction + "000")[:3]


def test_ingest_folder_with_one_corrupt_file(stack: LaunchedStack, folder: Path) -> None:
    done = ragmesh(stack, "ingest", str(folder), "--kb", "cli-docs", "--create", "--wait", "--json")
    assert done.returncode == 1, done.stdout + done.stderr  # one file failed
    report = as_json(done)
    by_name = {Path(r["path"]).name: r for r in report["results"]}
    assert set(by_name) == {"lighthouse.md", "teapots.html", "notes.txt", "broken.pdf"}
    for name in ("lighthouse.md", "teapots.html", "notes.txt"):
        assert by_name[name]["state"] == "succeeded", by_name[name]
        assert by_name[name]["chunks"] >= 1
    broken = by_name["broken.pdf"]
    assert broken["state"] == "failed"
    assert broken["reason"], broken  # e.g. CORRUPT_DOCUMENT, with a message
    assert broken["message"]
    assert by_name["lighthouse.md"]["document_id"] == "guides-lighthouse.md"
    assert [Path(p).name for p in report["skipped"]] == ["photo.png"]
    assert report["failed"] == 1

    # The same folder again, as a table: unchanged content is not embedded again.
    table = ragmesh(stack, "ingest", str(folder), "--kb", "cli-docs", "--wait")
    assert table.returncode == 1
    assert "3 of 4 files indexed, 1 failed" in table.stdout
    assert "broken.pdf" in table.stdout and "failed" in table.stdout

    jobs = as_json(ragmesh(stack, "jobs", "--kb", "cli-docs", "--state", "failed", "--json"))
    assert jobs and all(j["state"] == "JOB_STATE_FAILED" for j in jobs)
    assert {j["file_name"] for j in jobs} == {"broken.pdf"}
    # The newest first (the second ingest's jobs before the first's), --oldest-first the
    # other way round.
    newest = as_json(ragmesh(stack, "jobs", "--kb", "cli-docs", "--json"))
    oldest = as_json(ragmesh(stack, "jobs", "--kb", "cli-docs", "--oldest-first", "--json"))
    assert len(newest) == len(oldest) >= 8
    assert [j["job_id"] for j in newest] == [j["job_id"] for j in reversed(oldest)]
    # (to the millisecond: the job index's resolution; within one, by job id)
    times = [to_ms(j["create_time"]) for j in newest]
    assert times == sorted(times, reverse=True)

    docs = as_json(ragmesh(stack, "docs", "list", "--kb", "cli-docs", "--json"))
    states = {d["document_id"]: d["state"] for d in docs}
    assert states["guides-lighthouse.md"] == "DOCUMENT_STATE_INDEXED"


def test_search_then_delete_a_document(stack: LaunchedStack, folder: Path) -> None:
    # Depends on the folder ingested above (module order).
    hits = as_json(ragmesh(stack, "search", "Yixing clay teapot", "--kb", "cli-docs", "--json"))
    assert hits["hits"][0]["file_name"] == "teapots.html"
    table = ragmesh(
        stack, "search", "who trims the lamp wick", "--kb", "cli-docs", "--mode", "dense"
    )
    assert table.returncode == 0
    assert "lighthouse.md" in table.stdout and "chars" in table.stdout
    assert ragmesh(stack, "docs", "delete", "teapots.html", "--kb", "cli-docs").returncode == 0
    after = as_json(ragmesh(stack, "search", "Yixing clay teapot", "--kb", "cli-docs", "--json"))
    assert all(h["document_id"] != "teapots.html" for h in after["hits"])
    bad_mode = ragmesh(stack, "search", "x", "--kb", "cli-docs", "--mode", "fuzzy")
    assert bad_mode.returncode == 2 and "unknown search mode" in bad_mode.stderr


def test_ask_the_demo_streams_an_answer_with_sources(stack: LaunchedStack) -> None:
    # A short answer keeps the test quick on a loaded machine (the LLM shares two cores).
    done = ragmesh(
        stack,
        "ask",
        "What is the name of the ragmesh mascot?",
        "--temperature",
        "0",
        "--max-tokens",
        "48",
    )
    assert done.returncode == 0, done.stdout + done.stderr
    answer, _, sources = done.stdout.partition("Sources")
    assert answer.strip()
    assert "[1] " in sources and "chars " in sources
    assert "ragmesh-overview.md" in sources
    data = as_json(
        ragmesh(stack, "ask", "What is the mascot of ragmesh?", "--max-tokens", "48", "--json")
    )
    assert data["sources"]
    # `auto` with the bundled (small) LLM: a verbatim answer, each sentence cited.
    assert data["answer_mode"] == "verbatim" and not data["abstained"], data
    assert data["citations"]
    for citation in data["citations"]:
        assert citation["document_id"] and citation["end_offset"] > citation["start_offset"]
        assert citation["quote"] in data["answer"]
        length = citation["quote_end_offset"] - citation["quote_start_offset"]
        assert length == len(citation["quote"])


def test_eval_on_the_shared_data_set(
    stack: LaunchedStack, shared_data: Path, tmp_path: Path
) -> None:
    out = tmp_path / "eval.json"
    done = ragmesh(
        stack,
        "eval",
        str(shared_data / "cmrc2018-trial"),
        "--limit",
        "5",
        "--max-docs",
        "15",
        "--retrieval-only",
        "--mode",
        "hybrid,dense,sparse",
        "--json",
        str(out),
        timeout=900,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "recall@1" in done.stdout and "mrr@10" in done.stdout
    report = json.loads(out.read_text())
    metrics = report["metrics"]
    # One ingestion, each mode scored on it; the first is the report's main figures.
    by_mode = report["metrics_by_mode"]
    assert list(by_mode) == ["hybrid", "dense", "sparse"] and by_mode["hybrid"] == metrics
    assert all(m["questions"] == 5 for m in by_mode.values())
    assert report["mode"] == "hybrid"
    assert metrics["questions"] == 5
    assert report["ingest"]["documents"] == 15 and report["ingest"]["failed"] == 0
    assert report["language"] == "chinese"
    # Gold passages among 15: retrieval must find most of them in the top 5.
    assert metrics["recall@5"] >= 0.6, metrics
    assert 0 <= metrics["recall@1"] <= metrics["recall@5"] <= metrics["recall@10"] <= 1
    assert metrics["answer_contains_gold"] is None  # --retrieval-only
    # The evaluation knowledge base is removed afterwards.
    kbs = as_json(ragmesh(stack, "kb", "list", "--json"))
    assert not any(kb["knowledge_base_id"].startswith("eval-") for kb in kbs)


@pytest.fixture(scope="module")
def sdk_venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The ragmesh wheel, built from this checkout, in a fresh virtual environment
    without any extra: only the SDK's and the CLI's own dependencies."""
    base = tmp_path_factory.mktemp("sdk-wheel")
    build = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
         "-w", str(base / "dist"), str(REPO)],
        capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    assert build.returncode == 0, build.stdout + build.stderr
    (wheel,) = (base / "dist").glob("ragmesh-*.whl")
    venv = base / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    install = subprocess.run(
        [str(venv / "bin" / "pip"), "install", "--quiet", str(wheel)],
        capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    assert install.returncode == 0, install.stdout + install.stderr
    return venv


def test_the_sdk_wheel_installs_alone_and_talks_to_the_stack(
    stack: LaunchedStack, sdk_venv: Path, tmp_path: Path
) -> None:
    def run(*argv: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            argv, cwd=tmp_path, env=stack.cli_env(), capture_output=True, text=True,
            timeout=300, check=False,
        )  # fmt: skip

    installed = run(str(sdk_venv / "bin" / "pip"), "list", "--format", "json")
    names = {p["name"].lower() for p in json.loads(installed.stdout)}
    assert "ragmesh" in names and "grpcio" in names
    server_only = {"torch", "pymilvus", "milvus-lite", "celery", "grpcio-tools", "redis", "openai"}
    assert not names & server_only, names & server_only
    cli = str(sdk_venv / "bin" / "ragmesh")
    status = run(cli, "status", "--json")
    assert status.returncode == 0, status.stdout + status.stderr
    assert json.loads(status.stdout)["healthy"] is True
    search = run(cli, "search", "What is ragmesh?", "--json")
    assert search.returncode == 0, search.stdout + search.stderr
    assert json.loads(search.stdout)["hits"], search.stdout
    # The stubs came with the wheel (generated at build time), not from this checkout.
    where = run(
        str(sdk_venv / "bin" / "python"),
        "-c",
        "import ragmesh.gateway.v1.gateway_pb2 as m; print(m.__file__)",
    )
    assert str(sdk_venv) in where.stdout, where.stdout + where.stderr
    serve = run(cli, "serve", "gateway")
    assert serve.returncode == 2
    assert "pip install 'ragmesh[server]'" in serve.stderr and serve.stderr.count("\n") == 1
