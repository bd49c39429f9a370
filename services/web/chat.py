"""Ask events (the gateway's stream) as OpenAI chat completions: one JSON object, or
chunks for server-sent events. No web framework here."""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from ragmesh.client.results import AskResult
from ragmesh.gateway.v1 import gateway_pb2
from services.web.convert import citation_json, message_json
from services.web.protocol import finish_reason


def completion_id() -> str:
    return f"chatcmpl-{uuid.uuid4().hex}"


def final_extension(kb: str, final: gateway_pb2.AskFinal | None) -> dict[str, Any]:
    """The `ragmesh` field of the answer: what the answer cites and how it went."""
    if final is None:
        return {"knowledge_base": kb, "citations": []}
    ext: dict[str, Any] = {
        "knowledge_base": kb,
        "citations": [citation_json(c) for c in final.citations],
        "abstained": final.abstained,
        "grounded": final.grounded,
        "finish_reason": final.finish_reason,
        "timings_ms": {
            "retrieval": final.retrieval_ms,
            "first_token": final.first_token_ms,
            "total": final.total_ms,
        },
    }
    # Fields the final message gains (e.g. the search query a conversation used).
    extra = message_json(final)
    for name in ("answer", "citations", "usage", "retrieval_ms", "first_token_ms", "total_ms"):
        extra.pop(name, None)
    for name, value in extra.items():
        ext.setdefault(name, value)
    return ext


def usage_json(final: gateway_pb2.AskFinal | None) -> dict[str, int]:
    if final is None:
        return {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}
    u = final.usage
    return {
        "prompt_tokens": u.prompt_tokens,
        "completion_tokens": u.completion_tokens,
        "total_tokens": u.total_tokens,
    }


def completion_json(model: str, kb: str, result: AskResult) -> dict[str, Any]:
    """A whole (non-streamed) chat completion."""
    final = result.final
    ext = final_extension(kb, final)
    ext["sources"] = [citation_json(s) for s in result.sources]
    return {
        "id": completion_id(),
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": result.answer},
                "finish_reason": finish_reason(final.finish_reason if final else ""),
                "logprobs": None,
            }
        ],
        "usage": usage_json(final),
        "ragmesh": ext,
    }


@dataclass
class ChunkWriter:
    """Turns Ask events into chat.completion.chunk objects, in order:
    the role (with the sources in `ragmesh.sources`), content deltas, the finish
    (with citations in `ragmesh`), the usage when asked for."""

    model: str
    kb: str
    include_usage: bool = False
    id: str = field(default_factory=completion_id)
    created: int = field(default_factory=lambda: int(time.time()))
    streamed: str = ""
    started: bool = False

    def chunk(
        self,
        delta: dict[str, Any],
        finish: str | None = None,
        ragmesh: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        out: dict[str, Any] = {
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}],
        }
        if ragmesh is not None:
            out["ragmesh"] = ragmesh
        return out

    def _start(self, sources: list[dict[str, Any]] | None = None) -> list[dict[str, Any]]:
        if self.started:
            return []
        self.started = True
        ext = {"knowledge_base": self.kb, "sources": sources or []}
        return [self.chunk({"role": "assistant", "content": ""}, ragmesh=ext)]

    def on_event(self, event: gateway_pb2.AskResponse) -> list[dict[str, Any]]:
        kind = event.WhichOneof("event")
        if kind == "sources":
            return self._start([citation_json(s) for s in event.sources.sources])
        if kind == "delta":
            self.streamed += event.delta.text
            return [*self._start(), self.chunk({"content": event.delta.text})]
        if kind == "final":
            return [*self._start(), *self._finish(event.final)]
        return []  # queued: the stream's keep-alive covers the wait

    def _finish(self, final: gateway_pb2.AskFinal) -> list[dict[str, Any]]:
        out = []
        ext = final_extension(self.kb, final)
        answer = final.answer
        # The final answer is authoritative; deltas are the same text as it grew. What
        # was not streamed yet is sent now; an answer that differs from what was
        # streamed (rewritten after the fact) travels whole in `ragmesh.answer`.
        if answer and answer != self.streamed:
            if answer.startswith(self.streamed):
                out.append(self.chunk({"content": answer[len(self.streamed) :]}))
                self.streamed = answer
            else:
                ext["answer"] = answer
        out.append(self.chunk({}, finish_reason(final.finish_reason), ext))
        if self.include_usage:
            usage_chunk = self.chunk({})
            usage_chunk["choices"] = []
            usage_chunk["usage"] = usage_json(final)
            out.append(usage_chunk)
        return out
