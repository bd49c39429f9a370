"""Unit tests of services/common: errors → status, retry config, logs."""

from __future__ import annotations

import json
import logging

import grpc
from google.rpc import error_details_pb2, status_pb2

from services.common import errors
from services.common.channels import retry_service_config
from services.common.config import default_metrics_port
from services.common.logs import JsonFormatter, request_id_var
from services.common.status import to_status


def test_to_status_carries_code_message_and_error_info() -> None:
    err = errors.NotFound("no such kb", reason="KNOWLEDGE_BASE_NOT_FOUND", metadata={"kb": "x"})
    status = to_status(err, "gateway.ragmesh")
    assert status.code == grpc.StatusCode.NOT_FOUND
    assert status.details == "no such kb"
    raw = dict(status.trailing_metadata)["grpc-status-details-bin"]
    decoded = status_pb2.Status.FromString(raw)
    info = error_details_pb2.ErrorInfo()
    assert decoded.details[0].Unpack(info)
    assert (info.reason, info.domain, dict(info.metadata)) == (
        "KNOWLEDGE_BASE_NOT_FOUND",
        "gateway.ragmesh",
        {"kb": "x"},
    )


def test_every_error_class_names_a_real_status_code() -> None:
    for cls in errors.ServiceError.__subclasses__():
        assert getattr(grpc.StatusCode, cls.code) is not grpc.StatusCode.UNKNOWN
        assert cls.default_reason.isupper()


def test_retry_policy_only_for_idempotent_methods() -> None:
    config = json.loads(retry_service_config("pkg.Svc", ["Get", "List"]))
    (method_config,) = config["methodConfig"]
    assert [n["method"] for n in method_config["name"]] == ["Get", "List"]
    assert method_config["retryPolicy"]["retryableStatusCodes"] == ["UNAVAILABLE"]
    assert json.loads(retry_service_config("pkg.Svc", [])) == {"methodConfig": []}


def test_metrics_port_follows_grpc_port() -> None:
    assert default_metrics_port(50051) == 9101
    assert default_metrics_port(50055) == 9105


def test_json_log_lines_carry_the_request_id() -> None:
    formatter = JsonFormatter("toy")
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "hello %s", ("world",), None)
    record.method = "/a.B/C"
    token = request_id_var.set("rid-123")
    try:
        line = json.loads(formatter.format(record))
    finally:
        request_id_var.reset(token)
    assert line["msg"] == "hello world"
    assert line["request_id"] == "rid-123"
    assert line["service"] == "toy"
    assert line["method"] == "/a.B/C"
