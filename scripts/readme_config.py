"""Rewrite the configuration table between the README's markers."""

from __future__ import annotations

from pathlib import Path

from scripts.config_table import markdown

README = Path(__file__).resolve().parents[1] / "README.md"
START, END = "<!-- config-table:start -->", "<!-- config-table:end -->"


def main() -> None:
    text = README.read_text()
    head, rest = text.split(START, 1)
    _, tail = rest.split(END, 1)
    README.write_text(f"{head}{START}\n{markdown()}\n{END}{tail}")
    print(f"updated {README}")


if __name__ == "__main__":
    main()
