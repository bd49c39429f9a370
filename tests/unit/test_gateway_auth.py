"""API keys → tenants (reloaded from their file, behind the failed-authentication
limit), input validation and record → protobuf mapping."""

from __future__ import annotations

from pathlib import Path

import pytest

from ragmesh.common.v1 import common_pb2
from ragmesh.gateway.v1 import gateway_pb2 as pb
from ragmesh.generation.v1 import generation_pb2
from services.common import api
from services.common.errors import InvalidArgument, ResourceExhausted, Unauthenticated
from services.gateway import validation as v
from services.gateway.auth import ApiKeyAuth, Authenticator
from services.gateway.auth_limits import FailedAuthLimiter
from services.gateway.convert import citation_from_scored, cited_sources, doc_to_pb, job_to_pb
from services.jobs.records import (
    DocumentRecord,
    DocumentState,
    ErrorRecord,
    JobRecord,
    JobStage,
    JobState,
)


def bearer(key: str) -> list[tuple[str, str]]:
    return [("authorization", f"Bearer {key}")]


def test_keys_from_env_and_file(tmp_path: Path) -> None:
    secret = tmp_path / "keys"
    secret.write_text("# team keys\nfile-key-0001:gamma\n\n")
    auth = ApiKeyAuth.from_settings("env-key-0001:alpha, env-key-0002:beta", str(secret), False)
    assert auth.tenant_of(bearer("env-key-0001")) == "alpha"
    assert auth.tenant_of(bearer("env-key-0002")) == "beta"
    assert auth.tenant_of(bearer("file-key-0001")) == "gamma"
    assert auth.tenant_of([("authorization", "bearer  env-key-0001 ")]) == "alpha"
    assert auth.tenants == {"alpha", "beta", "gamma"}


@pytest.mark.parametrize(
    ("metadata", "reason"),
    [
        ([], "MISSING_API_KEY"),
        ([("x-other", "v")], "MISSING_API_KEY"),
        ([("authorization", "Basic abc")], "MALFORMED_API_KEY"),
        ([("authorization", "Bearer ")], "MALFORMED_API_KEY"),
        (bearer("env-key-0003"), "INVALID_API_KEY"),
        (bearer("env-key-000"), "INVALID_API_KEY"),
    ],
)
def test_bad_credentials(metadata: list[tuple[str, str]], reason: str) -> None:
    auth = ApiKeyAuth.from_settings("env-key-0001:alpha", "", False)
    with pytest.raises(Unauthenticated) as exc:
        auth.tenant_of(metadata)
    assert exc.value.reason == reason


@pytest.mark.parametrize(
    ("keys", "reason"),
    [
        ("", "NO_API_KEYS"),
        ("no-colon-here", "BAD_KEY"),
        ("short:alpha", "BAD_KEY"),
        ("long-enough-key:bad tenant", "BAD_KEY"),
        ("long-enough-key:a,long-enough-key:b", "BAD_KEY"),
    ],
)
def test_bad_key_configuration(keys: str, reason: str) -> None:
    with pytest.raises(InvalidArgument) as exc:
        ApiKeyAuth.from_settings(keys, "", False)
    assert exc.value.reason == reason


def test_anonymous_mode_only_without_keys() -> None:
    assert ApiKeyAuth.from_settings("", "", True).tenant_of([]) == "default"
    auth = ApiKeyAuth.from_settings("env-key-0001:alpha", "", True)
    with pytest.raises(Unauthenticated):
        auth.tenant_of([])


def test_document_ids() -> None:
    assert v.document_id_for("", "dir/sub/Report (v2).pdf") == "Report-v2-.pdf"
    assert v.document_id_for("", "a/b/My Report.pdf") == "My-Report.pdf"
    assert v.document_id_for("given-id", "whatever.txt") == "given-id"
    for bad in ("../x", "a b", "-x", "x" * 129):
        with pytest.raises(InvalidArgument) as exc:
            v.document_id_for(bad, "f.txt")
        assert exc.value.reason == "INVALID_DOCUMENT_ID"
    with pytest.raises(InvalidArgument) as exc:
        v.document_id_for("", "///")
    assert exc.value.reason == "MISSING_DOCUMENT_ID"


