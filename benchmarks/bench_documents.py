"""Real-world documents (eval/realworld): chunk quality and retrieval, before and after.

Three configurations over the same files and questions, in process (chunker →
all-MiniLM-L6-v2 on ONNX Runtime → the retrieval logic on Milvus Lite):

- **before**: the parsers ragmesh had (benchmarks/doc_baseline.py: pypdf text
  page by page, the HTML walk over the whole body) and BM25 over the text;
- **cleanup**: today's parsers (PDFium with the cleanup rules and page map,
  HTML main content) and BM25 over the text;
- **after**: today's parsers and BM25 over `bm25_text` (text + split code
  identifiers; queries expanded alike) — what a new knowledge base gets.

Chunk quality: chunks whose lines are mostly dot leaders, chunks holding a
running header or footer line of the PDF (the lines the cleanup finds, matched
whole in either text), chunks holding a bare page-number line. Retrieval: the
metrics of `ragmesh eval` on the documents layout (ragmesh/eval_metrics.py):
passage and page recall@1/5 over the top 10 chunks, the share of retrieved
chunks holding the passage whose pages include the gold page, and the rank of
the issue's question "What does asn1_decode_simple_der do?".

`python -m benchmarks.run documents`.
"""

from __future__ import annotations

import asyncio
import re
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from benchmarks import doc_baseline
from ragmesh.eval_data import Dataset, load_dataset
from ragmesh.eval_metrics import ChunkHit, Scoreboard
from services.chunking import pdf_clean, pdf_extract
from services.chunking.blocks import Parsed
from services.chunking.chunker import Chunker, load_counter
from services.chunking.config import ChunkingSettings
from services.chunking.html_parse import parse_html
from services.chunking.pages import PageMap
from services.chunking.parsing import assemble, parse_pdf
from services.chunking.splitter import Splitter
from services.common.models import minilm_model_dir
from services.embedding.config import EmbeddingSettings
from services.embedding.local import OnnxEncoder
from services.retrieval.config import RetrievalSettings
from services.retrieval.retriever import Retriever
from services.retrieval.schema import (
    ChunkRecord,
    CollectionSpec,
    SearchMode,
    SearchQuery,
    UpsertMode,
)

DATA = Path(__file__).resolve().parents[1] / "eval" / "realworld"
FUNCTION_QUESTION = "tasn1-1"
TOP_K = 10
MODES = [("HYBRID", SearchMode.HYBRID), ("SPARSE", SearchMode.SPARSE), ("DENSE", SearchMode.DENSE)]
_LEADERS = re.compile(r"(?:\.\s?){5,}")
_BARE_NUMBER = re.compile(r"\s*(?:\d{1,4}|[ivxlcdm]{1,6})\s*")


@dataclass
class Chunk:
    document: str
    index: int
    text: str
    start: int
    end: int
    page_start: int = 0
    page_end: int = 0
    page_label: str = ""


@dataclass
class Corpus:
    chunks: list[Chunk] = field(default_factory=list)
    parse_s: dict[str, float] = field(default_factory=dict)


def _parsers(before: bool) -> dict[str, Callable[[bytes], Parsed]]:
    if before:
        return {
            ".pdf": doc_baseline.parse_pdf,
            ".html": lambda b: doc_baseline.parse_html(b.decode("utf-8", "replace")),
        }
    return {".pdf": parse_pdf, ".html": lambda b: parse_html(b.decode("utf-8", "replace"))}


def chunk_corpus(data: Dataset, chunker: Chunker, before: bool) -> Corpus:
    corpus = Corpus()
    parsers = _parsers(before)
    counter = chunker.counter
    max_tokens, overlap = chunker.limits(0, -1)
    splitter = Splitter(counter, max_tokens, overlap, chunker.settings.max_chunk_chars)
    for f in data.files:
        raw = f.path.read_bytes()
        t0 = time.perf_counter()
        doc = assemble(parsers[f.path.suffix](raw), f.doc_id)
        corpus.parse_s[f.doc_id] = time.perf_counter() - t0
        pages = PageMap(doc.pages)
        for i, span in enumerate(splitter.split(doc, counter.offsets(doc.text))):
            where = pages.range(span.start, span.end)
            corpus.chunks.append(
                Chunk(
                    f.doc_id,
                    i,
                    doc.text[span.start : span.end],
                    span.start,
                    span.end,
                    where.start,
                    where.end,
                    where.label,
                )
            )
    return corpus


