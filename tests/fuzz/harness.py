"""Sending generated requests to a real server and judging what comes back.

Every RPC of a service is called through a generic channel method built from its
descriptor (unary or streaming, either way), with protobuf serializers for
generated messages and identity serializers for raw bytes. The outcome of each
call is counted by (method, status, reason); a call breaks the contract when it
ends UNKNOWN or INTERNAL, or is refused without an ErrorInfo reason.
"""

from __future__ import annotations

import itertools
import json
import threading
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
from google.protobuf import descriptor as _d

from services.common.status import error_info_of

#: server-streaming responses read before the call is let go (a watched job may
#: run for a while; the first events are what a fuzzed request can get wrong)
MAX_STREAM_EVENTS = 50
BAD_CODES = ("UNKNOWN", "INTERNAL")
TOO_LARGE = "Received message larger than max"
TRANSPORT_LIMIT = "(gRPC: message larger than the server's limit)"


@dataclass
class Violation:
    method: str
    kind: str
    code: str
    details: str
    request: str


@dataclass
class Tally:
    """Outcomes of every call in a run, and the calls that broke the contract."""

    counts: Counter[tuple[str, str, str, str]] = field(default_factory=Counter)
    violations: list[Violation] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def record(self, method: str, kind: str, code: str, reason: str) -> None:
        with self.lock:
            self.counts[(method, kind, code, reason)] += 1

    def total(self) -> int:
        return sum(self.counts.values())

    def by_status(self) -> Counter[tuple[str, str]]:
        out: Counter[tuple[str, str]] = Counter()
        for (_, _, code, reason), n in self.counts.items():
            out[(code, reason)] += n
        return out

    def methods(self) -> Counter[str]:
        out: Counter[str] = Counter()
        for (method, _, _, _), n in self.counts.items():
            out[method] += n
        return out

    def dump(self, path: Path) -> None:
        """Merged into what earlier modules of the same run wrote there."""
        old = json.loads(path.read_text()) if path.exists() else {"counts": [], "violations": []}
        merged: Counter[tuple[str, ...]] = Counter({tuple(k): n for *k, n in old["counts"]})
        merged.update(self.counts)
        path.write_text(
            json.dumps(
                {
                    "counts": [[*k, n] for k, n in sorted(merged.items())],
                    "violations": old["violations"] + [v.__dict__ for v in self.violations],
                },
                indent=1,
            )
        )


def describe(request: Any, limit: int = 600) -> str:
    text = repr(request)
    return text if len(text) <= limit else text[:limit] + f"... ({len(text)} chars)"


class Caller:
    """Calls every method of one service on `channel`; `metadata` goes with each call."""

    def __init__(
        self,
        channel: grpc.Channel,
        service: _d.ServiceDescriptor,
        tally: Tally,
        metadata: Iterable[tuple[str, str]] = (),
        timeout: float = 60.0,
    ) -> None:
        self.channel = channel
        self.service = service
        self.tally = tally
        self.metadata = tuple(metadata)
        self.timeout = timeout

    def _callable(self, method: _d.MethodDescriptor, raw: bool) -> Any:
        path = f"/{self.service.full_name}/{method.name}"
        kwargs: dict[str, Any] = {}
        if not raw:
            kwargs["request_serializer"] = lambda m: m.SerializeToString()
        # Responses stay bytes: decoding them is the client library's concern.
        if method.client_streaming and method.server_streaming:
            return self.channel.stream_stream(path, **kwargs)
        if method.client_streaming:
            return self.channel.stream_unary(path, **kwargs)
        if method.server_streaming:
            return self.channel.unary_stream(path, **kwargs)
        return self.channel.unary_unary(path, **kwargs)

    def call(
        self,
        method: _d.MethodDescriptor,
        request: Any,
        *,
        raw: bool = False,
        metadata: tuple[tuple[str, str], ...] | None = None,
        kind: str | None = None,
    ) -> tuple[str, str]:
        """Sends `request` (a message, bytes, or a list of them for client streaming)
        and returns (status, reason); records it and any contract violation."""
        kind = kind or ("wire" if raw else "message")
        md = self.metadata if metadata is None else metadata
        stub = self._callable(method, raw)
        body: Any = iter(list(request)) if method.client_streaming else request
        code, reason, details = "OK", "", ""
        try:
            result = stub(body, metadata=md, timeout=self.timeout)
            if method.server_streaming:
                _drain(result)
        except grpc.RpcError as err:
            code = err.code().name  # type: ignore[attr-defined]
            details = err.details() or ""  # type: ignore[attr-defined]
            info = error_info_of(err)  # type: ignore[arg-type]
            reason = info.reason if info is not None else ""
            if not reason and code == "RESOURCE_EXHAUSTED" and TOO_LARGE in details:
                # gRPC's own receive limit (RAGMESH_GATEWAY_MAX_RECEIVE_BYTES,
                # RAGMESH_MAX_MESSAGE_BYTES), refused before any ragmesh code runs;
                # docs/security.md lists it so.
                reason = TRANSPORT_LIMIT
        name = method.name
        self.tally.record(f"{self.service.name}.{name}", kind, code, reason)
        if code in BAD_CODES or (code != "OK" and not reason):
            self.tally.violations.append(
                Violation(f"{self.service.name}.{name}", kind, code, details, describe(request))
            )
        return code, reason


def _drain(stream: Iterator[Any]) -> None:
    for _ in itertools.islice(stream, MAX_STREAM_EVENTS):
        pass
    cancel: Callable[[], Any] | None = getattr(stream, "cancel", None)
    if cancel is not None:
        cancel()


def methods_of(service: _d.ServiceDescriptor) -> list[_d.MethodDescriptor]:
    return list(service.methods)
