"""`ragmesh serve chunking` as a real process, called over gRPC."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from google.protobuf.descriptor_pool import DescriptorPool
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)

from benchmarks.chunking_data import chinese_text, english_pdf, english_text, make_pdf
from devstack.procs import health_status
from ragmesh.chunking.v1 import chunking_pb2, chunking_pb2_grpc
from services.common.status import error_info_of

SERVICE = "ragmesh.chunking.v1.ChunkingService"
MAX_DOCUMENT_BYTES = 11 * 1024 * 1024  # room for the 10 MB line, small enough to exceed cheaply
# The server's message limit, lowered so that a response over it is cheap to provoke.
SERVER_MESSAGE_BYTES = 12 * 1024 * 1024
MESSAGE_BYTES = 40 * 1024 * 1024
Options = chunking_pb2.ChunkingOptions
Request = chunking_pb2.ChunkDocumentRequest


@pytest.fixture(scope="module")
def addr(start_ragmesh_service) -> str:  # type: ignore[no-untyped-def]
    _, address = start_ragmesh_service(
        "chunking",
        env={
            "RAGMESH_CHUNKING_MAX_DOCUMENT_BYTES": str(MAX_DOCUMENT_BYTES),
            "RAGMESH_MAX_MESSAGE_BYTES": str(SERVER_MESSAGE_BYTES),
        },
    )
    return str(address)


@pytest.fixture(scope="module")
def channel(addr: str) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(
        addr,
        options=[
            ("grpc.max_receive_message_length", MESSAGE_BYTES),
            ("grpc.max_send_message_length", MESSAGE_BYTES),
        ],
    ) as ch:
        yield ch


@pytest.fixture(scope="module")
def stub(channel: grpc.Channel) -> chunking_pb2_grpc.ChunkingServiceStub:
    return chunking_pb2_grpc.ChunkingServiceStub(channel)


def test_health(addr: str) -> None:
    assert health_status(addr) == "SERVING"
    assert health_status(addr, SERVICE) == "SERVING"


def test_reflection_lists_the_service(channel: grpc.Channel) -> None:
    db = ProtoReflectionDescriptorDatabase(channel)
    assert SERVICE in db.get_services()
    service = DescriptorPool(db).FindServiceByName(SERVICE)
    assert [m.name for m in service.methods] == ["ChunkDocument"]


def test_markdown(stub: chunking_pb2_grpc.ChunkingServiceStub) -> None:
    md = "# Guide\n\nIntro.\n\n## Install\n\n" + english_text(4) + "\n\n## Use\n\nCall it."
    resp = stub.ChunkDocument(
        Request(
            content=md.encode(),
            media_type="text/markdown",
            document_id="doc-1",
            file_name="guide.md",
            options=Options(max_tokens=64, include_normalized_text=True),
        ),
        timeout=60,
    )
    assert resp.media_type == "text/markdown"
    assert resp.title == "Guide"
    assert resp.tokenizer == "sentence-transformers/all-MiniLM-L6-v2"
    assert resp.text_length == len(resp.normalized_text) > 0
    assert resp.invalid_utf8_replacements == 0
    assert resp.total_tokens == sum(c.token_count for c in resp.chunks)
    assert [c.chunk_index for c in resp.chunks] == list(range(len(resp.chunks)))
    for c in resp.chunks:
        assert resp.normalized_text[c.start_offset : c.end_offset] == c.text
        assert 0 < c.token_count <= 64
        assert c.document_id == "doc-1"
        assert c.title == "Guide"
        assert c.media_type == "text/markdown"
    assert list(resp.chunks[0].heading_path) == ["Guide"]
    assert list(resp.chunks[1].heading_path) == ["Guide", "Install"]
    assert list(resp.chunks[-1].heading_path) == ["Guide", "Use"]


def test_text_field_and_defaults(stub: chunking_pb2_grpc.ChunkingServiceStub) -> None:
    resp = stub.ChunkDocument(Request(text=english_text(30)), timeout=60)
    assert resp.media_type == "text/plain"
    assert resp.normalized_text == ""  # only on request
    assert len(resp.chunks) > 1
    assert max(c.token_count for c in resp.chunks) <= 256
    assert all(
        a.end_offset <= b.start_offset for a, b in zip(resp.chunks, resp.chunks[1:], strict=False)
    )


def test_html_and_pdf(stub: chunking_pb2_grpc.ChunkingServiceStub) -> None:
    html = (
        b"<html><head><title>T</title><script>evil()</script></head><body><h1>H</h1>"
        b"<p>Para one.</p><style>.x{}</style><h2>S</h2><p>Para two.</p></body></html>"
    )
    resp = stub.ChunkDocument(Request(content=html, file_name="page.html"), timeout=60)
    assert resp.media_type == "text/html"
    assert resp.title == "T"
    assert [(c.text, list(c.heading_path)) for c in resp.chunks] == [
        ("H\n\nPara one.", ["H"]),
        ("S\n\nPara two.", ["H", "S"]),
    ]
    resp = stub.ChunkDocument(
        Request(content=english_pdf(4), media_type="application/pdf"), timeout=60
    )
    assert resp.media_type == "application/pdf"
    assert resp.title == "Generated report"
    assert len(resp.chunks) >= 4
    assert all(c.page_start >= 1 and c.page_label for c in resp.chunks)


def test_real_documents_through_the_workers(stub: chunking_pb2_grpc.ChunkingServiceStub) -> None:
    """PDFium runs in the worker processes: a real manual, its pages and labels."""
    repo = Path(__file__).resolve().parents[2]
    pdf = (repo / "eval" / "realworld" / "documents" / "libtasn1.pdf").read_bytes()
    resp = stub.ChunkDocument(
        Request(
            content=pdf, file_name="libtasn1.pdf", options=Options(include_normalized_text=True)
        ),
        timeout=60,
    )
    entry = next(c for c in resp.chunks if "int asn1_decode_simple_der (" in c.text)
    assert (entry.page_start, entry.page_label) == (25, "22")
    assert resp.normalized_text[entry.start_offset : entry.end_offset] == entry.text
    docx = (repo / "tests" / "data" / "documents" / "sample.docx").read_bytes()
    resp = stub.ChunkDocument(Request(content=docx, file_name="manual.docx"), timeout=60)
    assert resp.media_type.endswith("wordprocessingml.document")
    assert ["Reference", "widget_open"] in [list(c.heading_path) for c in resp.chunks]


def test_chinese_and_overlap(stub: chunking_pb2_grpc.ChunkingServiceStub) -> None:
    resp = stub.ChunkDocument(
        Request(text=chinese_text(100), options=Options(max_tokens=48, overlap_tokens=8)),
        timeout=60,
    )
    assert max(c.token_count for c in resp.chunks) <= 48
    assert any(
        b.start_offset < a.end_offset for a, b in zip(resp.chunks, resp.chunks[1:], strict=False)
    )


def test_deterministic(stub: chunking_pb2_grpc.ChunkingServiceStub) -> None:
    req = Request(
        content=(english_text(10) + chinese_text(30)).encode(),
        options=Options(max_tokens=40, overlap_tokens=5),
    )
    assert stub.ChunkDocument(req, timeout=60) == stub.ChunkDocument(req, timeout=60)


def test_invalid_utf8_is_replaced(stub: chunking_pb2_grpc.ChunkingServiceStub) -> None:
    resp = stub.ChunkDocument(
        Request(
            content=b"caf\xe9 au lait \xff end",
            media_type="text/plain",
            options=Options(include_normalized_text=True),
        ),
        timeout=60,
    )
    assert resp.invalid_utf8_replacements == 2
    assert resp.normalized_text == "caf\ufffd au lait \ufffd end"


def test_ten_megabyte_line(stub: chunking_pb2_grpc.ChunkingServiceStub) -> None:
    """No spaces anywhere: split by the character cap, nothing lost, no hang."""
    line = b"a" * 10_000_000
    resp = stub.ChunkDocument(Request(content=line, media_type="text/plain"), timeout=300)
    assert len(resp.chunks) >= 10_000_000 // 4096
    assert max(len(c.text) for c in resp.chunks) <= 4096
    assert all(c.token_count <= 256 for c in resp.chunks)
    assert sum(len(c.text) for c in resp.chunks) == len(line)
    assert resp.chunks[-1].end_offset == len(line)


BAD = [
    (
        "empty content",
        Request(content=b"", media_type="text/plain"),
        grpc.StatusCode.INVALID_ARGUMENT,
        "EMPTY_DOCUMENT",
    ),
    ("no source", Request(), grpc.StatusCode.INVALID_ARGUMENT, "EMPTY_DOCUMENT"),
    ("empty text", Request(text=""), grpc.StatusCode.INVALID_ARGUMENT, "EMPTY_DOCUMENT"),
    (
        "whitespace only",
        Request(content=b"  \n\n \t"),
        grpc.StatusCode.INVALID_ARGUMENT,
        "NO_TEXT_CONTENT",
    ),
    (
        "unsupported type",
        Request(content=b"hello", media_type="image/png"),
        grpc.StatusCode.INVALID_ARGUMENT,
        "UNSUPPORTED_MEDIA_TYPE",
    ),
    (
        "broken Word document",
        Request(content=b"PK\x03\x04" + bytes(200), file_name="a.docx"),
        grpc.StatusCode.INVALID_ARGUMENT,
        "CORRUPT_DOCUMENT",
    ),
    (
        "undetectable binary",
        Request(content=b"PK\x03\x04" + bytes(200), file_name="a.zip"),
        grpc.StatusCode.INVALID_ARGUMENT,
        "UNSUPPORTED_MEDIA_TYPE",
    ),
    (
        "text declared as pdf",
        Request(content=b"just text", media_type="application/pdf"),
        grpc.StatusCode.INVALID_ARGUMENT,
        "MEDIA_TYPE_MISMATCH",
    ),
    (
        "binary declared as text",
        Request(content=bytes(range(256)) * 8, media_type="text/plain"),
        grpc.StatusCode.INVALID_ARGUMENT,
        "MEDIA_TYPE_MISMATCH",
    ),
    (
        "pdf declared as markdown",
        Request(content=make_pdf(["x"]), media_type="text/markdown"),
        grpc.StatusCode.INVALID_ARGUMENT,
        "MEDIA_TYPE_MISMATCH",
    ),
    (
        "corrupt pdf",
        Request(content=b"%PDF-1.4\n1 0 obj << /Type /Catalog", media_type="application/pdf"),
        grpc.StatusCode.INVALID_ARGUMENT,
        "CORRUPT_DOCUMENT",
    ),
    (
        "truncated pdf",
        Request(content=english_pdf(2)[:300], media_type="application/pdf"),
        grpc.StatusCode.INVALID_ARGUMENT,
        "CORRUPT_DOCUMENT",
    ),
    (
        "max_tokens above model",
        Request(text="x", options=Options(max_tokens=257)),
        grpc.StatusCode.INVALID_ARGUMENT,
        "MAX_TOKENS_OUT_OF_RANGE",
    ),
    (
        "overlap >= max_tokens",
        Request(text="x", options=Options(max_tokens=64, overlap_tokens=64)),
        grpc.StatusCode.INVALID_ARGUMENT,
        "OVERLAP_TOO_LARGE",
    ),
    (
        "negative overlap",
        Request(text="x", options=Options(overlap_tokens=-5)),
        grpc.StatusCode.INVALID_ARGUMENT,
        "INVALID_OVERLAP",
    ),
    (
        "over the size limit",
        Request(content=b"a " * (MAX_DOCUMENT_BYTES // 2 + 1)),
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        "DOCUMENT_TOO_LARGE",
    ),
    (
        "response too large",
        Request(
            text=english_text(2500),
            options=Options(max_tokens=4, overlap_tokens=1, include_normalized_text=True),
        ),
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        "RESPONSE_TOO_LARGE",
    ),
]


@pytest.mark.parametrize(
    ("request_", "code", "reason"), [b[1:] for b in BAD], ids=[b[0] for b in BAD]
)
def test_bad_input(
    stub: chunking_pb2_grpc.ChunkingServiceStub,
    request_: chunking_pb2.ChunkDocumentRequest,
    code: grpc.StatusCode,
    reason: str,
) -> None:
    with pytest.raises(grpc.RpcError) as exc:
        stub.ChunkDocument(request_, timeout=120)
    err = exc.value
    assert err.code() == code, err.details()  # type: ignore[attr-defined]
    assert err.details()  # type: ignore[attr-defined]
    info = error_info_of(err)
    assert info is not None
    assert info.reason == reason
    assert info.domain.startswith("chunking")
