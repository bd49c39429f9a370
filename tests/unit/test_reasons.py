"""Every ErrorInfo reason the code raises is in the catalogue
(services/common/reasons.py) with the status code it is raised with, every
catalogued reason is raised somewhere, and docs/errors.md is generated from it."""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

from scripts.errors_doc import render
from services.common.reasons import REASONS

REPO = Path(__file__).resolve().parents[2]
EXCEPTION_CODES = {
    "InvalidArgument": "INVALID_ARGUMENT",
    "NotFound": "NOT_FOUND",
    "AlreadyExists": "ALREADY_EXISTS",
    "FailedPrecondition": "FAILED_PRECONDITION",
    "ResourceExhausted": "RESOURCE_EXHAUSTED",
    "Unauthenticated": "UNAUTHENTICATED",
    "PermissionDenied": "PERMISSION_DENIED",
    "Unavailable": "UNAVAILABLE",
    "DeadlineExceeded": "DEADLINE_EXCEEDED",
    "Cancelled": "CANCELLED",
    "Internal": "INTERNAL",
    "DeadlineExceededError": "DEADLINE_EXCEEDED",
    "RagmeshError": "(none)",
}
# Helpers whose positional argument is a reason, with the code they raise it with.
HELPERS = {
    "cancelled": (0, "CANCELLED"),
    "_fail": (2, "UNAVAILABLE"),
    "Slots": (2, "RESOURCE_EXHAUSTED"),
}


def _name(node: ast.expr) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return node.attr
    return ""


def _literal(node: ast.expr, constants: dict[str, str]) -> str | None:
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.Name):
        return constants.get(node.id)
    return None  # computed (f-strings, passed-through reasons)


def raised_reasons() -> dict[str, set[tuple[str, str]]]:
    """reason → {(code, file)} for every literal reason in services/ and ragmesh/."""
    found: dict[str, set[tuple[str, str]]] = defaultdict(set)
    files = [*REPO.glob("services/**/*.py"), *REPO.glob("ragmesh/**/*.py")]
    for path in files:
        if "/v1/" in path.as_posix():
            continue
        tree = ast.parse(path.read_text())
        constants = {
            t.id: n.value.value
            for n in tree.body
            if isinstance(n, ast.Assign) and isinstance(n.value, ast.Constant)
            for t in n.targets
            if isinstance(t, ast.Name) and isinstance(n.value.value, str)
        }
        where = path.relative_to(REPO).as_posix()
        for node in ast.walk(tree):
            if not isinstance(node, ast.Call):
                continue
            func = _name(node.func)
            for kw in node.keywords:
                reason = _literal(kw.value, constants) if kw.arg == "reason" else None
                if reason is not None and func in EXCEPTION_CODES:
                    found[reason].add((EXCEPTION_CODES[func], where))
            if func == "ErrorRecord" and len(node.args) >= 2:
                code, reason = (_literal(a, constants) for a in node.args[:2])
                if code and reason:
                    found[reason].add((code, where))
            if func in HELPERS and len(node.args) > HELPERS[func][0]:
                reason = _literal(node.args[HELPERS[func][0]], constants)
                if reason:
                    found[reason].add((HELPERS[func][1], where))
    return found


def test_every_raised_reason_is_catalogued_with_its_code() -> None:
    problems = []
    for reason, sites in sorted(raised_reasons().items()):
        entry = REASONS.get(reason)
        if entry is None:
            problems.append(f"{reason} (raised in {sorted(w for _, w in sites)}) is not catalogued")
            continue
        for code, where in sites:
            if code != entry.code:
                problems.append(f"{reason} raised as {code} in {where}; catalogued {entry.code}")
    assert not problems, "\n".join(problems)


def test_every_catalogued_reason_is_raised() -> None:
    raised = raised_reasons()
    # Raised through patterns the scan cannot read as literals.
    patterned = {"EMPTY_QUERY", "QUERY_TOO_LONG", "EMPTY_QUESTION"}
    stale = [
        name
        for name, entry in REASONS.items()
        if not entry.dynamic and name not in raised and name not in patterned
    ]
    assert not stale, f"catalogued but raised nowhere: {stale}"


def test_errors_doc_is_generated_from_the_catalogue() -> None:
    doc = (REPO / "docs" / "errors.md").read_text()
    assert render() in doc, "docs/errors.md is out of date: run `make docs-tables`"