def running_lines(data: Dataset) -> set[str]:
    """The running header and footer lines the cleanup finds in the set's PDFs."""
    found: set[str] = set()
    for f in data.files:
        if f.path.suffix == ".pdf":
            pages, _ = pdf_extract.extract(f.path.read_bytes(), 10_000)
            for why, items in pdf_clean.clean(pages).removed.items():
                if why.startswith("running"):
                    found.update(" ".join(text.split()) for _, text in items)
    return found


def chunk_quality(corpus: Corpus, headers: set[str]) -> dict[str, int]:
    leaders = with_header = with_number = 0
    for chunk in corpus.chunks:
        lines = [" ".join(ln.split()) for ln in chunk.text.split("\n") if ln.strip()]
        if lines and sum(1 for ln in lines if _LEADERS.search(ln)) * 2 >= len(lines):
            leaders += 1
        if any(ln in headers for ln in lines):
            with_header += 1
        if chunk.document.endswith(".pdf"):
            with_number += any(_BARE_NUMBER.fullmatch(ln) for ln in lines)
    return {
        "chunks": len(corpus.chunks),
        "dot_leader_chunks": leaders,
        "header_chunks": with_header,
        "page_number_chunks": with_number,
    }


async def retrieval_scores(
    corpus: Corpus,
    vectors: list[list[float]],
    queries: list[list[float]],
    data: Dataset,
    identifiers: bool,
    db: Path,
) -> dict[str, dict[str, float | int | None]]:
    retriever = Retriever(RetrievalSettings(milvus_uri=str(db), bm25_identifiers=identifiers))
    try:
        await retriever.connect()
        await retriever.create_collection(CollectionSpec("kb_documents", len(vectors[0])), None)
        by_doc: dict[str, list[ChunkRecord]] = {}
        for chunk, vector in zip(corpus.chunks, vectors, strict=True):
            by_doc.setdefault(chunk.document, []).append(
                ChunkRecord(
                    document_id=chunk.document,
                    chunk_index=chunk.index,
                    text=chunk.text,
                    start_offset=chunk.start,
                    end_offset=chunk.end,
                    page_start=chunk.page_start,
                    page_end=chunk.page_end,
                    page_label=chunk.page_label,
                    vector=vector,
                )
            )
        for doc, records in by_doc.items():
            await retriever.upsert_chunks(
                collection="kb_documents",
                document_id=doc,
                version="1",
                chunks=records,
                mode=UpsertMode.REPLACE,
                deadline=None,
            )
        out: dict[str, dict[str, float | int | None]] = {}
        for label, mode in MODES:
            board = Scoreboard()
            function_rank: int | None = None
            for question, vector in zip(data.questions, queries, strict=True):
                query = SearchQuery(
                    "kb_documents", vector=vector, text=question.text, mode=mode, top_k=TOP_K
                )
                hits, _ = await retriever.search(query, None)
                chunks = [
                    ChunkHit(
                        h.chunk.document_id, h.chunk.text, h.chunk.page_start, h.chunk.page_end
                    )
                    for h in hits
                ]
                ranked = list(dict.fromkeys(h.document for h in chunks))
                score = board.add_retrieval(question.question_id, ranked, question.grades)
                gold = next(iter(question.grades))
                board.add_chunks(score, chunks, gold, question.passage, question.page, TOP_K)
                if question.question_id == FUNCTION_QUESTION:
                    function_rank = score.passage_rank
            summary = board.summary()
            summary["function_rank"] = function_rank
            out[label] = summary
        return out
    finally:
        retriever.close()


def _fmt(value: float | int | None) -> str:
    if value is None:
        return "–"
    return f"{value:.3f}" if isinstance(value, float) else str(value)


def _rank(value: float | int | None) -> str:
    return f"#{value}" if value else "not in top 10"


