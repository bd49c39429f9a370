"""Write examples/milvus-vector-search.pdf: a small text PDF made without any library.

The demo knowledge base needs a PDF that we may redistribute; this writes one
from the text below (PDF 1.4, Helvetica, one page per ~45 lines) with a correct
cross-reference table, so that any PDF reader and pypdf extract its text.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

TITLE = "Milvus and vector search"
PARAGRAPHS = [
    "Milvus and vector search",
    "Milvus is an open-source vector database. It stores embedding vectors next to scalar "
    "fields such as a document id or a language code, and finds the vectors nearest to a "
    "query vector. ragmesh keeps one Milvus collection per knowledge base.",
    "Collections and fields",
    "A collection has a schema: a primary key, a dense vector field with a fixed dimension "
    "(384 for all-MiniLM-L6-v2), a text field, and scalar fields that filters can use "
    "cheaply. With Milvus 2.5 and Milvus Lite 3, a BM25 function fills a sparse vector "
    "field from the text, which enables full-text and hybrid search.",
    "Index types",
    "FLAT compares the query with every vector: exact, and fine for small collections. "
    "IVF_FLAT groups vectors into clusters and searches only the nearest clusters, set by "
    "nprobe. HNSW builds a layered graph of neighbours; it is fast and has high recall, and "
    "its search effort is set by ef. AUTOINDEX lets the server choose.",
    "Metrics",
    "COSINE compares directions and suits normalised sentence embeddings. IP is the inner "
    "product. L2 is the Euclidean distance, where smaller means closer; ragmesh negates it "
    "so that a higher score is always better.",
    "Consistency",
    "Milvus offers Strong, Bounded, Session and Eventually consistency. Session consistency "
    "lets a client read its own writes without waiting for every node, which is what "
    "ragmesh uses by default.",
    "Milvus Lite",
    "Milvus Lite runs inside a Python process and keeps its data in a local file ending in "
    ".db. Only one process may open that file at a time, which is why in ragmesh only the "
    "retrieval service talks to Milvus.",
]


def _escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)")


def _lines() -> list[tuple[str, bool]]:
    out: list[tuple[str, bool]] = []
    for i, para in enumerate(PARAGRAPHS):
        heading = len(para) < 40
        if heading and i:
            out.append(("", False))
        wrapped = [para] if heading else textwrap.wrap(para, 88)
        out += [(line, heading) for line in wrapped]
    return out


def build_pdf() -> bytes:
    lines = _lines()
    pages = [lines[i : i + 45] for i in range(0, len(lines), 45)]
    objects: list[bytes] = []
    # 1 catalog, 2 pages, 3 font, 4 bold font, 5 info, then page/content pairs.
    n_pages = len(pages)
    kids = " ".join(f"{6 + 2 * i} 0 R" for i in range(n_pages))
    objects.append(b"<< /Type /Catalog /Pages 2 0 R >>")
    objects.append(f"<< /Type /Pages /Kids [{kids}] /Count {n_pages} >>".encode())
    objects.append(b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>")
    objects.append(b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica-Bold >>")
    objects.append(f"<< /Title ({_escape(TITLE)}) /Producer (ragmesh) >>".encode())
    for i, page in enumerate(pages):
        ops = ["BT", "14 TL", "50 800 Td"]
        for text, heading in page:
            ops.append(f"/F{2 if heading else 1} {13 if heading else 10} Tf")
            ops.append(f"({_escape(text)}) Tj T*")
        ops.append("ET")
        stream = "\n".join(ops).encode("latin-1")
        page_dict = (
            "<< /Type /Page /Parent 2 0 R /MediaBox [0 0 595 842] "
            f"/Resources << /Font << /F1 3 0 R /F2 4 0 R >> >> /Contents {7 + 2 * i} 0 R >>"
        )
        objects.append(page_dict.encode())
        objects.append(b"<< /Length %d >>\nstream\n" % len(stream) + stream + b"\nendstream")
    out = bytearray(b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % number + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    for offset in offsets:
        out += b"%010d 00000 n \n" % offset
    out += b"trailer\n<< /Size %d /Root 1 0 R /Info 5 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (
        len(objects) + 1,
        xref,
    )
    return bytes(out)


def main() -> None:
    path = Path(__file__).resolve().parents[1] / "examples" / "milvus-vector-search.pdf"
    path.write_bytes(build_pdf())
    print(f"wrote {path} ({path.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
