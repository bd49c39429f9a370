"""Request builders of the SDK: enums by name, filters, upload streams, config lookup."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from ragmesh.client import builders
from ragmesh.client.config import ClientSettings, write_config_file
from ragmesh.client.media import MARKDOWN, PDF
from ragmesh.common.v1 import common_pb2
from ragmesh.gateway.v1 import gateway_pb2


def test_enums_by_short_name_full_name_and_value() -> None:
    assert builders.search_mode("hybrid") == common_pb2.SEARCH_MODE_HYBRID
    assert builders.search_mode("SEARCH_MODE_DENSE") == common_pb2.SEARCH_MODE_DENSE
    assert builders.search_mode(common_pb2.SEARCH_MODE_SPARSE) == common_pb2.SEARCH_MODE_SPARSE
    assert builders.search_mode(None) == 0
    assert builders.metric("cosine") == common_pb2.METRIC_COSINE
    assert builders.index_type("ivf-flat") == common_pb2.INDEX_TYPE_IVF_FLAT
    assert builders.text_language("Chinese") == common_pb2.TEXT_LANGUAGE_CHINESE
    assert builders.job_state("failed") == gateway_pb2.JOB_STATE_FAILED


def test_unknown_enum_name_lists_the_choices() -> None:
    with pytest.raises(ValueError, match=r"unknown search mode 'fuzzy'.*dense, sparse, hybrid"):
        builders.search_mode("fuzzy")


def test_short_name() -> None:
    assert builders.short_name(gateway_pb2.JobState, gateway_pb2.JOB_STATE_SUCCEEDED) == "succeeded"
    assert builders.short_name(gateway_pb2.JobStage, gateway_pb2.JOB_STAGE_EMBEDDING) == "embedding"
    assert builders.short_name(common_pb2.SearchMode, common_pb2.SEARCH_MODE_HYBRID) == "hybrid"
    assert builders.short_name(common_pb2.Metric, common_pb2.METRIC_L2) == "l2"


def test_filter_conditions_are_typed_values() -> None:
    eq = builders.filter_condition("language", "==", "en")
    assert eq.operator == common_pb2.FILTER_OPERATOR_EQ
    assert eq.value.string_value == "en"
    many = builders.filter_condition("chunk_index", "in", [0, 2])
    assert [v.number_value for v in many.value.list_value.values] == [0, 2]
    flag = builders.filter_condition("metadata.public", "eq", True)
    assert flag.value.WhichOneof("kind") == "bool_value"
    with pytest.raises(ValueError, match="unknown filter operator"):
        builders.filter_condition("x", "~", 1)


def test_search_request_optional_fields() -> None:
    req = builders.search_request(
        "kb", "q", top_k=3, mode="dense", filters=[("document_id", "eq", "d1")]
    )
    assert not req.HasField("min_score")
    assert not req.HasField("fusion")
    assert req.filters[0].value.string_value == "d1"
    req = builders.search_request("kb", "q", min_score=0.0, fusion="rrf")
    assert req.HasField("min_score")
    assert req.fusion.method == common_pb2.FUSION_METHOD_RRF


def test_ask_request_temperature_zero_is_sent() -> None:
    assert builders.ask_request("kb", "q", temperature=0.0).HasField("temperature")
    assert not builders.ask_request("kb", "q").HasField("temperature")


def test_upload_stream_from_path_is_header_then_exact_bytes(tmp_path: Path) -> None:
    content = b"# Title\n" + bytes(range(256)) * 1000  # 256 kB: several pieces
    path = tmp_path / "guide.md"
    path.write_bytes(content)
    opened = builders.open_source(path)
    assert opened.file_name == "guide.md"
    assert opened.media_type == MARKDOWN
    header = builders.upload_header("kb", opened, document_id="d", metadata={"team": "x"})
    msgs = list(builders.upload_requests(header, opened, chunk_bytes=10_000))
    opened.close()
    assert opened.stream.closed
    assert msgs[0].WhichOneof("payload") == "header"
    assert msgs[0].header.metadata["team"] == "x"
    pieces = [m.data for m in msgs[1:]]
    assert all(len(p) == 10_000 for p in pieces[:-1])
    assert b"".join(pieces) == content


def test_upload_stream_of_empty_bytes_is_header_only() -> None:
    opened = builders.open_source(b"", file_name="empty.txt")
    header = builders.upload_header("kb", opened)
    assert [m.WhichOneof("payload") for m in builders.upload_requests(header, opened)] == ["header"]


def test_upload_sources_need_a_name() -> None:
    with pytest.raises(ValueError, match="file_name"):
        builders.open_source(b"data")
    with pytest.raises(ValueError, match="file_name"):
        builders.open_source(io.BytesIO(b"data"))
    opened = builders.open_source(io.BytesIO(b"%PDF-1.4 x"), file_name="x.bin")
    assert opened.media_type == PDF
    assert not opened.owned


def test_upload_of_missing_path(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        builders.open_source(tmp_path / "nope.md")


def test_settings_precedence(tmp_path: Path) -> None:
    config = tmp_path / "cfg.json"
    write_config_file(
        config,
        {
            "gateway_addr": "127.0.0.1:7000",
            "api_key": "file-key",
            "knowledge_base": "demo",
            "services": {"chunking": "h:1"},
        },
    )
    assert oct(config.stat().st_mode & 0o777) == "0o600"
    env = {"RAGMESH_CONFIG": str(config)}
    s = ClientSettings.resolve(env=env)
    assert (s.gateway_addr, s.api_key, s.knowledge_base) == ("127.0.0.1:7000", "file-key", "demo")
    assert s.services == {"chunking": "h:1"}
    s = ClientSettings.resolve(env={**env, "RAGMESH_GATEWAY_ADDR": "e:1", "RAGMESH_API_KEY": "ek"})
    assert (s.gateway_addr, s.api_key) == ("e:1", "ek")
    s = ClientSettings.resolve("flag:2", "fk", env={**env, "RAGMESH_API_KEY": "ek"})
    assert (s.gateway_addr, s.api_key) == ("flag:2", "fk")


def test_project_config_found_from_a_subfolder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    (tmp_path / ".ragmesh").mkdir()
    (tmp_path / ".ragmesh" / "config.json").write_text(json.dumps({"gateway_addr": "p:3"}))
    sub = tmp_path / "a" / "b"
    sub.mkdir(parents=True)
    assert ClientSettings.resolve(env={}, cwd=sub).gateway_addr == "p:3"


def test_bad_config_file_is_a_clear_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ValueError, match=r"cannot read ragmesh config .*bad\.json"):
        ClientSettings.resolve(env={"RAGMESH_CONFIG": str(bad)})


def test_tls_settings_precedence(tmp_path: Path) -> None:
    config = tmp_path / "cfg.json"
    write_config_file(
        config, {"gateway_addr": "rag.example.com:443", "api_key": "k", "ca_file": "ca.pem"}
    )
    env = {"RAGMESH_CONFIG": str(config)}
    s = ClientSettings.resolve(env=env)  # a CA file implies TLS; relative to the file
    assert (s.tls, s.ca_file) == (True, str(tmp_path / "ca.pem"))
    s = ClientSettings.resolve(tls=False, env=env)  # --no-tls wins
    assert (s.tls, s.ca_file) == (False, str(tmp_path / "ca.pem"))
    # the file's TLS describes the file's gateway: not one named elsewhere
    for other in (
        ClientSettings.resolve("127.0.0.1:50051", env=env),
        ClientSettings.resolve(env={**env, "RAGMESH_GATEWAY_ADDR": "127.0.0.1:50051"}),
    ):
        assert (other.tls, other.ca_file) == (False, "")
    s = ClientSettings.resolve("gw:1", env={**env, "RAGMESH_TLS_CA_FILE": "/etc/ca.pem"})
    assert (s.tls, s.ca_file) == (True, "/etc/ca.pem")
    s = ClientSettings.resolve("gw:1", env={"RAGMESH_TLS": "true"}, read_file=False)
    assert (s.tls, s.ca_file) == (True, "")  # system roots
    s = ClientSettings.resolve("gw:1", ca_file=tmp_path / "x.pem", env={"RAGMESH_TLS": "0"})
    assert (s.tls, s.ca_file) == (True, str(tmp_path / "x.pem"))  # --ca-file beats the env
    s = ClientSettings.resolve(env={**env, "RAGMESH_TLS": "0"})  # the env beats the file
    assert (s.tls, s.ca_file) == (False, str(tmp_path / "ca.pem"))
    s = ClientSettings.resolve("gw:1", tls=False, env={"RAGMESH_TLS_CA_FILE": "/etc/ca.pem"})
    assert (s.tls, s.ca_file) == (False, "/etc/ca.pem")
    write_config_file(config, {"gateway_addr": "g:1", "tls": "maybe"})
    with pytest.raises(ValueError, match="tls must be true or false"):
        ClientSettings.resolve(env=env)
