"""Verbatim answers and abstention (issue 16) through the whole local stack; the
relevance signal of the multilingual model (issue 14) through a stack of the services.

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
# Abstention off for every model, so that every answer reports its relevance.
NO_ABSTENTION = {
    "RAGMESH_GATEWAY_ABSTAIN_BELOW": "-1",
    "RAGMESH_GATEWAY_ABSTAIN_BELOW_BY_MODEL": "{}",
}


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
        stack = LaunchedStack(Path(tmp), demo=False, extra_env=NO_ABSTENTION).start()
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
        "",
    ]
    return "\n".join(lines) + "\n" + multilingual_relevance(cmrc_answers)


# ------------------------------------------------- relevance per embedding model


def _eval_on(gateway: str, name: str, out: Path, answers: int | None) -> dict[str, Any]:
    """`ragmesh eval` with verbatim answers on a knowledge base of the multilingual model."""
    args = [sys.executable, "-m", "ragmesh.cli", "eval", str(data_dir(name)), "--json", str(out)]
    args += ["--answer-mode", "verbatim", "--model", "multilingual"]
    args += ["--addr", gateway, "--api-key", "bench-key-0001"]
    if answers is not None:
        args += ["--answer-limit", str(answers)]
    done = subprocess.run(
        args, cwd=REPO, capture_output=True, text=True, timeout=6 * 3600, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(f"ragmesh eval {name} exited {done.returncode}:\n{done.stderr[-3000:]}")
    return dict(json.loads(out.read_text()))


def relevances(report: dict[str, Any], answerable: bool) -> list[float]:
    """The relevance signal each verbatim answer reported, of (un)answerable questions."""
    out = []
    for q in report.get("per_question", []):
        a = q.get("answers", {}).get("verbatim")
        if a is not None and a.get("answer") is not None and a["answerable"] == answerable:
            out.append(float(a["relevance"]))
    return sorted(out)


def highest_keeping_all(curve: list[dict[str, Any]]) -> float:
    """The rule the default threshold was chosen by: the highest threshold at which
    every answerable question is still answered."""
    keep = [p["threshold"] for p in curve if p["answerable_answered"] >= 1.0]
    return max(keep, default=0.0)


def multilingual_relevance(cmrc_answers: int = 200) -> str:
    """The relevance signal when the knowledge base's model is the multilingual one
    (the default for Chinese): the abstention curve on squad2-sample-a (it has
    unanswerable questions) and, on cmrc2018-trial (answerable questions only), the share
    each threshold would wrongly abstain on. A stack of the services with abstention off."""
    from benchmarks.bench_models import _stack

    keep_env = os.environ.get("RAGMESH_BENCH_RELEVANCE_REPORTS", "")  # keep the JSON there
    with tempfile.TemporaryDirectory(prefix="ragmesh-bench-relevance-") as tmp:
        keep = Path(keep_env or tmp)
        procs, gateway = _stack(Path(tmp), NO_ABSTENTION)
        try:
            squad = _eval_on(gateway, SQUAD, keep / "squad2-multilingual.json", None)
            cmrc = _eval_on(gateway, CMRC, keep / "cmrc2018-multilingual.json", cmrc_answers)
        finally:
            for proc in reversed(procs):
                proc.stop()  # type: ignore[attr-defined]
    return render_relevance(squad, cmrc)


def _quantiles(values: list[float]) -> str:
    if not values:
        return "–"
    at = [values[min(len(values) - 1, int(q * len(values)))] for q in (0.0, 0.05, 0.25, 0.5)]
    return " / ".join(f"{v:.2f}" for v in at)


def render_relevance(squad: dict[str, Any], cmrc: dict[str, Any]) -> str:
    default = AnswerSettings.model_fields["abstain_below"].default
    curve = squad.get("abstention_curve", {}).get("verbatim", [])
    chosen = highest_keeping_all(curve)
    zh = relevances(cmrc, True)
    en_yes, en_no = relevances(squad, True), relevances(squad, False)
    lines = [
        "### The relevance signal with the multilingual model",
        "",
        "Knowledge bases created with `--model multilingual` (the default for Chinese): the "
        "relevance signal is then the multilingual model's cosine similarity. Same answers "
        "(verbatim, hybrid, abstention off) through a stack of the services. Relevance "
        "min / 5th percentile / quartile / median: "
        f"squad2-sample-a answerable {_quantiles(en_yes)} ({len(en_yes)}), unanswerable "
        f"{_quantiles(en_no)} ({len(en_no)}); cmrc2018-trial answerable {_quantiles(zh)} "
        f"({len(zh)}, a seeded sample).",
        "",
        "| t | squad2: unanswerable abstained | squad2: answerable answered | "
        "cmrc2018: answerable abstained (wrongly) |",
        "|---|---|---|---|",
    ]
    for p in curve:
        t = p["threshold"]
        if t > 0.7:
            break
        wrong = sum(1 for r in zh if r < t) / len(zh) if zh else None
        row = (
            f"| {t:.3f} | {_pct(p['unanswerable_abstained'])} | "
            f"{_pct(p['answerable_answered'])} | {_pct(wrong)} |"
        )
        marks = abs(t - default) < 1e-9 or abs(t - chosen) < 1e-9
        lines.append(row.replace(f"| {t:.3f} |", f"| **{t:.3f}** |") if marks else row)
    wrong_default = sum(1 for r in zh if r < default) / len(zh) if zh else None
    lines += [
        "",
        f"By the rule that chose the default {default:g} for MiniLM (the highest threshold at "
        f"which every answerable squad2-sample-a question is still answered), the "
        f"multilingual model's threshold would be {chosen:.3f}. The default {default:g} "
        f"would wrongly abstain on {_pct(wrong_default)} of the answerable cmrc2018-trial "
        "questions.",
    ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(multilingual_relevance(int(os.environ.get("RAGMESH_BENCH_ANSWERS_CMRC", "200"))))
