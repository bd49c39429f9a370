"""The generated tables of README.md and docs/ (settings, error reasons) are up to
date, and the README's table lists every RAGMESH_* setting that exists."""

from __future__ import annotations

from scripts.config_table import settings
from scripts.doc_tables import REPO, SECTION, drifted


def test_generated_tables_are_up_to_date() -> None:
    assert drifted() == [], "regenerate with `make docs-tables`"


def test_every_setting_is_documented_in_the_readme() -> None:
    text = (REPO / "README.md").read_text()
    tables = {m.group("name") for m in SECTION.finditer(text)}
    assert "config" in tables, "README.md lost its generated configuration table"
    missing = [s.env for s in settings() if f"`{s.env}`" not in text]
    assert not missing, f"add to README (make docs-tables): {missing}"


def test_every_setting_has_a_description() -> None:
    assert [s.env for s in settings() if not s.description] == []
