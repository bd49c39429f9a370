"""The README's configuration table lists every RAGMESH_* setting that exists."""

from __future__ import annotations

from pathlib import Path

from scripts.config_table import markdown, settings

README = Path(__file__).resolve().parents[2] / "README.md"
START, END = "<!-- config-table:start -->", "<!-- config-table:end -->"


def test_every_setting_is_documented_in_the_readme() -> None:
    text = README.read_text()
    missing = [s.env for s in settings() if f"`{s.env}`" not in text]
    assert not missing, f"add to README (python -m scripts.config_table): {missing}"


def test_readme_table_is_the_generated_one() -> None:
    text = README.read_text()
    table = text[text.index(START) + len(START) : text.index(END)].strip()
    assert table == markdown().strip(), "regenerate with `make config-table`"


def test_every_setting_has_a_description() -> None:
    assert [s.env for s in settings() if not s.description] == []
