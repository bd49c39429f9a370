"""Generated documents for the chunking tests and benchmark: deterministic text,
Chinese text, and real multi-page PDFs written by a minimal PDF generator
(no PDF-writing package is needed: PDF 1.4 with the standard Helvetica font)."""

from __future__ import annotations

import random
import textwrap

_WORDS = [
    "the",
    "of",
    "and",
    "to",
    "in",
    "is",
    "that",
    "for",
    "it",
    "as",
    "with",
    "was",
    "on",
    "be",
    "by",
    "this",
    "are",
    "from",
    "at",
    "or",
    "an",
    "have",
    "retrieval",
    "augmented",
    "generation",
    "vector",
    "database",
    "embedding",
    "model",
    "chunk",
    "token",
    "sentence",
    "paragraph",
    "document",
    "search",
    "index",
    "query",
    "answer",
    "citation",
    "milvus",
    "grpc",
    "service",
    "latency",
    "throughput",
    "benchmark",
    "normalisation",
    "unicode",
    "heading",
    "section",
    "parser",
    "tokenizer",
    "overlap",
    "deterministic",
    "recursive",
    "boundary",
    "character",
    "offset",
    "transformer",
    "attention",
    "layer",
]
_ZH = (
    "我们今天讨论检索增强生成它结合了向量数据库和语言模型用于回答问题并给出引用来源系统需要切分文档"
)


def english_text(paragraphs: int, seed: int = 7) -> str:
    """Paragraphs of 2-12 sentences of 4-30 words, separated by blank lines."""
    rng = random.Random(seed)
    out = []
    for _ in range(paragraphs):
        sentences = []
        for _ in range(rng.randint(2, 12)):
            words = [rng.choice(_WORDS) for _ in range(rng.randint(4, 30))]
            if len(words) > 8 and rng.random() < 0.4:
                words[rng.randint(2, len(words) - 3)] += ","
            sentences.append(" ".join(words).capitalize() + rng.choice(".....?!"))
        out.append(" ".join(sentences))
    return "\n\n".join(out)


def zipf_text(megabytes: float, vocabulary: int = 50_000, seed: int = 7) -> str:
    """Pseudo-words from a Zipf distribution over a large vocabulary, as natural text has
    (english_text repeats ~100 words, which flatters anything that caches per word)."""
    rng = random.Random(seed)
    syllables = [a + b for a in "bcdfghjklmnprstvwz" for b in "aeiou"] + ["th", "st", "er"]
    words = sorted(
        {"".join(rng.choices(syllables, k=rng.randint(1, 5))) for _ in range(vocabulary * 2)}
    )[:vocabulary]
    rng.shuffle(words)
    weights = [1 / (rank + 1) for rank in range(len(words))]
    out: list[str] = []
    size = 0
    while size < megabytes * 1_000_000:
        sentence = " ".join(rng.choices(words, weights, k=rng.randint(5, 25))).capitalize() + "."
        out.append(sentence)
        size += len(sentence) + 1
        if rng.random() < 0.15:
            out.append("\n\n")
    return " ".join(out)


def chinese_text(sentences: int, seed: int = 7) -> str:
    """Chinese sentences without spaces, ending in 。！？；."""
    rng = random.Random(seed)
    return "".join(
        "".join(rng.choice(_ZH) for _ in range(rng.randint(8, 40))) + rng.choice("。。。！？；")
        for _ in range(sentences)
    )


def _pdf_escape(line: str) -> str:
    return line.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)")


def make_pdf(pages: list[str], title: str = "", line_chars: int = 90) -> bytes:
    """A valid PDF 1.4 with one page per string (ASCII text, Helvetica 10pt).

    Lines are wrapped at `line_chars`; a page holds what it is given (the
    caller keeps pages to ~60 lines for them to stay on the paper).
    """
    objects: list[bytes] = []

    def add(body: bytes) -> int:
        objects.append(body)
        return len(objects)

    catalog = add(b"")  # filled in below, once the page tree's number is known
    pages_obj = add(b"")
    font = add(b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica /Encoding /WinAnsiEncoding >>")
    kids = []
    for page_text in pages:
        lines: list[str] = []
        for para in page_text.split("\n\n"):
            lines.extend(textwrap.wrap(para, line_chars) or [""])
            lines.append("")
        ops = ["BT", "/F1 10 Tf", "12 TL", "56 800 Td"]
        for line in lines:
            ops.append(f"({_pdf_escape(line)}) Tj T*")
        ops.append("ET")
        stream = "\n".join(ops).encode("latin-1", errors="replace")
        content = add(b"<< /Length %d >>\nstream\n" % len(stream) + stream + b"\nendstream")
        kids.append(
            add(
                b"<< /Type /Page /Parent %d 0 R /MediaBox [0 0 595 842] "
                b"/Resources << /Font << /F1 %d 0 R >> >> /Contents %d 0 R >>"
                % (pages_obj, font, content)
            )
        )
    objects[catalog - 1] = b"<< /Type /Catalog /Pages %d 0 R >>" % pages_obj
    objects[pages_obj - 1] = b"<< /Type /Pages /Kids [%s] /Count %d >>" % (
        b" ".join(b"%d 0 R" % k for k in kids),
        len(kids),
    )
    info = add(
        b"<< /Title (%s) /Producer (ragmesh test generator) >>"
        % _pdf_escape(title).encode("latin-1", errors="replace")
    )
    out = bytearray(b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % number + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    for offset in offsets:
        out += b"%010d 00000 n \n" % offset
    out += b"trailer\n<< /Size %d /Root %d 0 R /Info %d 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (
        len(objects) + 1,
        catalog,
        info,
        xref,
    )
    return bytes(out)


def english_pdf(pages: int, seed: int = 7, title: str = "Generated report") -> bytes:
    """A multi-page PDF of english_text, ~3 KB of text a page."""
    rng = random.Random(seed)
    return make_pdf(
        [english_text(rng.randint(3, 5), seed=seed * 1000 + i) for i in range(pages)], title
    )
