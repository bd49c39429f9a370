"""When the SDK calls again by itself: only when the server said so.

A ragmesh server attaches google.rpc.RetryInfo to a RESOURCE_EXHAUSTED or
UNAVAILABLE status when the same call may succeed later (a queue was full, a
dependency was down) and nothing was done. The clients then wait — the
server's delay, growing with each attempt, with jitter — and call again, up to
`max_attempts` calls in all. Errors without RetryInfo are raised at once, and
so is AUTH_RATE_LIMITED: a lockout after failed authentications ends only when
its window passes, and calling again with the same (wrong) key cannot help.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import grpc

from ragmesh.rpc import error_info_of, retry_delay_of

RETRYABLE_CODES = frozenset({grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.UNAVAILABLE})
#: reasons that carry RetryInfo for the caller's information, never retried by the SDK
NOT_RETRIED_REASONS = frozenset({"AUTH_RATE_LIMITED"})


@dataclass(frozen=True)
class RetryPolicy:
    #: calls in all, the first included (1: never retry)
    max_attempts: int = 5
    #: longest single wait, whatever the server asks
    max_delay_s: float = 30.0
    #: each further attempt waits this much longer than the server's delay
    backoff: float = 2.0

    def delay(self, err: grpc.RpcError, attempt: int) -> float | None:
        """Seconds to wait before attempt `attempt + 1`, or None: raise now."""
        code = err.code() if callable(getattr(err, "code", None)) else None
        if code not in RETRYABLE_CODES or attempt >= self.max_attempts:
            return None
        server_delay = retry_delay_of(err)
        if server_delay is None:
            return None
        info = error_info_of(err)
        if info is not None and info.reason in NOT_RETRIED_REASONS:
            return None
        wait = max(server_delay, 0.05) * self.backoff ** (attempt - 1)
        return min(self.max_delay_s, wait) * random.uniform(0.8, 1.2)


NO_RETRY = RetryPolicy(max_attempts=1)
