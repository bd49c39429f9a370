"""`ragmesh chat`: an interactive, multi-turn session with a knowledge base in the
terminal: answers stream as they are written, cited sources follow each answer.
Every question goes with the conversation so far (Ask's history), so a follow-up
("How tall is it?") is searched as the standalone query the gateway writes; the
query is shown when it differs from the question.
Lines starting with `/` are commands (/help). Ctrl-C or Ctrl-D ends the session."""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from typing import Annotated, TextIO

import typer

from ragmesh.cli_common import (
    AddrOption,
    ApiKeyOption,
    CaFileOption,
    Cli,
    KbOption,
    TlsOption,
    examples,
    snippet,
)
from ragmesh.cli_query import FilterOption, ModeOption, TopKOption, location, parse_filters
from ragmesh.client import RagmeshClient, RagmeshError
from ragmesh.client.results import AskResult

CHAT_EXAMPLES = examples(
    "ragmesh chat",
    "ragmesh chat --kb manuals --mode hybrid",
    'printf "What is ragmesh?\\n" | ragmesh chat --kb demo',
)
HELP = (
    "/sources all|cited|none  which sources to show after answers (now: {sources})\n"
    "/clear                   forget the conversation so far\n"
    "/history                 show the conversation so far\n"
    "/quit                    end the session (Ctrl-D and Ctrl-C too)"
)


#: the conversation sent with each question: the newest turns, within the
#: gateway's default limits (RAGMESH_GATEWAY_MAX_HISTORY_*) with room to spare
HISTORY_TURNS = 20
HISTORY_CHARS = 16_000


@dataclass
class Session:
    """The conversation: (role, text) turns, oldest first, kept for the session."""

    kb: str
    sources: str = "cited"
    turns: list[tuple[str, str]] = field(default_factory=list)

    def add(self, question: str, answer: str) -> None:
        """One exchange; one without an answer (nothing to refer back to) is left out."""
        if answer.strip():
            self.turns += [("user", question), ("assistant", answer)]

    def recent(self) -> list[tuple[str, str]]:
        """The newest turns within HISTORY_TURNS and HISTORY_CHARS (whole turns)."""
        kept: list[tuple[str, str]] = []
        size = 0
        for role, text in reversed(self.turns[-HISTORY_TURNS:]):
            size += len(text)
            if size > HISTORY_CHARS:
                break
            kept.insert(0, (role, text))
        return kept

    def command(self, line: str, out: TextIO) -> bool:
        """Runs a /command; False when the session should end."""
        name, _, arg = line[1:].strip().partition(" ")
        if name in {"quit", "exit", "q"}:
            return False
        if name == "clear":
            self.turns.clear()
            out.write("(conversation cleared)\n")
        elif name == "history":
            for role, text in self.turns:
                out.write(f"{role}: {snippet(text, 200)}\n")
        elif name == "sources" and arg.strip() in {"all", "cited", "none"}:
            self.sources = arg.strip()
        else:
            out.write(HELP.format(sources=self.sources) + "\n")
        return True


def answer(
    rag: RagmeshClient,
    session: Session,
    question: str,
    out: TextIO,
    **ask_args: object,
) -> AskResult:
    """One turn: the answer streamed to `out`, then its sources."""
    result = AskResult()
    streamed = ""
    events = rag.ask(session.kb, question, history=session.recent(), **ask_args)  # type: ignore[arg-type]
    for event in events:
        result.add(event)
        if event.WhichOneof("event") == "delta":
            streamed += event.delta.text
            out.write(event.delta.text)
            out.flush()
    if result.answer != streamed:
        # The final answer is authoritative (e.g. an abstention): show it whole.
        out.write(("\n" if streamed else "") + result.answer)
    out.write("\n")
    if result.abstained:
        out.write("(the knowledge base does not contain an answer to this)\n")
    if result.search_query and result.search_query != question.strip():
        how = "fallback" if result.search_query_source == "fallback" else "rewritten"
        out.write(f"  (searched, {how}: {snippet(result.search_query, 200)})\n")
    cited = {c.number for c in result.citations}
    for source in result.sources:
        if session.sources == "none" or (session.sources == "cited" and source.number not in cited):
            continue
        out.write(
            f"  [{source.number}] {source.file_name or source.document_id}, {location(source)}"
            f"{'' if source.number in cited else ' (not cited)'}\n"
        )
    out.flush()
    return result


def chat(
    kb: KbOption = None,
    top_k: TopKOption = 0,
    mode: ModeOption = None,
    filters: FilterOption = None,
    max_tokens: Annotated[int, typer.Option(help="Answer length limit (0 = default).")] = 0,
    show_sources: Annotated[
        str, typer.Option("--sources", help="cited, all or none after each answer.")
    ] = "cited",
    addr: AddrOption = None,
    api_key: ApiKeyOption = None,
    tls: TlsOption = None,
    ca_file: CaFileOption = None,
) -> None:
    """Talk with a knowledge base: questions and streamed, cited answers, turn after turn."""
    cli = Cli.create(addr, api_key, tls=tls, ca_file=ca_file)
    session = Session(cli.kb(kb), sources=show_sources)
    try:
        ask_args = {
            "top_k": top_k,
            "mode": mode,
            "filters": parse_filters(filters),
            "max_tokens": max_tokens,
        }
    except ValueError as exc:
        cli.fail(str(exc), 2)
        return
    interactive = sys.stdin.isatty()
    out = sys.stdout
    if interactive:
        out.write(f"ragmesh chat with `{session.kb}`: ask away; /help for commands, Ctrl-D ends.\n")
    with cli.client(timeout=300.0) as rag:
        try:
            while True:
                try:
                    line = input("you> " if interactive else "")
                except EOFError:
                    break
                line = line.strip()
                if not line:
                    continue
                if line.startswith("/"):
                    if not session.command(line, out):
                        break
                    continue
                if interactive:
                    out.write("ragmesh> ")
                try:
                    result = answer(rag, session, line, out, **ask_args)
                except RagmeshError as err:
                    reason = f" [{err.reason}]" if err.reason else ""
                    out.write(f"\nerror: {err.code_name}{reason}: {err.message}\n")
                    continue
                session.add(line, result.answer)
        except KeyboardInterrupt:
            # Ctrl-C mid-answer or at the prompt: the stream is cancelled as the
            # client closes; end on a clean line, exit code 0.
            out.write("\n")
    if interactive:
        out.write("bye\n")
