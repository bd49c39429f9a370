"""Pure parts of the `ragmesh` CLI: file collection, filters, exit codes, help."""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest
from typer.testing import CliRunner

from ragmesh.cli import app
from ragmesh.cli_common import (
    EXIT_AUTH,
    EXIT_NOT_FOUND,
    EXIT_SERVER,
    EXIT_UNAVAILABLE,
    exit_code_for,
)
from ragmesh.cli_eval import search_modes
from ragmesh.cli_ingest import collect_files
from ragmesh.cli_query import parse_filters
from ragmesh.client import NotFoundError, RagmeshError, UnauthenticatedError, UnavailableError


def test_collect_files_walks_folders_and_keeps_named_files(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    (tmp_path / ".git").mkdir()
    (tmp_path / "top.md").write_text("# t")
    (tmp_path / "a" / "intro.md").write_text("# a")
    (tmp_path / "b" / "intro.md").write_text("# b")
    (tmp_path / "b" / "image.png").write_bytes(b"\x89PNG")
    (tmp_path / ".git" / "config.txt").write_text("hidden")
    odd = tmp_path / "notes.rst"
    odd.write_text("named explicitly")
    items, skipped = collect_files([tmp_path, odd, tmp_path / "top.md"])
    by_path = {i.path.relative_to(tmp_path).as_posix(): i for i in items}
    assert sorted(by_path) == ["a/intro.md", "b/intro.md", "notes.rst", "top.md"]
    # Same base name in two folders: two documents.
    assert by_path["a/intro.md"].document_id == "a-intro.md"
    assert by_path["b/intro.md"].document_id == "b-intro.md"
    assert by_path["top.md"].document_id == ""  # the gateway derives it from the name
    assert by_path["notes.rst"].file_name == "notes.rst"
    assert [p.name for p in skipped] == ["image.png"]


def test_collect_files_missing_path(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no such file or folder"):
        collect_files([tmp_path / "missing"])


def test_parse_filters() -> None:
    assert parse_filters(["language=en", "metadata.team = x=y"]) == [
        ("language", "eq", "en"),
        ("metadata.team", "eq", " x=y"),
    ]
    with pytest.raises(ValueError, match="FIELD=VALUE"):
        parse_filters(["language"])


@pytest.mark.parametrize(
    ("err", "code"),
    [
        (NotFoundError("x"), EXIT_NOT_FOUND),
        (UnauthenticatedError("x"), EXIT_AUTH),
        (UnavailableError("x"), EXIT_UNAVAILABLE),
        (RagmeshError("x", code=grpc.StatusCode.DATA_LOSS), EXIT_SERVER),
    ],
)
def test_exit_codes(err: RagmeshError, code: int) -> None:
    assert exit_code_for(err) == code


@pytest.mark.parametrize(
    "command",
    [
        ["kb", "create"],
        ["kb", "list"],
        ["kb", "delete"],
        ["docs", "list"],
        ["docs", "delete"],
        ["jobs"],
        ["jobs", "retry"],
        ["jobs", "cancel"],
        ["ingest"],
        ["search"],
        ["ask"],
        ["eval"],
        ["status"],
        ["serve"],
    ],
)
def test_every_command_has_help_with_examples(command: list[str]) -> None:
    result = CliRunner().invoke(app, [*command, "--help"], env={"COLUMNS": "120"})
    assert result.exit_code == 0, result.output
    assert "Examples:" in result.output
    assert f"ragmesh {' '.join(command)}" in result.output


def test_unreachable_gateway_exit_code(tmp_path: Path) -> None:
    from devstack.procs import free_port

    env = {
        "RAGMESH_GATEWAY_ADDR": f"127.0.0.1:{free_port()}",
        "RAGMESH_API_KEY": "k" * 12,
        "RAGMESH_CONFIG": str(tmp_path / "none.json"),
    }
    result = CliRunner().invoke(app, ["kb", "list"], env=env)
    assert result.exit_code == EXIT_UNAVAILABLE
    assert "UNAVAILABLE" in result.output and "make run" in result.output


def test_eval_rejects_a_folder_that_is_no_data_set(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["eval", str(tmp_path)])
    assert result.exit_code == 2
    assert "no corpus.jsonl" in result.output


def test_eval_modes_are_one_or_several_distinct_search_modes() -> None:
    assert search_modes(None) == [None] and search_modes(" ") == [None]
    assert search_modes("Dense, sparse,hybrid") == ["dense", "sparse", "hybrid"]
    assert "unknown search mode 'bm25'" in str(search_modes("dense,bm25"))
    assert "twice" in str(search_modes("dense,dense"))


def test_eval_rejects_an_unknown_mode_before_connecting(tmp_path: Path) -> None:
    (tmp_path / "corpus.jsonl").write_text('{"id": "p1", "title": "", "text": "Text."}\n')
    (tmp_path / "qa.jsonl").write_text(
        '{"id": "q1", "question": "What?", "answers": ["Text"], "doc_id": "p1"}\n'
    )
    result = CliRunner().invoke(app, ["eval", str(tmp_path), "--mode", "dense,vector"])
    assert result.exit_code == 2
    assert "unknown search mode 'vector'" in result.output