def test_document_ids_of_non_ascii_names_stay_apart() -> None:
    # Before: both were `txt`, and the second upload silently replaced the first.
    names = ["报告📄.txt", "摘要.txt", "会议纪要.md", "Café menu.pdf", "Cafe\u0301 menu 2.pdf"]
    ids = [v.document_id_for("", n) for n in names]
    assert len(set(ids)) == len(ids), ids
    assert ids[0].endswith(".txt") and ids[2].endswith(".md")
    assert ids[3].startswith("Caf-menu-") and ids[3].endswith(".pdf")
    # The same name (in any Unicode normal form, from any folder) gives the same id.
    assert v.document_id_for("", "x/Café menu.pdf") == ids[3]
    assert v.document_id_for("", "Cafe\u0301 menu.pdf") == ids[3]
    for name in ["报告", "é", "x" * 300 + "é.md", "中文/说明.md"]:
        assert v.DOC_ID_RE.fullmatch(v.document_id_for("", name)), name
    # The id the rule before digests gave, for a document made under it.
    assert v.legacy_document_id_for("Café menu.pdf") == "Caf-menu.pdf"
    assert v.legacy_document_id_for("My Report.pdf") == ""  # unchanged: no fallback
    assert v.legacy_document_id_for("报告.txt") == "txt"


def test_limits_and_names() -> None:
    assert api.top_k(0, 5, 50) == 5
    with pytest.raises(InvalidArgument) as exc:
        api.top_k(51, 5, 50)
    assert exc.value.reason == "TOP_K_OUT_OF_RANGE"
    with pytest.raises(InvalidArgument):
        api.top_k(-1, 5, 50)
    assert api.page_size(0, 50, 1000) == 50 and api.page_size(5000, 50, 1000) == 1000
    with pytest.raises(InvalidArgument) as exc:
        v.check_text("x" * 11, "question", 10)
    assert exc.value.reason == "QUESTION_TOO_LONG"
    assert v.check_media_type("text/markdown; charset=utf-8") == "text/markdown"
    with pytest.raises(InvalidArgument):
        v.check_media_type("image/png")
    with pytest.raises(InvalidArgument):
        v.check_kb_id("UPPER")
    a, b = v.collection_name("t", "a-b", "g1"), v.collection_name("t", "a_b", "g1")
    assert a != b and a.replace("_", "").isalnum() and not a[0].isdigit()
    # A re-created knowledge base gets a collection of its own.
    assert v.collection_name("t", "a-b", v.new_generation()) != a
    assert v.check_job_id("0" * 32) == "0" * 32
    # A trailing newline would make another Redis key: refused like any bad id.
    with pytest.raises(InvalidArgument):
        v.check_kb_id("kb\n")
    with pytest.raises(InvalidArgument):
        v.check_document_id("a.md\n")
    for bad in ("", "x" * 32, "0" * 31, "rm:job:" + "0" * 25, "0" * 32 + "\n"):
        with pytest.raises(InvalidArgument) as exc:
            v.check_job_id(bad)
        assert exc.value.reason == "INVALID_JOB_ID"
    long = "report " * 60 + ".pdf"
    cut = v.truncate_file_name(long)
    assert len(cut) == v.MAX_FILE_NAME_CHARS and cut.endswith("….pdf")
    assert v.truncate_file_name("short.md") == "short.md"
    base = v.document_version("sha", "text/plain", "a.txt", {"k": 1})
    assert base == v.document_version("sha", "text/plain", "a.txt", {"k": 1})
    assert base != v.document_version("sha", "text/plain", "a.txt", {"k": 2})
    assert base != v.document_version("sha2", "text/plain", "a.txt", {"k": 1})


def test_job_and_document_mapping() -> None:
    job = JobRecord(
        job_id="j",
        tenant="t",
        knowledge_base_id="kb",
        document_id="d",
        state=JobState.RUNNING,
        stage=JobStage.EMBEDDING,
        chunks_done=4,
        chunks_total=9,
        attempt=2,
        create_time=1_700_000_000.5,
    )
    out = job_to_pb(job)
    assert (out.state, out.stage, out.chunks_done, out.chunks_total, out.attempt) == (
        pb.JOB_STATE_RUNNING,
        pb.JOB_STAGE_EMBEDDING,
        4,
        9,
        2,
    )
    assert out.create_time.seconds == 1_700_000_000 and out.create_time.nanos == 500_000_000
    assert not out.HasField("error") and not out.HasField("end_time")
    job.state, job.stage = JobState.FAILED, None
    job.error = ErrorRecord("INVALID_ARGUMENT", "CORRUPT_DOCUMENT", "bad", "chunking.ragmesh")
    out = job_to_pb(job)
    assert out.stage == pb.JOB_STAGE_UNSPECIFIED
    assert (out.error.code, out.error.reason, out.error.domain) == (
        "INVALID_ARGUMENT",
        "CORRUPT_DOCUMENT",
        "chunking.ragmesh",
    )
    doc = doc_to_pb(
        DocumentRecord(
            tenant="t",
            knowledge_base_id="kb",
            document_id="d",
            state=DocumentState.INDEXED,
            chunk_count=3,
            metadata={"lang": "en"},
        )
    )
    assert doc.state == pb.DOCUMENT_STATE_INDEXED and doc.metadata["lang"] == "en"


