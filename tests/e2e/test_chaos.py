"""The chaos suite, reduced to fit `make test`: the real stack (its own Redis
with AOF, a `milvus-lite server`, every service, a Celery worker, the llama.cpp
server) ingests documents in four formats and two languages while a worker is
SIGKILLed, Redis, Milvus and the retrieval service are killed and restarted,
the chunking and embedding services are SIGKILLed, and clients keep asking and
searching; afterwards the invariants hold (benchmarks/chaos/invariants.py).

`make chaos` runs the same at full scale (500 documents, 33 faults) and in the
cluster shape; RAGMESH_CHAOS_* variables raise this test's scale too.
"""

from __future__ import annotations

import pytest

from benchmarks.chaos.report import markdown
from benchmarks.chaos.run import Outcome, Scale, run

pytestmark = [pytest.mark.slow]

REDUCED = {
    "docs": 40,
    "worker_kills": 2,
    "redis_restarts": 1,
    "retrieval_restarts": 1,
    "milvus_restarts": 1,
    "chunking_kills": 1,
    "embedding_kills": 1,
    "gap_s": 0.5,
    "mutate_every": 10,
    "drain_timeout_s": 300.0,
}


@pytest.fixture(scope="module")
def outcome(llm_base_url: str, tmp_path_factory: pytest.TempPathFactory) -> Outcome:
    result = run(Scale.from_env(**REDUCED), llm_base_url, tmp_path_factory.mktemp("chaos"))
    print(markdown(result))
    return result


def test_every_fault_was_injected(outcome: Outcome) -> None:
    s = outcome.scale
    for fault, n in s.faults().items():
        assert outcome.faults.counts[f"{fault} kill"] == n
        assert outcome.faults.counts[f"{fault} restart"] == n
    assert outcome.errors == []


def test_no_accepted_work_is_lost(outcome: Outcome) -> None:
    assert outcome.verdict.violations == []
    u = outcome.uploads
    # The premise: new versions and deletes happened, and the broken files were accepted.
    assert u.versions >= 2 and u.deletes >= 2
    assert len(u.accepted) >= outcome.scale.docs + 2
    jobs = outcome.verdict.jobs
    assert jobs["FAILED:CORRUPT_DOCUMENT"] == 1 and jobs["FAILED:NO_TEXT_CONTENT"] == 1
    assert outcome.verdict.documents >= outcome.scale.docs - u.deletes
    assert outcome.verdict.chunks >= outcome.verdict.documents
    assert outcome.verdict.check_findings == 0


def test_clients_kept_being_answered(outcome: Outcome) -> None:
    calls = outcome.clients
    assert calls[("Search", "OK")] > 0 and calls[("Ask", "OK")] > 0
    # Faults show as UNAVAILABLE (or a deadline); never as INTERNAL or UNKNOWN.
    assert not {status for _, status in calls} & {"INTERNAL", "UNKNOWN"}, calls
