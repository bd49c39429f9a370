"""Word (.docx) and OpenDocument (.odt) documents: headings as heading paths,
tables as rows, skipped parts; detection; and the container's hostile-input
limits (entries, bombs, huge images, DOCTYPEs, encryption)."""

from __future__ import annotations

import io
import time
import zipfile
from pathlib import Path

import pytest

from services.chunking import media, office
from services.chunking.chunker import Chunker, ChunkRequest, load_counter
from services.chunking.config import ChunkingSettings
from services.chunking.parsing import assemble
from services.common.errors import InvalidArgument

DATA = Path(__file__).resolve().parents[2] / "tests" / "data" / "documents"
DOCX = (DATA / "sample.docx").read_bytes()  # written by python-docx
ODT = (DATA / "sample.odt").read_bytes()  # written by odfpy
W = 'xmlns:w="http://schemas.openxmlformats.org/wordprocessingml/2006/main"'


def rewrap(
    source: bytes,
    replace: dict[str, bytes] | None = None,
    extra: dict[str, bytes] | None = None,
) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(source)) as zin, zipfile.ZipFile(out, "w") as zout:
        for info in zin.infolist():
            data = (replace or {}).get(info.filename, zin.read(info))
            stored = info.filename == "mimetype"
            zout.writestr(
                info.filename, data, zipfile.ZIP_STORED if stored else zipfile.ZIP_DEFLATED
            )
        for name, data in (extra or {}).items():
            zout.writestr(name, data, zipfile.ZIP_DEFLATED)
    return out.getvalue()


def docx_body(body: str) -> bytes:
    xml = f'<?xml version="1.0"?><w:document {W}><w:body>{body}</w:body></w:document>'
    return rewrap(DOCX, {"word/document.xml": xml.encode()})


def para(text: str, style: str = "") -> str:
    props = f'<w:pPr><w:pStyle w:val="{style}"/></w:pPr>' if style else ""
    return f"<w:p>{props}<w:r><w:t>{text}</w:t></w:r></w:p>"


# ------------------------------------------------------------------ structure


def test_docx_headings_tables_and_title() -> None:
    doc = assemble(office.parse_office(DOCX, media.DOCX))
    assert doc.title == "Widget Manual"
    paths = [s.heading_path for s in doc.sections]
    assert ("Installation", "Requirements") in paths
    assert ("Reference", "widget_open") in paths
    assert "OS | Version | Notes\nLinux | 6.1 | tested on Debian 12" in doc.text
    assert "inner-a inner-b" in doc.text  # a nested table folds into its cell
    assert "RUNNING HEADER TEXT" not in doc.text  # headers and footers are other parts


def test_odt_headings_and_tables() -> None:
    doc = assemble(office.parse_office(ODT, media.ODT))
    paths = [s.heading_path for s in doc.sections]
    assert ("Widget Manual", "Installation", "Deep heading") in paths
    assert "OS | Version | Notes\nLinux | 6.1 | tested on Debian 12" in doc.text
    assert "Run the installer. Call widget_init() first." in doc.text  # text:s and spans


def test_docx_skips_deleted_text_field_codes_and_the_table_of_contents() -> None:
    toc = (
        '<w:sdt><w:sdtPr><w:docPartObj><w:docPartGallery w:val="Table of Contents"/>'
        f"</w:docPartObj></w:sdtPr><w:sdtContent>{para('Contents ..... 3')}</w:sdtContent></w:sdt>"
    )
    deleted = (
        "<w:p><w:del><w:r><w:delText>old words</w:delText></w:r></w:del>"
        "<w:r><w:t>new</w:t></w:r></w:p>"
    )
    field = "<w:p><w:r><w:instrText> PAGE </w:instrText></w:r><w:r><w:t>7</w:t></w:r></w:p>"
    doc = assemble(office.parse_docx(docx_body(toc + deleted + field + para("Body", "Heading1"))))
    assert "Contents" not in doc.text and "old words" not in doc.text and "PAGE" not in doc.text
    assert doc.text == "new\n\n7\n\nBody"
    assert doc.sections[-1].heading_path == ("Body",)


def test_chunks_of_a_word_document_carry_heading_paths() -> None:
    settings = ChunkingSettings()
    chunker = Chunker(settings, load_counter(settings))
    result = chunker.chunk(ChunkRequest(content=DOCX, file_name="manual.docx"))
    assert result.media_type == media.DOCX
    assert any(c.heading_path == ("Reference", "widget_open") for c in result.chunks)
    assert not result.pages  # no pages in a Word document


