"""A chaos run as a Markdown section of docs/reliability.md, written between
`<!-- section:NAME -->` markers like the benchmarks' sections (the other
sections of the file are kept as they are)."""

from __future__ import annotations

import os
import platform
import re
import time
from pathlib import Path

from benchmarks.chaos.run import Outcome

DOC = Path(__file__).resolve().parents[2] / "docs" / "reliability.md"
FAULT_ORDER = ("worker", "redis", "retrieval", "milvus", "chunking", "embedding")
FAULT_LABEL = {
    "worker": "Celery worker SIGKILLed (process group) and started again",
    "redis": "Redis SIGKILLed and restarted (AOF)",
    "retrieval": "retrieval service SIGKILLed and restarted",
    "milvus": "`milvus-lite server` SIGKILLed and restarted",
    "chunking": "chunking service SIGKILLed and restarted",
    "embedding": "embedding service SIGKILLed and restarted",
}


def markdown(out: Outcome) -> str:
    s, v, u = out.scale, out.verdict, out.uploads
    lines = [
        f"## Chaos: {s.shape}",
        "",
        f"{s.docs} small documents (text, Markdown, HTML, PDF; English and Chinese, two "
        f"knowledge bases) plus 2 broken files uploaded through {s.gateways} gateway"
        f"{'s' * (s.gateways > 1)} to {s.workers} Celery worker{'s' * (s.workers > 1)}, sharing "
        "one Redis (AOF) and one Milvus Lite server (`services.retrieval.lite_server`), while "
        "faults were injected one at a time "
        f"{s.gap_s:g} s apart and {s.clients} clients asked (max_tokens {s.max_tokens}) and "
        f"searched in turn. Every {s.mutate_every} uploads a new version of an earlier document "
        "was uploaded and another deleted. `make chaos` (`python -m benchmarks.chaos`).",
        "",
        f"**Invariants: {'all held' if out.ok else 'VIOLATED'}.**",
        "",
        "| fault | times | recovery (mean / max) |",
        "|---|---:|---:|",
    ]
    for fault in FAULT_ORDER:
        took = out.faults.recovery_s.get(fault, [])
        mean = f"{sum(took) / len(took):.1f} / {max(took):.1f} s" if took else "–"
        lines.append(f"| {FAULT_LABEL[fault]} | {out.faults.counts[f'{fault} restart']} | {mean} |")
    lines += [
        "",
        "| ingestion | value |",
        "|---|---:|",
        f"| upload calls accepted (documents + new versions) | {len(u.accepted)} |",
        f"| new versions / deletes | {u.versions} / {u.deletes} |",
    ]
    for state, n in sorted(v.jobs.items()):
        lines.append(f"| jobs {state} | {n} |")
    resent = out.resent
    lines += [
        f"| jobs that ran more than once (attempt > 1) | {v.rerun} |",
        f"| tasks the reaper sent again: worker lost / message lost | "
        f"{resent.get('worker_lost', 0)} / {resent.get('message_lost', 0)} |",
        f"| documents indexed at the end / deleted | {v.documents} / {v.deleted} |",
        f"| chunks in Milvus (= recorded) | {v.chunks} |",
        f"| `kb check` findings ({v.check_documents} documents checked) | {v.check_findings} |",
        f"| first upload → last job final | {out.ingest_s:.0f} s |",
        f"| last fault → last job final | {out.drain_s:.0f} s |",
        "",
        "| calls by status | OK | " + " | ".join(_statuses(out)) + " |",
        "|---|---:|" + "---:|" * len(_statuses(out)),
    ]
    calls = {**{("Upload", k[1]): n for k, n in u.attempts.items() if k[0] == "Upload"}}
    calls.update({("Delete", k[1]): n for k, n in u.attempts.items() if k[0] == "Delete"})
    calls.update(out.clients)
    for op in ("Search", "Ask", "Upload", "Delete"):
        row = [str(calls.get((op, "OK"), 0))] + [
            str(calls.get((op, st), 0)) for st in _statuses(out)
        ]
        lines.append(f"| {op} | " + " | ".join(row) + " |")
    for key in sorted(out.bugs):
        for detail in out.client_details.get(key, []):
            lines.append(f"\n{key[0]} {key[1]}: {detail}")
    if v.violations or out.errors:
        lines += ["", "Violations:", ""] + [f"- {m}" for m in out.errors + v.violations[:20]]
    lines += [
        "",
        f"_Run {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} on {platform.machine()}, "
        f"{os.cpu_count()} cores, Python {platform.python_version()}, {out.total_s:.0f} s "
        f"(start {out.startup_s:.0f} s, checks {out.verify_s:.0f} s)._",
    ]
    return "\n".join(lines) + "\n"


def _statuses(out: Outcome) -> list[str]:
    seen = {k[1] for k in out.clients} | {k[1] for k in out.uploads.attempts}
    return sorted(seen - {"OK"})


def write_section(name: str, body: str, doc: Path = DOC) -> None:
    """Replaces (or appends) the section `name` of `doc`, keeping the others."""
    text = doc.read_text() if doc.exists() else "# Reliability\n"
    mark = f"<!-- section:{name} -->"
    pattern = re.compile(rf"{re.escape(mark)}\n.*?(?=\n<!-- section:|\Z)", re.S)
    section = f"{mark}\n{body.rstrip()}\n"
    if pattern.search(text):
        text = pattern.sub(lambda _: section, text, count=1)
        text = text.rstrip("\n") + "\n"
    else:
        text = text.rstrip("\n") + f"\n\n{section}"
    doc.write_text(text)
