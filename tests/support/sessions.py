"""Counting the forward passes of an in-process encoder (OnnxEncoder, UsemOnnxEncoder)."""

from __future__ import annotations

from typing import Any


def record_runs(encoder: Any) -> list[tuple[Any, ...]]:
    """Wraps the encoder's ONNX Runtime session; the list gets each `run`'s arguments."""
    session, runs = encoder.session, []

    class Recorded:
        def run(self, *args: Any) -> Any:
            runs.append(args)
            return session.run(*args)

    encoder.session = Recorded()
    return runs
