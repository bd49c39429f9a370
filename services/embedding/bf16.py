"""bf16 forward passes of an exported ONNX graph through OpenVINO, on CPUs that compute
bf16 natively (AMX, or AVX-512 with its BF16 instructions).

Why: on such cores MiniLM's exported graph runs 1.5-1.7× as fast in bf16 as ONNX
Runtime runs it in fp32 (squad2-sample-a paragraphs, one at a time: 22.4 against 37.5 ms
of CPU on AMD EPYC with AVX512_BF16, 18.3 against 29.1 on Intel Xeon with AMX;
docs/embedding.md), with vectors at a cosine of 0.99997 or more to fp32's. That is 30×
inside the tolerance the runtimes are held to (ONNX Runtime against torch: 1e-3), so it
is the same model under the same name — unlike int8 (cosine 0.992 at worst), which is
served as a model of its own. The matrix products take bf16 inputs and accumulate in
fp32; everything else stays fp32 (OpenVINO's CPU plugin with the bf16 precision hint).

The multilingual model's graph is not run this way: its vectors in bf16 were measured
at a cosine of 0.998 on average and 0.993 at worst on Chinese passages (its sums over
hundreds of n-gram embeddings lose more to bf16's 8-bit mantissa).

Where the CPU has no native bf16, OpenVINO would emulate it, slower than fp32: `auto`
chooses ONNX Runtime there.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from services.embedding.config import Bf16Mode

RUNTIME = "openvino-bf16"
#: /proc/cpuinfo flags of bf16 arithmetic in hardware (Intel AMX; AVX-512 BF16 on
#: Intel Cooper Lake and later, AMD Zen 4 and later)
BF16_FLAGS = frozenset({"amx_bf16", "avx512_bf16"})


def cpu_flags(cpuinfo: Path = Path("/proc/cpuinfo")) -> set[str]:
    """The first processor's feature flags (x86 `flags`, Arm `Features`); empty if
    unreadable."""
    try:
        text = cpuinfo.read_text()
    except OSError:
        return set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            return set(value.split())
    return set()


def native_bf16(cpuinfo: Path = Path("/proc/cpuinfo")) -> bool:
    return bool(cpu_flags(cpuinfo) & BF16_FLAGS)


def openvino_available() -> bool:
    try:
        import openvino  # noqa: F401
    except ImportError:
        return False
    return True


def use_bf16(mode: Bf16Mode, cpuinfo: Path = Path("/proc/cpuinfo")) -> bool:
    """Whether to run the graph in bf16: `off` never; `auto` where it is faster (the CPU
    has bf16 arithmetic) and OpenVINO is installed; `on` always, or a ValueError naming
    what is missing (the service then does not start, rather than running slower than
    its operator asked)."""
    if mode == "off":
        return False
    native, installed = native_bf16(cpuinfo), openvino_available()
    if mode == "on" and not (native and installed):
        missing = "the openvino package" if native else "bf16 arithmetic in this CPU"
        raise ValueError(
            f"RAGMESH_EMBEDDING_BF16=on needs {missing} "
            f"(one of the CPU flags {', '.join(sorted(BF16_FLAGS))}, and openvino installed)"
        )
    return native and installed


class OpenVinoSession:
    """An OpenVINO compiled model with the part of ONNX Runtime's InferenceSession that
    the encoders use (`run`, `input_names`), safe to call from several threads at once:
    each calling thread gets its own infer request, and the model runs one stream per
    thread of the pass pool, one CPU thread each (services.embedding.local.PassPool:
    a pass over one paragraph is too small to split across cores)."""

    def __init__(self, path: Path, *, streams: int, precision: str = "bf16") -> None:
        import openvino as ov

        config = {
            "INFERENCE_PRECISION_HINT": precision,
            "NUM_STREAMS": streams,
            "INFERENCE_NUM_THREADS": streams,
            # OpenVINO pins its threads to cores by default: on a shared node every replica
            # (each limited by a CPU quota, not a cpuset) would be pinned to the same first
            # cores. Unpinned, the kernel places them (the same CPU a pass here, measured).
            "ENABLE_CPU_PINNING": False,
        }
        self.model = ov.Core().compile_model(str(path), "CPU", config)
        self.input_names = {name for port in self.model.inputs for name in port.get_names()}
        self._outputs = {name: port for port in self.model.outputs for name in port.get_names()}
        self._local = threading.local()

    def run(self, output_names: Sequence[str], feeds: Mapping[str, np.ndarray]) -> list[Any]:
        request = getattr(self._local, "request", None)
        if request is None:
            request = self._local.request = self.model.create_infer_request()
        results = request.infer(dict(feeds))
        # copies: the request reuses its output buffers on its next pass
        return [np.array(results[self._outputs[name]]) for name in output_names]
