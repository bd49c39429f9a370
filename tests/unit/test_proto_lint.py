"""The fallback proto lint accepts our protos and catches each rule it enforces."""

from __future__ import annotations

from pathlib import Path

import pytest

from scripts import proto_lint

REPO = Path(__file__).resolve().parents[2]


def test_repository_protos_pass(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(REPO)
    paths = sorted(Path("protos").rglob("*.proto"))
    assert len(paths) == 6
    assert [p for path in paths for p in proto_lint.lint(path)] == []


BAD = """syntax = "proto3";
package ragmesh.toy;
service Toy { rpc ListThings(GetThings) returns (ListThingsResponse); }
message GetThings { int32 page_size = 1; }
message ListThingsResponse { repeated string things = 1; }
enum Color { RED = 0; COLOR_BLUE = 1; }
"""


def test_violations_are_reported(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    path = Path("protos/ragmesh/toy/v1/toy.proto")
    path.parent.mkdir(parents=True)
    path.write_text(BAD)
    problems = "\n".join(proto_lint.lint(path))
    for expected in (
        "package must be 'ragmesh.toy.v1'",
        "service Toy must end in Service",
        "rpc ListThings must use ListThingsRequest/ListThingsResponse",
        "lacks page_token",
        "lacks next_page_token",
        "enum Color must start with COLOR_UNSPECIFIED = 0",
        "Color.RED must start with COLOR_",
    ):
        assert expected in problems
