"""The chaos run's logic (benchmarks/chaos): the fault order, the section it
writes into docs/reliability.md, and the per-document check of the invariants
(which must catch each kind of damage, or the chaos run proves nothing)."""

from __future__ import annotations

import hashlib
import itertools
from collections import Counter
from pathlib import Path

import pytest

from benchmarks.chaos.corpus import Doc
from benchmarks.chaos.invariants import Verdict, check_document
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


def _record(chunks: int, version: str = "v2", data: bytes = b"new") -> dict[bytes, bytes]:
    return {
        b"tenant": b"chaos",
        b"knowledge_base_id": b"kb",
        b"document_id": b"d.md",
        b"state": b"INDEXED",
        b"chunk_count": str(chunks).encode(),
        b"version": version.encode(),
        b"content_sha256": hashlib.sha256(data).hexdigest().encode(),
    }


DOC = Doc("kb", "d.md", b"new", "en", "new")


def test_the_document_check_passes_a_document_indexed_as_recorded() -> None:
    v = Verdict()
    chunks = [("d.md:0", 0, "v2"), ("d.md:1", 1, "v2")]
    assert check_document("kb/d.md", DOC, False, _record(2), chunks, v) == 2
    assert v.violations == [] and v.documents == 1


@pytest.mark.parametrize(
    ("record", "chunks", "expected"),
    [
        # a chunk left over from the older version
        (_record(2), [("d.md:0", 0, "v2"), ("d.md:1", 1, "v2"), ("d.md:2", 2, "v1")], "3 chunks"),
        (_record(2), [("d.md:0", 0, "v2"), ("d.md:1", 1, "v1")], "another version"),
        # the same chunk twice
        (_record(2), [("d.md:0", 0, "v2"), ("d.md:0", 0, "v2")], "duplicate"),
        # the record is of an older upload than the last one sent
        (_record(1, data=b"old"), [("d.md:0", 0, "v2")], "not of the last upload"),
        ({**_record(1), b"state": b"PENDING"}, [("d.md:0", 0, "v2")], "not INDEXED"),
        ({}, [], "no record"),
    ],
)
def test_the_document_check_reports_each_kind_of_damage(
    record: dict[bytes, bytes], chunks: list[tuple[str, int, str]], expected: str
) -> None:
    v = Verdict()
    check_document("kb/d.md", DOC, False, record, chunks, v)
    assert any(expected in m for m in v.violations), v.violations


def test_a_deleted_document_must_leave_no_record_and_no_chunk() -> None:
    v = Verdict()
    check_document("kb/d.md", None, False, {}, [], v)
    assert v.violations == [] and v.deleted == 1
    check_document("kb/d.md", None, False, _record(1), [("d.md:0", 0, "v2")], v)
    assert len(v.violations) == 2
