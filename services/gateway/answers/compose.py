"""The gateway's own answers: the answer mode chosen, the relevance signal
measured, and verbatim answers and abstentions turned into Ask events.

Built in the gateway rather than in the generation service because everything it
needs is here: the embedding client and the knowledge base's model (the one
that embedded its chunks and the question), the question's vector (already
computed for the search) and each chunk's offsets in its document, which the
generation service never sees. It never touches the generation service, so a
verbatim answer never waits in the LLM admission queue and works with the LLM
down.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from ragmesh.common.v1 import common_pb2
from ragmesh.gateway.v1 import gateway_pb2 as pb
from services.common import api
from services.common.deadlines import Deadline
from services.gateway.answers.verbatim import (
    Budget,
    Passage,
    Selection,
    candidates,
    select,
)
from services.gateway.clients import Downstream
from services.gateway.config import AnswerSettings
from services.generation.language import detect_language, pick_message

VERBATIM = pb.ANSWER_MODE_VERBATIM
GENERATIVE = pb.ANSWER_MODE_GENERATIVE


def _is_cjk(c: str) -> bool:
    return 0x2E80 <= ord(c) <= 0x9FFF or 0xF900 <= ord(c) <= 0xFAFF or 0xFF00 <= ord(c) <= 0xFFEF


@dataclass
class Timer:
    """Ask's timings, from the start of the call."""

    start: float
    retrieval_ms: float = 0.0
    first_token_ms: float = 0.0

    def now_ms(self) -> float:
        return (time.perf_counter() - self.start) * 1000

    def token(self) -> None:
        if not self.first_token_ms:
            self.first_token_ms = self.now_ms()


class AnswerComposer:
    def __init__(self, downstream: Downstream, settings: AnswerSettings) -> None:
        self.downstream = downstream
        self.settings = settings
        self.budget = Budget(
            max_sentences=settings.verbatim_max_sentences,
            max_chars=settings.verbatim_max_chars,
            max_score_drop=settings.verbatim_max_score_drop,
        )

    @staticmethod
    def check_mode(mode: int) -> int:
        return api.check_enum(pb.AnswerMode, mode, "answer_mode")

    def resolve_mode(self, requested: int, kb_default: int) -> int:
        """The request's mode, else the knowledge base's; AUTO (or nothing) is
        verbatim when the LLM is marked small."""
        mode = requested or kb_default
        if mode in (VERBATIM, GENERATIVE):
            return mode
        return VERBATIM if self.settings.llm_small else GENERATIVE

    async def select(
        self,
        question: str,
        question_vector: Sequence[float],
        results: Sequence[common_pb2.ScoredChunk],
        deadline: Deadline,
        model: str = "",
    ) -> Selection:
        """The verbatim answer's sentences and the relevance signal: every
        sentence of the retrieved passages embedded with the knowledge base's model.

        The splitting and the scoring (pure Python, ~5-10 ms an Ask) run in a thread:
        on the event loop, a dozen Asks scoring at once held up every other call —
        an LLM queue refusal waited ~90 ms behind 12 of them, 0.2 ms with the thread
        (docs/generation.md, admission)."""
        passages = [
            Passage(n, r.chunk.document_id, r.chunk.text, r.chunk.start_offset)
            for n, r in enumerate(results, start=1)
        ]
        cands = await asyncio.to_thread(candidates, passages, self.budget.max_chars)
        if not cands or not question_vector:
            return Selection([], 0.0)
        vectors = await self.downstream.embed_documents(
            [c.text for c in cands], deadline.remaining(), model=model
        )
        return await asyncio.to_thread(
            select, question, question_vector, cands, vectors, self.budget
        )

    def abstains(self, selection: Selection, model: str = "") -> bool:
        """Nothing retrieved (or no sentence in it), or nothing close enough — by the
        threshold of the knowledge base's model (the signal is that model's cosine)."""
        threshold = self.settings.abstain_threshold(model)
        return not selection.chosen or selection.relevance < threshold

    def abstention(
        self, question: str, mode: int, relevance: float, timer: Timer
    ) -> Iterator[pb.AskResponse]:
        message = pick_message(self.settings.abstention_messages, detect_language(question))
        timer.token()
        yield pb.AskResponse(delta=pb.AskDelta(text=message))
        yield pb.AskResponse(
            final=pb.AskFinal(
                answer=message,
                grounded=False,
                abstained=True,
                finish_reason="ABSTAINED",
                answer_mode=mode,  # type: ignore[arg-type]
                relevance=relevance,
                retrieval_ms=timer.retrieval_ms,
                first_token_ms=timer.first_token_ms,
                total_ms=timer.now_ms(),
            )
        )

    def verbatim(
        self,
        selection: Selection,
        sources: Sequence[common_pb2.Citation],
        timer: Timer,
        replaced_ungrounded: bool = False,
    ) -> Iterator[pb.AskResponse]:
        """Each chosen sentence, unchanged, followed by its source's [n], one
        delta per sentence; then the final answer with one citation per sentence
        (the source, with the sentence and its offsets in the document)."""
        by_number = {s.number: s for s in sources}
        parts: list[str] = []
        citations: list[common_pb2.Citation] = []
        for scored in selection.chosen:
            cand = scored.candidate
            number = cand.passage.number
            cjk = _is_cjk(cand.text[-1]) or _is_cjk(cand.text[0])
            marker = f"[{number}]" if cjk else f" [{number}]"
            glue = "" if not parts or cjk else " "
            piece = f"{glue}{cand.text}{marker}"
            parts.append(piece)
            timer.token()
            yield pb.AskResponse(delta=pb.AskDelta(text=piece))
            cited = common_pb2.Citation()
            cited.CopyFrom(by_number[number])
            cited.cited = True
            cited.quote = cand.text
            cited.quote_start_offset = cand.document_start
            cited.quote_end_offset = cand.document_end
            citations.append(cited)
        yield pb.AskResponse(
            final=pb.AskFinal(
                answer="".join(parts),
                citations=citations,
                grounded=bool(citations),
                abstained=False,
                finish_reason="STOP",
                answer_mode=VERBATIM,
                relevance=selection.relevance,
                replaced_ungrounded=replaced_ungrounded,
                retrieval_ms=timer.retrieval_ms,
                first_token_ms=timer.first_token_ms or timer.now_ms(),
                total_ms=timer.now_ms(),
            )
        )