def test_hit_mapping() -> None:
    scored = common_pb2.ScoredChunk(
        score=0.5,
        chunk=common_pb2.Chunk(
            id="d:3",
            document_id="d",
            chunk_index=3,
            text="t",
            start_offset=10,
            end_offset=11,
            heading_path=["A", "B"],
            title="T",
            source="d.md",
        ),
    )
    hit = citation_from_scored(scored)
    assert (hit.chunk_id, hit.document_id, hit.file_name, hit.chunk_index) == (
        "d:3",
        "d",
        "d.md",
        3,
    )
    assert (hit.start_offset, hit.end_offset, list(hit.heading_path), hit.score) == (
        10,
        11,
        ["A", "B"],
        0.5,
    )


def test_citation_mapping() -> None:
    hits = {
        "saturn.pdf:0": common_pb2.Citation(
            chunk_id="saturn.pdf:0",
            document_id="saturn.pdf",
            start_offset=0,
            end_offset=40,
            text="Saturn has 146 moons",
            number=1,
        ),
        "violin.html:1": common_pb2.Citation(
            chunk_id="violin.html:1",
            document_id="violin.html",
            start_offset=50,
            end_offset=90,
            number=2,
        ),
    }
    citations = [
        generation_pb2.Citation(number=2, passage_id="violin.html:1"),
        generation_pb2.Citation(number=1, passage_id="saturn.pdf:0"),
        generation_pb2.Citation(number=3, passage_id="unknown:0"),
    ]
    mapped = cited_sources(citations, hits)
    assert [(c.number, c.document_id, c.start_offset, c.cited) for c in mapped] == [
        (2, "violin.html", 50, True),
        (1, "saturn.pdf", 0, True),
    ]
    assert mapped[1].text == "Saturn has 146 moons"
    assert not hits["saturn.pdf:0"].cited  # the sources themselves are not changed


# ---- the key file reloaded without a restart ----------------------------------------------


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def write_atomically(path: Path, text: str) -> None:
    """As Kubernetes updates a mounted Secret: a new file renamed over the old one."""
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text)
    tmp.replace(path)


def test_key_file_changes_are_picked_up_after_the_interval(tmp_path: Path) -> None:
    keys, clock = tmp_path / "keys", FakeClock()
    keys.write_text("file-key-0001:alpha\n")
    auth = ApiKeyAuth.from_settings("env-key-0001:beta", str(keys), False, 5.0, clock)
    assert auth.tenant_of(bearer("file-key-0001")) == "alpha"
    write_atomically(keys, "# rotated\nfile-key-0002:alpha\nfile-key-0003:gamma\n")
    clock.now += 4.9  # not looked at yet
    assert auth.tenant_of(bearer("file-key-0001")) == "alpha"
    with pytest.raises(Unauthenticated):
        auth.tenant_of(bearer("file-key-0002"))
    clock.now += 0.2
    assert auth.tenant_of(bearer("file-key-0002")) == "alpha"
    assert auth.tenant_of(bearer("file-key-0003")) == "gamma"
    with pytest.raises(Unauthenticated) as exc:
        auth.tenant_of(bearer("file-key-0001"))  # removed: refused at once
    assert exc.value.reason == "INVALID_API_KEY"
    assert auth.tenant_of(bearer("env-key-0001")) == "beta"  # env keys stay
    assert auth.reloads == 1 and auth.tenants == {"alpha", "beta", "gamma"}


