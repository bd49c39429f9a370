"""Small typed results the clients assemble from streams."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from ragmesh.common.v1 import common_pb2
from ragmesh.gateway.v1 import gateway_pb2

EN_DASH = "\u2013"


def pages_text(citation: common_pb2.Citation) -> str:
    """Where a passage is in its document's pages: "p. 22", "pp. 22–23" ("" without pages).

    The label is the document's own page numbering (a PDF's page labels, else
    the physical page numbers).
    """
    if not citation.page_start:
        return ""
    label = citation.page_label or (
        str(citation.page_start)
        if citation.page_end in (0, citation.page_start)
        else f"{citation.page_start}{EN_DASH}{citation.page_end}"
    )
    return f"pp. {label}" if EN_DASH in label else f"p. {label}"


def location_text(citation: common_pb2.Citation) -> str:
    """The passage's pages (if any) and character offsets: "p. 22, chars 100–900"."""
    chars = f"chars {citation.start_offset}–{citation.end_offset}"
    pages = pages_text(citation)
    return f"{pages}, {chars}" if pages else chars


@dataclass
class AskResult:
    """An Ask stream gathered: the sources, the answer text and the final event."""

    sources: list[common_pb2.Citation] = field(default_factory=list)
    answer: str = ""
    final: gateway_pb2.AskFinal | None = None
    #: the last queue position reported while the answer waited for the LLM
    queued: common_pb2.QueuePosition | None = None

    @property
    def citations(self) -> list[common_pb2.Citation]:
        """The sources the answer cites, with their numbers [n]."""
        return list(self.final.citations) if self.final is not None else []

    @property
    def search_query(self) -> str:
        """What was searched: the question, or the standalone query written from
        the conversation (history)."""
        return self.final.search_query if self.final is not None else ""

    @property
    def search_query_source(self) -> str:
        """`question`, `llm_rewrite` or `fallback` ("" before the final event)."""
        if self.final is None or not self.final.search_query_source:
            return ""
        name = gateway_pb2.SearchQuerySource.Name(self.final.search_query_source)
        return name.removeprefix("SEARCH_QUERY_SOURCE_").lower()

    @property
    def abstained(self) -> bool:
        return bool(self.final is not None and self.final.abstained)

    def add(self, event: gateway_pb2.AskResponse) -> None:
        kind = event.WhichOneof("event")
        if kind == "sources":
            self.sources.extend(event.sources.sources)
        elif kind == "queued":
            self.queued = event.queued
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
