"""The `ragmesh` CLI: file collection, filters, exit codes, help, and its output
(errors and server text) against a scripted gateway over a real gRPC socket."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc
import pytest
from typer.testing import CliRunner, Result

from ragmesh.cli import app
from ragmesh.cli_common import (
    EXIT_AUTH,
    EXIT_FAILURES,
    EXIT_NOT_FOUND,
    EXIT_OK,
    EXIT_SERVER,
    EXIT_UNAVAILABLE,
    EXIT_USAGE,
    exit_code_for,
)
from ragmesh.cli_eval import search_modes
from ragmesh.cli_ingest import collect_files
from ragmesh.cli_query import parse_filters
from ragmesh.client import NotFoundError, RagmeshError, UnauthenticatedError, UnavailableError
from ragmesh.common.v1 import common_pb2
from ragmesh.gateway.v1 import gateway_pb2, gateway_pb2_grpc
from services.common import errors
from services.common.status import to_status
from services.gateway.validation import check_kb_id


def test_collect_files_walks_folders_and_keeps_named_files(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    (tmp_path / ".git").mkdir()
    (tmp_path / "top.md").write_text("# t")
    (tmp_path / "a" / "intro.md").write_text("# a")
    (tmp_path / "b" / "intro.md").write_text("# b")
    (tmp_path / "b" / "image.png").write_bytes(b"\x89PNG")
    (tmp_path / ".git" / "config.txt").write_text("hidden")
    odd = tmp_path / "notes.rst"
    odd.write_text("named explicitly")
    items, skipped = collect_files([tmp_path, odd, tmp_path / "top.md"])
    by_path = {i.path.relative_to(tmp_path).as_posix(): i for i in items}
    assert sorted(by_path) == ["a/intro.md", "b/intro.md", "notes.rst", "top.md"]
    # Same base name in two folders: two documents.
    assert by_path["a/intro.md"].document_id == "a-intro.md"
    assert by_path["b/intro.md"].document_id == "b-intro.md"
    assert by_path["top.md"].document_id == ""  # the gateway derives it from the name
    assert by_path["notes.rst"].file_name == "notes.rst"
    assert [p.name for p in skipped] == ["image.png"]


def test_collect_files_keeps_non_ascii_names_in_folders_apart(tmp_path: Path) -> None:
    # Both were `docs-.md`: the second file replaced the first.
    (tmp_path / "docs").mkdir()
    for name in ("说明.md", "指南.md"):
        (tmp_path / "docs" / name).write_text("# x")
    items, _ = collect_files([tmp_path])
    ids = {i.document_id for i in items}
    assert len(ids) == 2 and all(i.startswith("docs-") and i.endswith(".md") for i in ids)


def test_collect_files_missing_path(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no such file or folder"):
        collect_files([tmp_path / "missing"])


def test_parse_filters() -> None:
    assert parse_filters(["language=en", "metadata.team = x=y"]) == [
        ("language", "eq", "en"),
        ("metadata.team", "eq", " x=y"),
    ]
    with pytest.raises(ValueError, match="FIELD=VALUE"):
        parse_filters(["language"])


@pytest.mark.parametrize(
    ("err", "code"),
    [
        (NotFoundError("x"), EXIT_NOT_FOUND),
        (UnauthenticatedError("x"), EXIT_AUTH),
        (UnavailableError("x"), EXIT_UNAVAILABLE),
        (RagmeshError("x", code=grpc.StatusCode.DATA_LOSS), EXIT_SERVER),
    ],
)
def test_exit_codes(err: RagmeshError, code: int) -> None:
    assert exit_code_for(err) == code


@pytest.mark.parametrize(
    "command",
    [
        ["kb", "create"],
        ["kb", "list"],
        ["kb", "delete"],
        ["docs", "list"],
        ["docs", "delete"],
        ["jobs"],
        ["jobs", "retry"],
        ["jobs", "cancel"],
        ["ingest"],
        ["search"],
        ["ask"],
        ["eval"],
        ["status"],
        ["serve"],
    ],
)
def test_every_command_has_help_with_examples(command: list[str]) -> None:
    result = CliRunner().invoke(app, [*command, "--help"], env={"COLUMNS": "120"})
    assert result.exit_code == 0, result.output
    assert "Examples:" in result.output
    assert f"ragmesh {' '.join(command)}" in result.output


def test_unreachable_gateway_exit_code(tmp_path: Path) -> None:
    from devstack.procs import free_port

    env = {
        "RAGMESH_GATEWAY_ADDR": f"127.0.0.1:{free_port()}",
        "RAGMESH_API_KEY": "k" * 12,
        "RAGMESH_CONFIG": str(tmp_path / "none.json"),
    }
    result = CliRunner().invoke(app, ["kb", "list"], env=env)
    assert result.exit_code == EXIT_UNAVAILABLE
    assert "UNAVAILABLE" in result.output and "make run" in result.output


def test_eval_rejects_a_folder_that_is_no_data_set(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["eval", str(tmp_path)])
    assert result.exit_code == 2
    assert "no corpus.jsonl" in result.output


def test_eval_modes_are_one_or_several_distinct_search_modes() -> None:
    assert search_modes(None) == [None] and search_modes(" ") == [None]
    assert search_modes("Dense, sparse,hybrid") == ["dense", "sparse", "hybrid"]
    assert "unknown search mode 'bm25'" in str(search_modes("dense,bm25"))
    assert "twice" in str(search_modes("dense,dense"))


def test_eval_rejects_an_unknown_mode_before_connecting(tmp_path: Path) -> None:
    (tmp_path / "corpus.jsonl").write_text('{"id": "p1", "title": "", "text": "Text."}\n')
    (tmp_path / "qa.jsonl").write_text(
        '{"id": "q1", "question": "What?", "answers": ["Text"], "doc_id": "p1"}\n'
    )
    result = CliRunner().invoke(app, ["eval", str(tmp_path), "--mode", "dense,vector"])
    assert result.exit_code == 2
    assert "unknown search mode 'vector'" in result.output


# -- output against a scripted gateway -----------------------------------------------------

API_KEY = "cli-unit-test-key"
J = gateway_pb2
# Text that Rich would read as markup: a style, a closing tag nothing opened (a MarkupError
# when parsed), a regex character class. The CLI must print all of it as it is.
MARKUP = "[bold]b[/bold] [/x] [a-z0-9]"


class ScriptedGateway(gateway_pb2_grpc.RagServiceServicer):
    """Answers as the gateway does, with server text that looks like Rich markup."""

    def _check_kb(self, kb: str, context: grpc.ServicerContext) -> None:
        try:
            check_kb_id(kb)  # the gateway's own check and message
        except errors.ServiceError as exc:
            context.abort_with_status(to_status(exc, "gateway"))

    def CreateKnowledgeBase(self, request: Any, context: grpc.ServicerContext) -> Any:
        self._check_kb(request.knowledge_base_id, context)
        return J.CreateKnowledgeBaseResponse(
            knowledge_base=J.KnowledgeBase(
                knowledge_base_id=request.knowledge_base_id, embedding_model=MARKUP, dimension=3
            )
        )

    def ListKnowledgeBases(self, request: Any, context: grpc.ServicerContext) -> Any:
        return J.ListKnowledgeBasesResponse(
            knowledge_bases=[J.KnowledgeBase(knowledge_base_id="kb", description=MARKUP)]
        )

    def GetKnowledgeBase(self, request: Any, context: grpc.ServicerContext) -> Any:
        self._check_kb(request.knowledge_base_id, context)
        return J.GetKnowledgeBaseResponse(
            knowledge_base=J.KnowledgeBase(knowledge_base_id=request.knowledge_base_id)
        )

    def ListDocuments(self, request: Any, context: grpc.ServicerContext) -> Any:
        self._check_kb(request.knowledge_base_id, context)
        return J.ListDocumentsResponse(
            documents=[
                J.Document(
                    document_id="d1", file_name=f"{MARKUP}.md", title=MARKUP, media_type="text/x"
                )
            ]
        )

    def UploadDocument(self, request_iterator: Iterator[Any], context: grpc.ServicerContext) -> Any:
        header = next(iter(request_iterator)).header
        for _ in request_iterator:
            pass
        return J.UploadDocumentResponse(
            job=J.IngestionJob(job_id="j1", file_name=header.file_name, state=J.JOB_STATE_QUEUED),
            document=J.Document(document_id="d1"),
        )

    def Search(self, request: Any, context: grpc.ServicerContext) -> Any:
        for f in request.filters:
            if f.field.startswith("metadata.") and "[" in f.field:
                context.abort_with_status(
                    to_status(
                        errors.InvalidArgument(
                            f"invalid metadata filter field {f.field!r}: keys must match "
                            "[A-Za-z_][A-Za-z0-9_-]{0,63}, at most 8 levels",
                            reason="UNKNOWN_FILTER_FIELD",
                        ),
                        "retrieval",
                    )
                )
        hit = common_pb2.Citation(
            document_id="d1", file_name=f"{MARKUP}.md", text=MARKUP, end_offset=5, score=1.0
        )
        return J.SearchResponse(hits=[hit], mode=common_pb2.SEARCH_MODE_HYBRID)

    def DownloadDocument(self, request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
        yield J.DownloadDocumentResponse(
            header=J.DownloadHeader(file_name="report.md", media_type="text/markdown")
        )
        yield J.DownloadDocumentResponse(data=b"# report\n")


@pytest.fixture(scope="module")
def gateway_addr() -> Iterator[str]:
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    gateway_pb2_grpc.add_RagServiceServicer_to_server(ScriptedGateway(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield f"127.0.0.1:{port}"
    server.stop(grace=None)


def run_cli(addr: str, tmp_path: Path, *args: str) -> Result:
    env = {
        "RAGMESH_GATEWAY_ADDR": addr,
        "RAGMESH_API_KEY": API_KEY,
        "RAGMESH_CONFIG": str(tmp_path / "none.json"),
        "RAGMESH_KB": "",
        "COLUMNS": "300",  # no table cell wraps
    }
    return CliRunner().invoke(app, list(args), env=env)


def assert_one_line_error(result: Result, code: int, text: str) -> None:
    # Exited on purpose (no traceback), with the one documented line.
    assert isinstance(result.exception, SystemExit), result.exception
    assert result.exit_code == code, result.output
    assert result.stderr.count("\n") == 1, result.stderr
    assert result.stderr.startswith("error: "), result.stderr
    assert text in result.stderr, result.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["kb", "create", "Bad Name!"],
            "error: INVALID_ARGUMENT [INVALID_KNOWLEDGE_BASE_ID]: knowledge_base_id 'Bad Name!' "
            "must match ^[a-z0-9][a-z0-9_-]{0,62}$",
        ),
        (["kb", "create", "[bold]x"], "knowledge_base_id '[bold]x' must match ^[a-z0-9]"),
        (["docs", "list", "--kb", "[/x]"], "knowledge_base_id '[/x]' must match ^[a-z0-9]"),
        (
            ["search", "q", "--kb", "kb", "--filter", "metadata.[/b]=1"],
            "error: INVALID_ARGUMENT [UNKNOWN_FILTER_FIELD]: invalid metadata filter field "
            "'metadata.[/b]': keys must match [A-Za-z_][A-Za-z0-9_-]{0,63}",
        ),
    ],
)
def test_server_errors_are_printed_verbatim(
    gateway_addr: str, tmp_path: Path, args: list[str], message: str
) -> None:
    result = run_cli(gateway_addr, tmp_path, *args)
    assert_one_line_error(result, EXIT_USAGE, message)


def test_local_errors_with_user_text_are_printed_verbatim(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["search", "q", "--kb", "kb", "--filter", "[/x]"])
    assert_one_line_error(result, EXIT_USAGE, "--filter '[/x]': expected FIELD=VALUE")
    missing = tmp_path / "[/x][bold]"
    result = CliRunner().invoke(app, ["ingest", str(missing), "--kb", "kb"])
    assert_one_line_error(result, EXIT_NOT_FOUND, f"no such file or folder: {missing}")


def test_server_text_in_output_is_printed_verbatim(gateway_addr: str, tmp_path: Path) -> None:
    created = run_cli(gateway_addr, tmp_path, "kb", "create", "kb")
    assert created.exit_code == EXIT_OK, created.output
    assert f"created knowledge base kb ({MARKUP}, 3 dimensions)" in created.stdout
    for args in (["kb", "list"], ["docs", "list", "--kb", "kb"], ["search", "q", "--kb", "kb"]):
        result = run_cli(gateway_addr, tmp_path, *args)
        assert result.exit_code == EXIT_OK, (args, result.output, result.exception)
        assert MARKUP in result.stdout, (args, result.stdout)


def test_ingest_prints_file_names_verbatim(gateway_addr: str, tmp_path: Path) -> None:
    odd = tmp_path / "[bold]a[i].md"  # (a file name holds no `/`, so no closing tag)
    odd.write_text("# a\n")
    result = run_cli(gateway_addr, tmp_path, "ingest", str(odd), "--kb", "kb")
    assert result.exit_code == EXIT_OK, (result.output, result.exception)
    assert "[bold]a[i].md" in result.stdout


def test_download_writes_the_file(gateway_addr: str, tmp_path: Path) -> None:
    out = tmp_path / "[bold]copy[i].md"
    result = run_cli(gateway_addr, tmp_path, "docs", "download", "d1", "--kb", "kb", "-o", str(out))
    assert result.exit_code == EXIT_OK, (result.output, result.exception)
    assert out.read_bytes() == b"# report\n"
    assert f"wrote {out} (9 bytes, text/markdown)" in result.stdout


@pytest.mark.parametrize("where", ["missing/dir/x.md", "."])
def test_download_to_a_path_that_cannot_be_written(
    gateway_addr: str, tmp_path: Path, where: str
) -> None:
    out = tmp_path / where  # a missing folder; a folder
    result = run_cli(gateway_addr, tmp_path, "docs", "download", "d1", "--kb", "kb", "-o", str(out))
    assert_one_line_error(result, EXIT_FAILURES, f"error: cannot write {out}: ")


def _qa_dataset(folder: Path) -> Path:
    folder.mkdir()
    (folder / "corpus.jsonl").write_text('{"id": "p1", "title": "", "text": "Text."}\n')
    (folder / "qa.jsonl").write_text(
        '{"id": "q1", "question": "What?", "answers": ["Text"], "doc_id": "p1"}\n'
    )
    return folder


def test_eval_refuses_a_json_file_it_cannot_write_before_connecting(tmp_path: Path) -> None:
    data = _qa_dataset(tmp_path / "data")
    out = tmp_path / "missing" / "[bold]x[i].json"
    result = CliRunner().invoke(app, ["eval", str(data), "--json", str(out)])
    assert_one_line_error(result, EXIT_USAGE, f"error: cannot write {out}: ")
    result = CliRunner().invoke(app, ["eval", str(data), "--json", str(tmp_path)])
    assert_one_line_error(result, EXIT_USAGE, f"error: cannot write {tmp_path}: ")


def test_eval_reports_a_data_set_file_it_cannot_read(tmp_path: Path) -> None:
    data = _qa_dataset(tmp_path / "[bold]d[i]")
    (data / "corpus.jsonl").write_bytes(b'{"id": "p1", "text": "\xff\xfe"}\n')  # not UTF-8
    result = CliRunner().invoke(app, ["eval", str(data)])
    assert_one_line_error(result, EXIT_USAGE, f"error: cannot read the data set {data}: not UTF-8")


def test_eval_reports_a_data_set_it_cannot_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def unreadable(folder: Path) -> None:
        raise PermissionError(13, "Permission denied", str(folder / "qa.jsonl"))

    monkeypatch.setattr("ragmesh.cli_eval.load_dataset", unreadable)
    result = CliRunner().invoke(app, ["eval", str(tmp_path)])
    message = f"error: cannot read {tmp_path / 'qa.jsonl'}: Permission denied"
    assert_one_line_error(result, EXIT_USAGE, message)
