"""Small typed results the clients assemble from streams."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from ragmesh.common.v1 import common_pb2
from ragmesh.gateway.v1 import gateway_pb2


@dataclass
class AskResult:
    """An Ask stream gathered: the sources, the answer text and the final event."""

    sources: list[common_pb2.Citation] = field(default_factory=list)
    answer: str = ""
    final: gateway_pb2.AskFinal | None = None

    @property
    def citations(self) -> list[common_pb2.Citation]:
        """The sources the answer cites, with their numbers [n]."""
        return list(self.final.citations) if self.final is not None else []

    @property
    def abstained(self) -> bool:
        return bool(self.final is not None and self.final.abstained)

    def add(self, event: gateway_pb2.AskResponse) -> None:
        kind = event.WhichOneof("event")
        if kind == "sources":
            self.sources.extend(event.sources.sources)
        elif kind == "delta":
            self.answer += event.delta.text
        elif kind == "final":
            self.final = event.final
            # The final answer is authoritative (deltas may be cut or post-processed).
            if event.final.answer:
                self.answer = event.final.answer


def collect_ask(events: Iterable[gateway_pb2.AskResponse]) -> AskResult:
    result = AskResult()
    for event in events:
        result.add(event)
    return result