def test_a_broken_or_missing_key_file_keeps_the_previous_keys(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    keys, clock = tmp_path / "keys", FakeClock()
    keys.write_text("file-key-0001:alpha\n")
    auth = ApiKeyAuth.from_settings("", str(keys), False, 1.0, clock)
    for broken in (
        "file-key-0002 alpha\n",  # no colon
        "short:alpha\n",
        "file-key-0002:not a tenant\n",
        "file-key-0002:alpha\nfile-key-0002:beta\n",
        b"\xff\xfe binary",
    ):
        if isinstance(broken, bytes):
            keys.write_bytes(broken)
        else:
            write_atomically(keys, broken)
        clock.now += 1.0
        caplog.clear()
        assert auth.tenant_of(bearer("file-key-0001")) == "alpha", broken
        assert "API key file not reloaded" in caplog.text
        clock.now += 1.0  # unchanged since: not parsed (nor logged) again
        caplog.clear()
        assert auth.tenant_of(bearer("file-key-0001")) == "alpha"
        assert "not reloaded" not in caplog.text
    keys.unlink()
    clock.now += 1.0
    assert auth.tenant_of(bearer("file-key-0001")) == "alpha"
    write_atomically(keys, "file-key-0002:alpha\n")  # fixed: taken
    clock.now += 1.0
    assert auth.tenant_of(bearer("file-key-0002")) == "alpha"
    assert "file-key" not in caplog.text  # keys never reach the log
    assert auth.reloads == 1


def test_an_emptied_key_file_revokes_every_key_and_never_opens_anonymous_access(
    tmp_path: Path,
) -> None:
    keys, clock = tmp_path / "keys", FakeClock()
    keys.write_text("file-key-0001:alpha\n")
    auth = ApiKeyAuth.from_settings("", str(keys), True, 1.0, clock)
    write_atomically(keys, "# all keys revoked\n")
    clock.now += 1.0
    for metadata in (bearer("file-key-0001"), []):
        with pytest.raises(Unauthenticated):
            auth.tenant_of(metadata)
    assert len(auth) == 0


def test_a_reload_interval_of_zero_reads_the_file_once(tmp_path: Path) -> None:
    keys, clock = tmp_path / "keys", FakeClock()
    keys.write_text("file-key-0001:alpha\n")
    auth = ApiKeyAuth.from_settings("", str(keys), False, 0.0, clock)
    write_atomically(keys, "file-key-0002:alpha\n")
    clock.now += 3600
    assert auth.tenant_of(bearer("file-key-0001")) == "alpha"
    with pytest.raises(Unauthenticated):
        auth.tenant_of(bearer("file-key-0002"))


def test_authenticator_locks_a_source_out_after_repeated_failures() -> None:
    clock = FakeClock()
    keys = ApiKeyAuth.from_settings("env-key-0001:alpha", "", False)
    auth = Authenticator(keys, FailedAuthLimiter(3, 60.0, clock=clock))
    attacker, other = "ipv4:203.0.113.7:40000", "ipv4:198.51.100.2:40001"
    for i in range(3):
        clock.now += 1
        with pytest.raises(Unauthenticated):
            auth.tenant_of(bearer(f"guess-{i:08d}"), attacker)
    assert auth.tenant_of(bearer("env-key-0001"), other) == "alpha"
    # locked out, even with the right key (from another port of the same address)
    with pytest.raises(ResourceExhausted) as exc:
        auth.tenant_of(bearer("env-key-0001"), "ipv4:203.0.113.7:40002")
    assert exc.value.reason == "AUTH_RATE_LIMITED"
    assert exc.value.retry_after_s == pytest.approx(58.0)  # first failure at +1, now +3
    clock.now += 57.9
    with pytest.raises(ResourceExhausted):
        auth.tenant_of(bearer("env-key-0001"), attacker)
    clock.now += 0.2  # the first failure left the window: 2 of 3 remain
    assert auth.tenant_of(bearer("env-key-0001"), attacker) == "alpha"
    with pytest.raises(Unauthenticated):  # a success does not clear the count
        auth.tenant_of([], attacker)
    with pytest.raises(ResourceExhausted):
        auth.tenant_of(bearer("env-key-0001"), attacker)


def test_authenticator_without_a_limit() -> None:
    keys = ApiKeyAuth.from_settings("env-key-0001:alpha", "", False)
    auth = Authenticator(keys, FailedAuthLimiter(0, 60.0))
    for _ in range(100):
        with pytest.raises(Unauthenticated):
            auth.tenant_of(bearer("wrong-key-000"), "ipv4:203.0.113.7:1")
    assert auth.tenant_of(bearer("env-key-0001"), "ipv4:203.0.113.7:1") == "alpha"
