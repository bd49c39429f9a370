"""`make fuzz`: the fuzz suite in full — 12,000 generated requests over every RPC of
the gateway and the four internal services, and the hostile-file corpus at the
issue's sizes through the CLI — with its counts written to docs/reliability.md.

Run as `python -m benchmarks.bench_fuzz`: it exits with pytest's status, so a
violation fails the target after the section is written.
"""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

DOC = "reliability.md"
REPO = Path(__file__).resolve().parents[1]
MESSAGES = int(os.environ.get("RAGMESH_FUZZ_MESSAGES", "12000"))
#: pytest's exit status of the last run
LAST_STATUS = 0


def _pytest(report: Path, hostile: Path) -> int:
    env = {
        **os.environ,
        "RAGMESH_FUZZ_MESSAGES": str(MESSAGES),
        "RAGMESH_FUZZ_FULL": "1",
        "RAGMESH_FUZZ_REPORT": str(report),
        "RAGMESH_FUZZ_HOSTILE_REPORT": str(hostile),
    }
    argv = [sys.executable, "-m", "pytest", "-ra", "-q", "-p", "no:cacheprovider", "tests/fuzz"]
    return subprocess.run(argv, cwd=REPO, env=env, check=False).returncode


def _status_table(counts: list[list[object]]) -> list[str]:
    by_status: Counter[tuple[str, str]] = Counter()
    by_kind: Counter[tuple[str, str]] = Counter()
    for method, kind, code, reason, n in counts:
        by_status[(str(code), str(reason))] += int(n)  # type: ignore[call-overload]
        by_kind[(str(kind), str(method).split(".")[0])] += int(n)  # type: ignore[call-overload]
    lines = ["| status | reason | requests |", "|---|---|---:|"]
    lines += [f"| {c} | {r or '—'} | {n:,} |" for (c, r), n in by_status.most_common()]
    lines += ["", "| service | generated messages | malformed bytes |", "|---|---:|---:|"]
    for service in sorted({s for _, s in by_kind}):
        lines.append(
            f"| {service} | {by_kind[('message', service)]:,} | {by_kind[('wire', service)]:,} |"
        )
    return lines


def _hostile_table(data: dict[str, object]) -> list[str]:
    lines = [
        "| file | bytes | outcome | chunks | job run time |",
        "|---|---:|---|---:|---:|",
    ]
    for f in data["files"]:  # type: ignore[attr-defined]
        outcome = f["state"] if f["state"] == "succeeded" else f"{f['state']}: {f['reason']}"
        lines.append(
            f"| `{f['file']}` | {f['bytes']:,} | {outcome} | {f['chunks']} | {f['seconds']} s |"
        )
    return lines


def run() -> str:
    global LAST_STATUS  # noqa: PLW0603 - read by __main__ after benchmarks.run
    # RAGMESH_FUZZ_OUT keeps the raw counts and outcomes (JSON) for a closer look.
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(os.environ.get("RAGMESH_FUZZ_OUT", tmp))
        out.mkdir(parents=True, exist_ok=True)
        report, hostile = out / "fuzz.json", out / "hostile.json"
        report.unlink(missing_ok=True)
        hostile.unlink(missing_ok=True)
        LAST_STATUS = _pytest(report, hostile)
        data = (
            json.loads(report.read_text()) if report.exists() else {"counts": [], "violations": []}
        )
        files = json.loads(hostile.read_text()) if hostile.exists() else None
    return render(data, files, LAST_STATUS)


def render(data: dict[str, Any], files: dict[str, Any] | None, status: int, note: str = "") -> str:
    """The section from a run's counts and hostile-file outcomes (its JSON)."""
    total = sum(int(n) for *_, n in data["counts"])
    methods = len({c[0] for c in data["counts"]})
    verdict = (
        "every call ended OK or with a status other than UNKNOWN and INTERNAL carrying an "
        "ErrorInfo reason, no process died, and a normal Ask answered afterwards"
        if status == 0
        else f"**the run failed** (pytest exit {status}); {len(data['violations'])} calls "
        "broke the contract"
    )
    lines = [
        "## Fuzzing",
        "",
        f"{total:,} generated requests over {methods} RPCs (every method of the gateway, "
        "chunking, embedding, retrieval and generation services), sent to the real servers "
        "over sockets by `tests/fuzz` (`make fuzz`; `make test` runs 1,000): messages drawn "
        "by Hypothesis from the request descriptors, valid-looking values mixed with "
        "boundaries and nonsense, and malformed wire bytes through identity serializers. "
        f"Result: {verdict}.",
        "",
        *_status_table(data["counts"]),
    ]
    if files is not None:
        lines += [
            "",
            "Hostile files uploaded with `ragmesh ingest --wait` (one worker, default budgets; "
            f"{files['seconds']:.0f} s for the corpus){note}:",
            "",
            *_hostile_table(files),
        ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    written = importlib.import_module("benchmarks.run").main(["fuzz"])
    sys.exit(written or importlib.import_module("benchmarks.bench_fuzz").LAST_STATUS)
