"""The chaos run's plan and report plumbing (benchmarks/chaos): the fault order
and the section it writes into docs/reliability.md."""

from __future__ import annotations

import itertools
from collections import Counter
from pathlib import Path

import pytest

from benchmarks.chaos.load import fault_plan
from benchmarks.chaos.report import write_section
from benchmarks.chaos.run import Scale


def test_the_plan_has_every_fault_once_per_count_with_worker_kills_spread() -> None:
    counts = {"worker": 20, "redis": 3, "retrieval": 3, "milvus": 3, "chunking": 2, "embedding": 2}
    plan = fault_plan(counts)
    assert Counter(plan) == counts
    gaps = [i for i, f in enumerate(plan) if f == "worker"]
    assert max(b - a for a, b in itertools.pairwise(gaps)) <= 3
    assert fault_plan(counts) == plan  # seeded: the same every run


def test_scale_from_env_overrides_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RAGMESH_CHAOS_DOCS", "700")
    monkeypatch.setenv("RAGMESH_CHAOS_GAP_S", "2.5")
    scale = Scale.from_env(docs=60, worker_kills=3)
    assert (scale.docs, scale.gap_s, scale.worker_kills) == (700, 2.5, 3)
    assert sum(scale.faults().values()) == 3 + 3 + 3 + 3 + 2 + 2


def test_sections_are_replaced_or_appended_and_others_kept(tmp_path: Path) -> None:
    doc = tmp_path / "reliability.md"
    doc.write_text("# Reliability\n\nIntro.\n\n<!-- section:backlog -->\n## Backlog\n\nfigures\n")
    write_section("chaos", "## Chaos\n\nfirst\n", doc)
    write_section("chaos_cluster", "## Cluster\n\nc\n", doc)
    write_section("chaos", "## Chaos\n\nsecond\n", doc)
    assert doc.read_text() == (
        "# Reliability\n\nIntro.\n\n<!-- section:backlog -->\n## Backlog\n\nfigures\n\n"
        "<!-- section:chaos -->\n## Chaos\n\nsecond\n\n"
        "<!-- section:chaos_cluster -->\n## Cluster\n\nc\n"
    )
