"""Replaying fusion methods on the same DENSE and SPARSE lists (issue 14): how the
figures of docs/retrieval.md ("Fusion") were obtained while choosing the fusion.

1. `collect DATASETS MODELS OUT`: a stack of the services (bench_models._stack, the
   gateway's top_k limit at 100); per data set and model, one `ragmesh eval --keep`
   ingestion, then every question searched DENSE and SPARSE for the top 100 chunks with
   their scores, written to OUT/<data set>-<model>.json.
2. `replay OUT NAME...`: each fusion method on those lists (at the depth the retrieval
   service uses: max(top_k, 20)), scored like `ragmesh eval` (10 chunks on QA sets, 100
   on BEIR sets, mapped to distinct documents), with HYBRID minus the better single mode.

Not part of `make bench`: it is a study tool, e.g.
`python -m benchmarks.fusion_replay collect cranfield minilm,multilingual /tmp/lists`.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from ragmesh.eval_metrics import Scoreboard, ranked_documents
from services.retrieval import fusion
from services.retrieval.schema import ScoredId

DATA = Path("/work/shared/data")
Fuse = Callable[[list[ScoredId], list[ScoredId], int], list[str]]


def collect(datasets: Sequence[str], models: Sequence[str], out: Path) -> None:
    from benchmarks.bench_models import _stack
    from ragmesh.client import RagmeshClient
    from ragmesh.eval_data import document_id_of, load_dataset

    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="ragmesh-fusion-replay-") as tmp:
        procs, gateway = _stack(Path(tmp), {"RAGMESH_GATEWAY_MAX_TOP_K": "100"})
        try:
            for dataset in datasets:
                for model in models:
                    kb = f"replay-{dataset}-{model}".lower()[:60]
                    with (out / f"{dataset}-{model}.log").open("w") as log:
                        subprocess.run(
                            [sys.executable, "-m", "ragmesh.cli", "eval", str(DATA / dataset),
                             "--retrieval-only", "--mode", "dense", "--model", model, "--keep",
                             "--kb", kb, "--addr", gateway, "--api-key", "bench-key-0001"],
                            check=False, stdout=log, stderr=subprocess.STDOUT,
                        )  # fmt: skip
                    data = load_dataset(DATA / dataset)
                    back = {document_id_of(p.doc_id): p.doc_id for p in data.passages}
                    rows: list[dict[str, Any]] = []
                    with RagmeshClient(gateway, "bench-key-0001", timeout=120) as rag:
                        for q in data.questions:
                            row: dict[str, Any] = {"id": q.question_id, "grades": q.grades}
                            for mode in ("dense", "sparse"):
                                hits = rag.search(kb, q.text, top_k=100, mode=mode).hits
                                row[mode] = [
                                    [h.chunk_id, back.get(h.document_id, h.document_id), h.score]
                                    for h in hits
                                ]
                            rows.append(row)
                        rag.delete_knowledge_base(kb)
                    (out / f"{dataset}-{model}.json").write_text(json.dumps(rows))
                    print(dataset, model, flush=True)
        finally:
            for proc in reversed(procs):
                proc.stop()  # type: ignore[attr-defined]


def _bounded(dense_lower: float | None, sparse_lower: float | None) -> Fuse:
    def fuse(dense: list[ScoredId], sparse: list[ScoredId], depth: int) -> list[str]:
        lists = [
            fusion.RankedList(dense, dense_lower, depth),
            fusion.RankedList(sparse, sparse_lower, depth),
        ]
        return [f.id for f in fusion.weighted(lists)]

    return fuse


def _zscore(dense: list[ScoredId], sparse: list[ScoredId], depth: int) -> list[str]:
    """Sum of z-scores; a candidate missing from a full list gets its lowest z-score."""

    def z(results: list[ScoredId]) -> dict[str, float]:
        xs = [r.score for r in results]
        mean, sd = statistics.fmean(xs), statistics.pstdev(xs) or 1.0
        return {r.id: (r.score - mean) / sd for r in results}

    lists = [lst for lst in (dense, sparse) if lst]
    zs = [z(lst) for lst in lists]
    floor = [
        min(zz.values()) if len(lst) >= depth else 0.0 for lst, zz in zip(lists, zs, strict=True)
    ]
    ids = dict.fromkeys(r.id for lst in lists for r in lst)
    score = {i: sum(zz.get(i, f) for zz, f in zip(zs, floor, strict=True)) for i in ids}
    return sorted(ids, key=lambda i: -score[i])


METHODS: dict[str, Fuse] = {
    "RRF (k 60)": lambda d, s, _n: [f.id for f in fusion.rrf([d, s], k=60)],
    "min-max": _bounded(None, None),
    "z-score": _zscore,
    "bounds, cosine -1": _bounded(-1.0, 0.0),
    "bounds, cosine 0 (now)": _bounded(0.0, 0.0),
}
METRICS = ("recall@1", "recall@5", "mrr@10", "ndcg@10", "recall@100")


def replay(path: Path) -> dict[str, dict[str, Any]]:
    rows = json.loads(path.read_text())
    graded = "cranfield" in path.name
    top_k = 100 if graded else 10
    depth = max(top_k, 20)  # the retrieval service's hybrid depth (hybrid_candidates 20)
    out = {}
    for label in ("DENSE", "SPARSE", *METHODS):
        board = Scoreboard(graded=graded)
        for row in rows:
            doc_of = {c: d for c, d, _ in row["dense"] + row["sparse"]}
            if label in ("DENSE", "SPARSE"):
                ranked = [c for c, _, _ in row[label.lower()][:top_k]]
            else:
                dense = [ScoredId(c, s) for c, _, s in row["dense"][:depth]]
                sparse = [ScoredId(c, s) for c, _, s in row["sparse"][:depth]]
                ranked = METHODS[label](dense, sparse, depth)[:top_k]
            board.add_retrieval(
                row["id"], ranked_documents(doc_of[c] for c in ranked), row["grades"]
            )
        out[label] = board.summary()
    return out


def main(argv: list[str]) -> None:
    if argv[:1] == ["collect"]:
        collect(argv[1].split(","), argv[2].split(","), Path(argv[3]))
        return
    folder = Path(argv[1])
    for name in argv[2:]:
        res = replay(folder / f"{name}.json")
        metrics = [m for m in METRICS if res["DENSE"].get(m) is not None]
        best = {m: max(res["DENSE"][m], res["SPARSE"][m]) for m in metrics}
        print(f"## {name}\n\n| fusion | " + " | ".join(metrics) + " | HYBRID − better single |")
        print("|---|" + "---:|" * (len(metrics) + 1))
        for label, r in res.items():
            diff = (
                ""
                if label in ("DENSE", "SPARSE")
                else " / ".join(f"{r[m] - best[m]:+.3f}" for m in metrics)
            )
            print(f"| {label} | " + " | ".join(f"{r[m]:.3f}" for m in metrics) + f" | {diff} |")
        print()


if __name__ == "__main__":
    main(sys.argv[1:])
