"""Hostile documents for the chunking tests: the shapes of the "hostile input" issue
(pathological lines, deep or bloated HTML, PDF bombs, encodings) and real-world
oddities, each with the outcome chunking must reach (chunks, or a reason).

PDFs are written here object by object (no PDF-writing package is needed).
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass

MB = 1 << 20


@dataclass(frozen=True)
class Shape:
    name: str
    make: Callable[[], bytes]
    media_type: str
    #: "OK" when chunks are expected, else the ErrorInfo reason
    outcome: str


def pdf_from_objects(objects: list[bytes], root: int = 1) -> bytes:
    """A PDF whose objects 1..n are `objects` (bodies without `n 0 obj`), with an xref."""
    out = bytearray(b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % number + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    for offset in offsets:
        out += b"%010d 00000 n \n" % offset
    out += b"trailer\n<< /Size %d /Root %d 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (
        len(objects) + 1,
        root,
        xref,
    )
    return bytes(out)


def _stream(data: bytes, extra: bytes = b"") -> bytes:
    return b"<< /Length %d %s>>\nstream\n" % (len(data), extra) + data + b"\nendstream"


_FONT = b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>"


def empty_pages_pdf(pages: int) -> bytes:
    """`pages` pages with no content at all (~100 bytes each)."""
    objects = [b"<< /Type /Catalog /Pages 2 0 R >>", b""]
    kids = []
    for _ in range(pages):
        objects.append(b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 10 10] >>")
        kids.append(len(objects))
    objects[1] = b"<< /Type /Pages /Kids [%s] /Count %d >>" % (
        b" ".join(b"%d 0 R" % k for k in kids),
        pages,
    )
    return pdf_from_objects(objects)


def flate_bomb_pdf(inflated: int = 128 * MB, unit: bytes = b" ") -> bytes:
    """One page whose content stream inflates ~1000:1 to `inflated` bytes."""
    compressor = zlib.compressobj(6)
    block = unit * (MB // len(unit))
    data = b"".join([compressor.compress(block) for _ in range(inflated // MB)])
    data += compressor.flush()
    return pdf_from_objects(
        [
            b"<< /Type /Catalog /Pages 2 0 R >>",
            b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
            b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 10 10] "
            b"/Resources << /Font << /F1 5 0 R >> >> /Contents 4 0 R >>",
            _stream(data, b"/Filter /FlateDecode "),
            _FONT,
        ]
    )


def image_only_pdf(pages: int = 2) -> bytes:
    """A "scanned" PDF: each page draws one image and has no text."""
    image = zlib.compress(bytes(range(256)) * (64 * 64 * 3 // 256))
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"",
        _stream(
            image,
            b"/Type /XObject /Subtype /Image /Width 64 /Height 64 /ColorSpace /DeviceRGB "
            b"/BitsPerComponent 8 /Filter /FlateDecode ",
        ),
        _stream(b"q 500 0 0 700 40 60 cm /Im1 Do Q"),
    ]
    kids = []
    for _ in range(pages):
        objects.append(
            b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 595 842] "
            b"/Resources << /XObject << /Im1 3 0 R >> >> /Contents 4 0 R >>"
        )
        kids.append(len(objects))
    objects[1] = b"<< /Type /Pages /Kids [%s] /Count %d >>" % (
        b" ".join(b"%d 0 R" % k for k in kids),
        pages,
    )
    return pdf_from_objects(objects)


def _repeat(unit: bytes, size: int) -> bytes:
    return unit * (size // len(unit))


def nested_divs(depth: int) -> bytes:
    return b"<html><body>" + b"<div>" * depth + b"deep" + b"</div>" * depth + b"</body></html>"


def formatting_bomb(elements: int = 1000, paragraphs: int = 20_000) -> bytes:
    """HTML5's "reconstruct the active formatting elements": every paragraph re-opens
    all the unclosed `<b>`s, so 200 KB of markup becomes ~10^7 elements."""
    opened = b"".join(b"<b id=%d>" % i for i in range(elements))
    return b"<html><body><p>" + opened + b"</p>" + b"<p>x</p>" * paragraphs + b"</body></html>"


def big_html(size: int = 30 * MB) -> bytes:
    paragraph = b"<p>Some paragraph text here, with <b>words</b> and a <a href=x>link</a>.</p>\n"
    body = _repeat(paragraph, size)
    return b"<html><head><title>Big</title></head><body>" + body + b"</body></html>"


def script_html(size: int = 3 * MB) -> bytes:
    script = _repeat(b"var a = '<div>' + 1; if (a < b) { f(a); }\n", size)
    return b"<html><body><p>The only text.</p><script>" + script + b"</script></body></html>"


def mark_soup(size: int = MB) -> bytes:
    """Combining marks out of canonical order: CPython's NFKC sorts them in quadratic time."""
    return ("a" + "\u0315\u0316" * (size // 4)).encode()


def image_bomb_pdf(inflated: int = 512 * MB) -> bytes:
    """A page of text with an image whose Flate stream inflates to `inflated` bytes:
    text extraction never decodes images, so it reads in milliseconds."""
    compressor = zlib.compressobj(6)
    block = bytes(MB)
    pixels = (
        b"".join(compressor.compress(block) for _ in range(inflated // MB)) + compressor.flush()
    )
    content = b"BT /F1 12 Tf 72 700 Td (A scanned page with a caption) Tj ET /Im1 Do"
    return pdf_from_objects(
        [
            b"<< /Type /Catalog /Pages 2 0 R >>",
            b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
            b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Resources << /Font "
            b"<< /F1 5 0 R >> /XObject << /Im1 6 0 R >> >> /Contents 4 0 R >>",
            _stream(content),
            _FONT,
            _stream(
                pixels,
                b"/Type /XObject /Subtype /Image /Width 16384 /Height %d /ColorSpace "
                b"/DeviceRGB /BitsPerComponent 8 /Filter /FlateDecode " % (inflated // 49152),
            ),
        ]
    )


def xobject_laughs_pdf(levels: int = 24) -> bytes:
    """One page drawing a form XObject that draws the next one twice, `levels` deep:
    2^23 draws of one word ("billion laughs" in PDF). PDFium has no limit on it: under
    the worker's memory cap it aborts (SIGABRT)."""
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] "
        b"/Resources << /Font << /F1 5 0 R >> /XObject << /X0 6 0 R >> >> /Contents 4 0 R >>",
        _stream(b"/X0 Do"),
        _FONT,
    ]
    for k in range(levels):
        last = k == levels - 1
        body = b"BT /F1 12 Tf 72 700 Td (laugh) Tj ET" if last else b"/X Do /X Do"
        resources = b"/Font << /F1 5 0 R >>" if last else b"/XObject << /X %d 0 R >>" % (7 + k)
        objects.append(
            b"<< /Type /XObject /Subtype /Form /BBox [0 0 612 792] /Resources << "
            + resources
            + b" >> /Length %d >>\nstream\n" % len(body)
            + body
            + b"\nendstream"
        )
    return pdf_from_objects(objects)


_DOCX_TYPES = (
    b'<?xml version="1.0"?><Types xmlns="http://schemas.openxmlformats.org/package/2006/'
    b'content-types"><Override PartName="/word/document.xml" ContentType="application/'
    b'vnd.openxmlformats-officedocument.wordprocessingml.document.main+xml"/></Types>'
)
_DOCX_BODY = (
    b'<?xml version="1.0"?><w:document xmlns:w="http://schemas.openxmlformats.org/'
    b'wordprocessingml/2006/main"><w:body><w:p><w:r><w:t>Hello from Word.</w:t></w:r></w:p>'
    b"</w:body></w:document>"
)


def docx(
    document: bytes = _DOCX_BODY, zeros: dict[str, int] | None = None, entries: int = 0
) -> bytes:
    """A minimal Word document; `zeros` adds parts of that many zero bytes (streamed,
    so a 1 GiB part costs ~1 MB), `entries` adds that many tiny parts."""
    import io
    import zipfile

    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("[Content_Types].xml", _DOCX_TYPES)
        z.writestr("word/document.xml", document)
        for name, size in (zeros or {}).items():
            info = zipfile.ZipInfo(name)
            info.compress_type = zipfile.ZIP_DEFLATED
            with z.open(info, "w", force_zip64=True) as part:
                block = bytes(MB)
                for _ in range(size // MB):
                    part.write(block)
        for i in range(entries):
            z.writestr(f"customXml/item{i}.xml", b"<a/>")
    return out.getvalue()


def docx_text_bomb(size: int = 256 * MB) -> bytes:
    """word/document.xml itself inflates to `size` bytes of spaces."""
    import io
    import zipfile

    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("[Content_Types].xml", _DOCX_TYPES)
        info = zipfile.ZipInfo("word/document.xml")
        info.compress_type = zipfile.ZIP_DEFLATED
        with z.open(info, "w", force_zip64=True) as part:
            part.write(_DOCX_BODY[: _DOCX_BODY.index(b"<w:body>") + 8])
            block = b" " * MB
            for _ in range(size // MB):
                part.write(block)
            part.write(b"</w:body></w:document>")
    return out.getvalue()


def corpus() -> Iterator[Shape]:
    """Every hostile shape with the outcome chunking must reach."""
    yield Shape("no newlines (1 MB of words)", lambda: _repeat(b"word ", MB), "text/plain", "OK")
    yield Shape("only spaces (1 MB)", lambda: b" " * MB, "text/plain", "NO_TEXT_CONTENT")
    yield Shape("1 MB line without spaces", lambda: b"x" * MB, "text/plain", "OK")
    yield Shape(
        "Markdown heading: # a, 1 MB of spaces, b",
        lambda: b"# a" + b" " * MB + b"b",
        "text/markdown",
        "OK",
    )
    yield Shape(
        "Markdown: 1 MB of '- ' (thematic-break backtracking)",
        lambda: _repeat(b"- ", MB) + b"x",
        "text/markdown",
        "OK",
    )
    yield Shape("1 MB of unordered combining marks", mark_soup, "text/plain", "OK")
    yield Shape("zero-byte file", lambda: b"", "text/plain", "EMPTY_DOCUMENT")
    yield Shape(
        "invalid UTF-8 throughout",
        lambda: _repeat(b"caf\xe9 \xff\xfe au lait ", MB),
        "text/plain",
        "OK",
    )
    yield Shape(
        "NUL bytes (binary by inspection)",
        lambda: _repeat(b"abc\x00def ", MB),
        "text/plain",
        "MEDIA_TYPE_MISMATCH",
    )
    yield Shape(
        "NUL bytes after the first 8 KiB",
        lambda: _repeat(b"text ", 16 * 1024) + _repeat(b"abc\x00def ", MB),
        "text/plain",
        "OK",
    )
    yield Shape(
        "charset=punycode (a quadratic decoder)",
        lambda: b"abc-" * 1000,
        "text/plain; charset=punycode",
        "UNSUPPORTED_CHARSET",
    )
    yield Shape(
        "100,000 nested <div>", lambda: nested_divs(100_000), "text/html", "DOCUMENT_TOO_COMPLEX"
    )
    yield Shape("HTML that is 99 % <script>", script_html, "text/html", "OK")
    yield Shape("30 MB HTML page", big_html, "text/html", "OK")
    yield Shape(
        "HTML formatting-element bomb (200 KB → 10^7 elements)",
        formatting_bomb,
        "text/html",
        "DOCUMENT_TOO_COMPLEX",
    )
    yield Shape(
        "HTML with a 100 KB <title>",
        lambda: (
            b"<html><head><title>" + b"T\xc3\xa9st " * 20_000 + b"</title></head>"
            b"<body><p>x</p></body></html>"
        ),
        "text/html",
        "OK",
    )
    yield Shape(
        "PDF with a Flate bomb stream (128 MiB)",
        flate_bomb_pdf,
        "application/pdf",
        "DOCUMENT_TOO_COMPLEX",
    )
    yield Shape(
        "PDF with 100,000 empty pages",
        lambda: empty_pages_pdf(100_000),
        "application/pdf",
        "DOCUMENT_TOO_COMPLEX",
    )
    yield Shape("PDF with only images", image_only_pdf, "application/pdf", "NO_TEXT_CONTENT")
    yield Shape(
        "PDF whose form XObjects draw 2^23 times",
        xobject_laughs_pdf,
        "application/pdf",
        "DOCUMENT_TOO_COMPLEX",
    )
    word = "application/vnd.openxmlformats-officedocument.wordprocessingml.document"
    yield Shape(
        "Word document with a 512 MiB image",
        lambda: docx(zeros={"word/media/a.png": 1 << 29}),
        word,
        "OK",
    )
    yield Shape(
        "Word document whose text inflates to 256 MiB", docx_text_bomb, word, "DOCUMENT_TOO_COMPLEX"
    )
    yield Shape(
        "Word document with 20,000 parts",
        lambda: docx(entries=20_000),
        word,
        "DOCUMENT_TOO_COMPLEX",
    )