# ------------------------------------------------------------------ detection


def test_detection() -> None:
    assert media.resolve(DOCX, "", "").essence == media.DOCX
    assert media.resolve(ODT, "", "").essence == media.ODT
    assert media.resolve(ODT, "", "x.odt").essence == media.ODT
    assert media.resolve(DOCX, media.DOCX, "").essence == media.DOCX
    with pytest.raises(InvalidArgument) as exc:
        media.resolve(ODT, media.DOCX, "")
    assert exc.value.reason == "MEDIA_TYPE_MISMATCH"
    with pytest.raises(InvalidArgument) as exc:
        media.resolve(b"just text", media.ODT, "")
    assert exc.value.reason == "MEDIA_TYPE_MISMATCH"
    with pytest.raises(InvalidArgument) as exc:
        media.resolve(b"PK\x03\x04" + b"\0" * 40, "", "archive.zip")
    assert exc.value.reason == "UNSUPPORTED_MEDIA_TYPE"


# ------------------------------------------------------------------ hostile input


def _reason(data: bytes, media_type: str = media.DOCX) -> str:
    with pytest.raises(InvalidArgument) as exc:
        office.parse_office(data, media_type)
    return exc.value.reason


def test_a_huge_image_is_never_inflated() -> None:
    bomb = rewrap(DOCX, extra={"word/media/huge.png": bytes(200 * 1024 * 1024)})
    assert len(bomb) < 2 * 1024 * 1024
    started = time.perf_counter()
    doc = assemble(office.parse_office(bomb, media.DOCX))
    assert time.perf_counter() - started < 1.0
    assert "Widget Manual" in doc.text


def test_a_document_part_that_inflates_too_far_is_refused() -> None:
    prefix = f'<?xml version="1.0"?><w:document {W}><w:body>'.encode()
    huge = prefix + b" " * (office.MAX_PART_BYTES + 1024) + b"</w:body></w:document>"
    bomb = rewrap(DOCX, {"word/document.xml": huge})
    with pytest.raises(InvalidArgument) as exc:
        office.parse_office(bomb, media.DOCX)
    assert exc.value.reason == "DOCUMENT_TOO_COMPLEX"
    assert exc.value.metadata["limit"] in {"zip_part_bytes", "zip_ratio"}


def test_a_high_compression_ratio_is_refused_before_inflating() -> None:
    xml = f'<?xml version="1.0"?><w:document {W}><w:body>'.encode() + b" " * 4_000_000
    bomb = rewrap(DOCX, {"word/document.xml": xml + b"</w:body></w:document>"})
    with pytest.raises(InvalidArgument) as exc:
        office.parse_office(bomb, media.DOCX)
    assert exc.value.metadata["limit"] == "zip_ratio"


def test_too_many_entries() -> None:
    many = rewrap(
        DOCX, extra={f"customXml/x{i}.xml": b"<a/>" for i in range(office.MAX_ENTRIES + 1)}
    )
    with pytest.raises(InvalidArgument) as exc:
        office.parse_office(many, media.DOCX)
    assert exc.value.metadata["limit"] == "zip_entries"


def test_doctype_and_entities_are_refused() -> None:
    laughs = (
        b'<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol">'
        b'<!ENTITY lol2 "&lol;&lol;&lol;&lol;">]>'
        b"<w:document " + W.encode() + b"><w:body><w:p><w:r><w:t>&lol2;</w:t></w:r></w:p>"
        b"</w:body></w:document>"
    )
    assert _reason(rewrap(DOCX, {"word/document.xml": laughs})) == "CORRUPT_DOCUMENT"


def test_encrypted_parts_and_broken_containers() -> None:
    data = bytearray(docx_body(para("secret")))
    # set the "encrypted" flag of every entry (local and central headers)
    for sig, offset in ((b"PK\x03\x04", 6), (b"PK\x01\x02", 8)):
        at = data.find(sig)
        while at != -1:
            data[at + offset] |= 0x1
            at = data.find(sig, at + 4)
    assert _reason(bytes(data)) == "ENCRYPTED_DOCUMENT"
    assert _reason(b"PK\x03\x04 not really a zip") == "CORRUPT_DOCUMENT"
    no_body = rewrap(ODT, {"content.xml": b"<a/>"})
    assert assemble(office.parse_office(no_body, media.ODT)).text == ""
    assert _reason(b"PK\x05\x06" + b"\0" * 18, media.ODT) == "CORRUPT_DOCUMENT"
