"""A caller's deadline carried into the logic modules (which never see a gRPC
context): every downstream call gets what is left of it."""

from __future__ import annotations

import time
from dataclasses import dataclass


@dataclass(frozen=True)
class Deadline:
    #: time.monotonic() at which the caller stops waiting
    at: float

    @classmethod
    def after(cls, seconds: float) -> Deadline:
        return cls(time.monotonic() + seconds)

    def remaining(self, cap: float | None = None) -> float:
        """Seconds left (at least 1 ms, so a call still fails with its own
        DEADLINE_EXCEEDED), no more than `cap` when given."""
        left = max(0.001, self.at - time.monotonic())
        return min(left, cap) if cap is not None else left

    @property
    def expired(self) -> bool:
        return time.monotonic() >= self.at
