"""`make chaos`: the chaos run at full scale, in one or both shapes, printed and
written to docs/reliability.md; exits 1 when an invariant was violated.

    python -m benchmarks.chaos [single|cluster ...] [--no-write]

single: one worker, one gateway (section `chaos`); cluster: two workers and two
gateway replicas sharing one Redis and one Milvus (section `chaos_cluster`).
RAGMESH_CHAOS_* variables change the scale (benchmarks/chaos/run.py, Scale).
"""

from __future__ import annotations

import sys

from benchmarks.chaos.report import markdown, write_section
from benchmarks.chaos.run import Scale, run

SHAPES = {
    "single": ("chaos", {"workers": 1, "gateways": 1}),
    "cluster": ("chaos_cluster", {"workers": 2, "gateways": 2}),
}


def main(argv: list[str]) -> int:
    write = "--no-write" not in argv
    shapes = [a for a in argv if not a.startswith("--")] or list(SHAPES)
    failed = False
    for shape in shapes:
        section, overrides = SHAPES[shape]
        scale = Scale.from_env(**overrides)
        print(f"== chaos {shape}: {scale}", flush=True)
        outcome = run(scale)
        body = markdown(outcome)
        print(body, flush=True)
        if write:
            write_section(section, body)
        failed |= not outcome.ok
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
