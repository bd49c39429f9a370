"""Fallback proto lint for machines where `buf` cannot run.

Checks the rules of ARCHITECTURE.md §4 that buf's STANDARD set enforces and we
rely on: package = folder path and versioned, services end in `Service`, RPCs
take `<Rpc>Request` and return `<Rpc>Response`, enum values are prefixed with
the enum name and start with `<ENUM>_UNSPECIFIED = 0`, list methods paginate.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

ROOT = Path("protos")


def _upper_snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).upper()


def _messages(text: str) -> dict[str, str]:
    """Top-level message name → body (nested braces balanced)."""
    found: dict[str, str] = {}
    for match in re.finditer(r"^message (\w+) \{", text, re.M):
        depth, i = 1, match.end()
        while depth:
            depth += {"{": 1, "}": -1}.get(text[i], 0)
            i += 1
        found[match.group(1)] = text[match.end() : i - 1]
    return found


def lint(path: Path) -> list[str]:  # noqa: C901 - one pass over the proto file, a rule per branch
    text = path.read_text()
    problems: list[str] = []
    rel = path.relative_to(ROOT)
    package = re.search(r"^package ([\w.]+);", text, re.M)
    want = ".".join(rel.parent.parts)
    if not package or package.group(1) != want:
        problems.append(f"package must be {want!r} (the folder)")
    if not re.search(r"\.v\d+$", want):
        problems.append("package must end in a version (.v1)")
    messages = _messages(text)
    for service in re.findall(r"^service (\w+)", text, re.M):
        if not service.endswith("Service"):
            problems.append(f"service {service} must end in Service")
    for rpc, req, resp in re.findall(
        r"rpc (\w+)\((?:stream )?([\w.]+)\) returns \((?:stream )?([\w.]+)\)", text
    ):
        if req != f"{rpc}Request" or resp != f"{rpc}Response":
            problems.append(f"rpc {rpc} must use {rpc}Request/{rpc}Response")
        if rpc.startswith("List") and req in messages:
            for field in ("page_size", "page_token"):
                if not re.search(rf"\b{field} = \d+;", messages[req]):
                    problems.append(f"{req} lacks {field}")
            if resp in messages and "next_page_token" not in messages[resp]:
                problems.append(f"{resp} lacks next_page_token")
    for enum, body in re.findall(r"enum (\w+) \{(.*?)\}", text, re.S):
        values = re.findall(r"^\s*(\w+) = (\d+);", body, re.M)
        prefix = _upper_snake(enum)
        if not values or values[0] != (f"{prefix}_UNSPECIFIED", "0"):
            problems.append(f"enum {enum} must start with {prefix}_UNSPECIFIED = 0")
        problems += [
            f"{enum}.{v} must start with {prefix}_"
            for v, _ in values
            if not v.startswith(prefix + "_")
        ]
    return [f"{path}: {p}" for p in problems]


def main(paths: list[str]) -> int:
    problems = [p for path in paths for p in lint(Path(path))]
    print("\n".join(problems) or f"proto lint: ok ({len(paths)} files)")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:] or [str(p) for p in sorted(ROOT.rglob("*.proto"))]))
