"""Verbatim answers and abstention (issue 16) through the whole local stack.

The launcher's stack (`make run`) with RAGMESH_GATEWAY_ABSTAIN_BELOW=-1, so that
no answer abstains and every answer reports its relevance signal; `ragmesh eval
--answer-mode verbatim` on squad2-sample-a (every question) and a seeded sample
of cmrc2018-trial. From the reported relevance, the abstention curve on
squad2-sample-a: for each threshold, the share of unanswerable questions it
would abstain on against the share of answerable ones still answered (and still
answered with a gold answer). The default threshold is picked from this curve
(docs/generation.md says which point and why).

`python -m benchmarks.run answers`. RAGMESH_BENCH_ANSWERS_CMRC (cmrc2018
questions answered, default 200), RAGMESH_BENCH_ANSWERS_GENERATIVE (questions
per data set also answered generatively by SmolLM2, default 0: slow) scale it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from benchmarks.bench_eval import data_dir
from devstack.launched import REPO, LaunchedStack
from services.gateway.config import AnswerSettings

SQUAD, CMRC = "squad2-sample-a", "cmrc2018-trial"


def _eval(
    stack: LaunchedStack, name: str, out: Path, modes: str, answers: int | None
) -> dict[str, Any]:
    args = [sys.executable, "-m", "ragmesh.cli", "eval", str(data_dir(name)), "--json", str(out)]
    args += ["--answer-mode", modes]
    if answers is not None:
        args += ["--answer-limit", str(answers)]
    done = subprocess.run(
        args,
        cwd=REPO,
        env=stack.cli_env(),
        capture_output=True,
        text=True,
        timeout=6 * 3600,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"ragmesh eval {name} exited {done.returncode}:\n{done.stderr[-3000:]}")
    return dict(json.loads(out.read_text()))


def _f(x: Any, digits: int = 3) -> str:
    return "–" if x is None else (f"{x:.{digits}f}" if isinstance(x, float) else str(x))


def _pct(x: float | None) -> str:
    return "–" if x is None else f"{100 * x:.1f} %"


def run() -> str:
    cmrc_answers = int(os.environ.get("RAGMESH_BENCH_ANSWERS_CMRC", "200"))
    generative = int(os.environ.get("RAGMESH_BENCH_ANSWERS_GENERATIVE", "0"))
    reports: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="ragmesh-bench-answers-") as tmp:
        stack = LaunchedStack(
            Path(tmp), demo=False, extra_env={"RAGMESH_GATEWAY_ABSTAIN_BELOW": "-1"}
        ).start()
        try:
            stack.wait_for_line(r"^ragmesh is up\.$", timeout=900)
            reports[SQUAD] = _eval(stack, SQUAD, Path(tmp) / "squad.json", "verbatim", None)
            reports[CMRC] = _eval(stack, CMRC, Path(tmp) / "cmrc.json", "verbatim", cmrc_answers)
            if generative:
                for name in (SQUAD, CMRC):
                    reports[f"{name} (generative)"] = _eval(
                        stack, name, Path(tmp) / f"{name}-gen.json", "generative", generative
                    )
        finally:
            stack.stop()
            stack.kill_leftovers()
    default = AnswerSettings.model_fields["abstain_below"].default
    lines = [
        "## Verbatim answers and abstention (issue 16)",
        "",
        "The whole local stack (launcher), hybrid search, top 5 passages per answer; "
        "`ragmesh eval --answer-mode verbatim` with abstention off "
        "(RAGMESH_GATEWAY_ABSTAIN_BELOW=-1) so that every answer reports its relevance. "
        'Answer budget: 3 sentences / 400 characters (the defaults). "contains gold": of the '
        "answerable questions, the share whose answer contains a gold answer (normalised).",
        "",
        "| data set | mode | answers | contains gold | ≥1 valid citation | mean chars | "
        "ask p50 ms |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, report in reports.items():
        for mode, m in report.get("answers_by_mode", {}).items():
            lines.append(
                f"| {name} | {mode} | {m['asked']} | {_pct(m['answer_contains_gold'])} | "
                f"{_pct(m['cited'])} | {_f(m['mean_answer_chars'], 0)} | "
                f"{_f(report['timings']['ask_ms_p50'], 0)} |"
            )
    curve = reports[SQUAD].get("abstention_curve", {}).get("verbatim", [])
    lines += [
        "",
        f"Abstention on {SQUAD} (121 answerable, 131 unanswerable questions): the relevance "
        "signal is the cosine similarity (all-MiniLM-L6-v2) of the question to the most "
        "similar sentence of the retrieved passages. Abstaining below a threshold t would "
        f"give (the default, {default:g}, in bold):",
        "",
        "| t | unanswerable abstained | answerable answered | answerable answered with gold |",
        "|---|---|---|---|",
    ]
    for p in curve:
        t = p["threshold"]
        if t > 0.7:
            break
        row = (
            f"| {t:.3f} | {_pct(p['unanswerable_abstained'])} | "
            f"{_pct(p['answerable_answered'])} | {_pct(p['answerable_answered_with_gold'])} |"
        )
        lines.append(
            row.replace(f"| {t:.3f} |", f"| **{t:.3f}** |") if abs(t - default) < 1e-9 else row
        )
    lines += [
        "",
        "Against the targets (≥ 50 % of answerable questions answered with a gold answer; "
        "≥ 50 % of unanswerable abstained on while ≥ 80 % of answerable answered): see the "
        'rows above; docs/generation.md ("Abstention") says which point of the curve the '
        "default is and why.",
    ]
    return "\n".join(lines) + "\n"