def run() -> str:
    data = load_dataset(DATA)
    settings = ChunkingSettings()
    chunker = Chunker(settings, load_counter(settings))
    encoder = OnnxEncoder(minilm_model_dir(), EmbeddingSettings().cache_dir)
    headers = running_lines(data)
    queries = [list(map(float, v)) for v in encoder.encode([q.text for q in data.questions])]
    configs = [("before", True, False), ("cleanup", False, False), ("after", False, True)]
    quality: dict[str, dict[str, int]] = {}
    scores: dict[str, dict[str, dict[str, float | int | None]]] = {}
    parse_s: dict[str, dict[str, float]] = {}
    corpora: dict[bool, tuple[Corpus, list[list[float]]]] = {}
    with tempfile.TemporaryDirectory(prefix="ragmesh-bench-docs-") as tmp:
        for name, before, identifiers in configs:
            if before not in corpora:
                corpus = chunk_corpus(data, chunker, before)
                vectors = [
                    list(map(float, v)) for v in encoder.encode([c.text for c in corpus.chunks])
                ]
                corpora[before] = (corpus, vectors)
            corpus, vectors = corpora[before]
            quality[name] = chunk_quality(corpus, headers)
            parse_s[name] = corpus.parse_s
            scores[name] = asyncio.run(
                retrieval_scores(
                    corpus, vectors, queries, data, identifiers, Path(tmp) / f"{name}.db"
                )
            )
    pdfs = [f.doc_id for f in data.files if f.doc_id.endswith(".pdf")]
    lines = [
        "## Real-world documents (eval/realworld)",
        "",
        f"{len(data.files)} documents ({len(pdfs)} PDF manuals: libtasn1, Nettle, bzip2; "
        f"{len(data.files) - len(pdfs)} SQLite HTML pages), {len(data.questions)} questions "
        "with the passage and page that answer them (eval/realworld/README.md). In process: "
        "chunker (256 tokens) → all-MiniLM-L6-v2 (ONNX Runtime) → the retrieval logic on "
        "Milvus Lite, top 10 chunks. **before**: the previous parsers (pypdf text page by page; "
        "the HTML body walk) and BM25 over the text; **cleanup**: PDFium with the cleanup rules "
        "and page map, HTML main content, BM25 over the text; **after**: cleanup and BM25 over "
        "the text plus split code identifiers (a new knowledge base's default).",
        "",
        "### Chunks",
        "",
        "| | chunks | mostly dot leaders | with a running header/footer line | "
        "with a bare page-number line | PDF parse time (3 manuals) |",
        "|---|---|---|---|---|---|",
    ]
    for name in ("before", "after"):
        q = quality[name]
        lines.append(
            f"| {name} | {q['chunks']} | {q['dot_leader_chunks']} | {q['header_chunks']} | "
            f"{q['page_number_chunks']} | {sum(parse_s[name][d] for d in pdfs):.2f} s |"
        )
    lines += [
        "",
        f"Running header and footer lines: the {len(headers)} distinct lines the cleanup "
        "removes from the three PDFs, looked for as whole lines in each chunk.",
        "",
        "### Retrieval",
        "",
        "| config | mode | passage recall@1 | passage recall@5 | page recall@1 | page recall@5 | "
        "passage chunks citing the right page | document recall@1 | "
        "rank of asn1_decode_simple_der's entry |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, _, _ in configs:
        for label, _ in MODES:
            s = scores[name][label]
            lines.append(
                f"| {name} | {label} | {_fmt(s.get('passage_recall@1'))} | "
                f"{_fmt(s.get('passage_recall@5'))} | {_fmt(s.get('page_recall@1'))} | "
                f"{_fmt(s.get('page_recall@5'))} | {_fmt(s.get('passage_pages_correct'))} "
                f"({_fmt(s.get('passage_chunks_checked'))}) | {_fmt(s.get('recall@1'))} | "
                f"{_rank(s.get('function_rank'))} |"
            )
    b, a = scores["before"]["HYBRID"], scores["after"]["HYBRID"]
    lines += [
        "",
        f"HYBRID, after vs before: passage recall@1 {_fmt(a.get('passage_recall@1'))} vs "
        f"{_fmt(b.get('passage_recall@1'))}, recall@5 {_fmt(a.get('passage_recall@5'))} vs "
        f"{_fmt(b.get('passage_recall@5'))}; page recall@5 {_fmt(a.get('page_recall@5'))} "
        "(before: no pages); the function question's entry "
        f"{_rank(a.get('function_rank'))} (before: {_rank(b.get('function_rank'))}).",
    ]
    return "\n".join(lines)
