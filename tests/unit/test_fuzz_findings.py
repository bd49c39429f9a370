"""Bugs the fuzz suite (tests/fuzz) found, one test each; the same inputs also run
against the real servers there and in tests/integration/test_malformed_requests.py."""

from __future__ import annotations

import pytest

from ragmesh.chunking.v1 import chunking_pb2
from ragmesh.gateway.v1 import gateway_pb2 as pb
from services.chunking.config import ChunkingSettings
from services.chunking.convert import chunk_message, init_worker
from services.common import errors
from services.common.api import dict_from_struct, struct_from_dict, value_from_proto
from services.common.status import MAX_MESSAGE_BYTES, to_status
from services.gateway.server import _job_state


def test_an_unknown_job_state_number_is_invalid_argument() -> None:
    # JobState.Name(6) raised ValueError: INTERNAL.
    with pytest.raises(errors.InvalidArgument) as exc:
        _job_state(6)
    assert exc.value.reason == "INVALID_JOB_STATE"
    assert _job_state(pb.JOB_STATE_FAILED) is not None


@pytest.mark.parametrize("raw", [b"\x00", b"\x12\x05ab", b"\xb8\xe0&R\xae}k"])
def test_undecodable_chunking_bytes_are_malformed_request(raw: bytes) -> None:
    # The chunking pool decodes the raw request in a worker: DecodeError was INTERNAL.
    with pytest.raises(errors.InvalidArgument) as exc:
        chunk_message(None, raw)  # type: ignore[arg-type]
    assert exc.value.reason == "MALFORMED_REQUEST"


def test_a_status_that_echoes_a_huge_input_still_fits_in_the_trailers() -> None:
    # A 16 KB knowledge base id echoed in the message and ErrorInfo metadata made
    # the trailers exceed gRPC's limit: the client saw RESOURCE_EXHAUSTED "received
    # metadata size exceeds hard limit" and no ErrorInfo.
    huge = "é" * 8000
    status = to_status(
        errors.InvalidArgument(
            f"invalid id {huge}",
            reason="INVALID_KNOWLEDGE_BASE_ID",
            metadata={f"k{i}": huge for i in range(40)},
        ),
        "gateway.ragmesh",
    )
    assert len(status.details.encode()) <= MAX_MESSAGE_BYTES
    size = sum(len(k) + len(v) for k, v in status.trailing_metadata)
    assert size < 8 * 1024, size


@pytest.mark.parametrize("number", [float("nan"), float("inf"), -float("inf")])
def test_a_struct_with_a_non_finite_number_is_invalid_argument(number: float) -> None:
    # json_format.MessageToDict raised ValueError (INTERNAL) for index_params,
    # upload metadata, chunk metadata and filter values holding NaN.
    struct = struct_from_dict({"M": number, "nested": [1, {"x": number}]})
    with pytest.raises(errors.InvalidArgument) as exc:
        dict_from_struct(struct, "index_params")
    assert exc.value.reason == "NON_FINITE_NUMBER"
    with pytest.raises(errors.InvalidArgument):
        value_from_proto(struct.fields["nested"], "filters.value")
    assert dict_from_struct(struct_from_dict({"M": 16})) == {"M": 16}


def test_a_huge_document_id_is_counted_in_bytes_before_chunking() -> None:
    # A 1 MB document id of emoji was counted in characters: the chunks were built,
    # each repeating it, and the response grew past protobuf's 2 GiB (EncodeError,
    # INTERNAL). It is refused from the estimate now, before any chunk is made.
    chunker = init_worker(ChunkingSettings(), 40 * 1024 * 1024, "WARNING", "text")
    request = chunking_pb2.ChunkDocumentRequest(
        content=b"a" * (1 << 20), media_type="text/plain", document_id="\U0001f642" * (1 << 18)
    )
    with pytest.raises(errors.ResourceExhausted) as exc:
        chunk_message(chunker, request.SerializeToString())
    assert exc.value.reason == "RESPONSE_TOO_LARGE"
    assert "would take about" in exc.value.message
