"""The catalogue of ErrorInfo reasons (services/common/reasons.py) as a Markdown table."""

from __future__ import annotations

from services.common.reasons import REASONS


def render() -> str:
    rows = ["| reason | status | meaning | what to do |", "|---|---|---|---|"]
    for name in sorted(REASONS):
        r = REASONS[name]
        cells = (f"`{r.name}`", f"`{r.code}`", r.meaning, r.action)
        rows.append("| " + " | ".join(c.replace("|", "/") for c in cells) + " |")
    return "\n".join(rows)
