"""Shared plumbing of the `ragmesh` commands: connection options, output, exit codes."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Annotated, Any

import grpc
import typer
from google.protobuf import json_format
from google.protobuf.message import Message
from rich.console import Console
from rich.markup import escape

from ragmesh.client import RagmeshClient, RagmeshError
from ragmesh.client.config import ClientSettings

# Exit codes: documented in docs/cli.md.
EXIT_OK = 0
# the command ran, but something it did failed (a job, a health check, writing its output file)
EXIT_FAILURES = 1
EXIT_USAGE = 2  # bad arguments (also what Typer uses for usage errors)
EXIT_NOT_FOUND = 3
EXIT_ALREADY_EXISTS = 4
EXIT_AUTH = 5
EXIT_UNAVAILABLE = 6  # the stack cannot be reached, or a deadline passed
EXIT_LIMIT = 7  # a server limit (RESOURCE_EXHAUSTED)
EXIT_SERVER = 10  # any other server-side failure

_EXIT_BY_CODE = {
    grpc.StatusCode.INVALID_ARGUMENT: EXIT_USAGE,
    grpc.StatusCode.FAILED_PRECONDITION: EXIT_USAGE,
    grpc.StatusCode.OUT_OF_RANGE: EXIT_USAGE,
    grpc.StatusCode.NOT_FOUND: EXIT_NOT_FOUND,
    grpc.StatusCode.ALREADY_EXISTS: EXIT_ALREADY_EXISTS,
    grpc.StatusCode.UNAUTHENTICATED: EXIT_AUTH,
    grpc.StatusCode.PERMISSION_DENIED: EXIT_AUTH,
    grpc.StatusCode.UNAVAILABLE: EXIT_UNAVAILABLE,
    grpc.StatusCode.DEADLINE_EXCEEDED: EXIT_UNAVAILABLE,
    grpc.StatusCode.RESOURCE_EXHAUSTED: EXIT_LIMIT,
}


def exit_code_for(err: RagmeshError) -> int:
    return _EXIT_BY_CODE.get(err.code, EXIT_SERVER)


def literal(value: object) -> str:
    """`value` as Rich markup that prints exactly as it is.

    Everything the CLI did not write itself (server messages, ids and names the user
    typed or the server sent, paths, document text) goes through this before it is put
    into a markup string, a table cell or a progress description: `[a-z0-9]` in a
    server's message would otherwise vanish as a tag and `[/x]` raise a MarkupError.
    """
    return escape(str(value))


AddrOption = Annotated[
    str | None,
    typer.Option(
        "--addr",
        help="Gateway address host:port (env RAGMESH_GATEWAY_ADDR; default: the config "
        "written by `make run`, else 127.0.0.1:50051).",
        show_default=False,
    ),
]
ApiKeyOption = Annotated[
    str | None,
    typer.Option(
        "--api-key",
        help="API key (env RAGMESH_API_KEY; default: the config written by `make run`).",
        show_default=False,
    ),
]
TlsOption = Annotated[
    bool | None,
    typer.Option(
        "--tls/--no-tls",
        help="Talk TLS to the gateway (env RAGMESH_TLS; default: on with a CA file, else the "
        "config file's `tls`, else off).",
        show_default=False,
    ),
]
CaFileOption = Annotated[
    str | None,
    typer.Option(
        "--ca-file",
        help="PEM CA bundle to verify the gateway's certificate with; implies --tls (env "
        "RAGMESH_TLS_CA_FILE; default: the system's roots).",
        show_default=False,
    ),
]
JsonOption = Annotated[
    bool, typer.Option("--json", help="Print JSON (for scripts) instead of tables.")
]
KbOption = Annotated[
    str | None,
    typer.Option(
        "--kb",
        "-k",
        help="Knowledge base (env RAGMESH_KB; default: the config's, `demo` after make run).",
        show_default=False,
    ),
]


@dataclass
class Cli:
    """What a command needs: settings, output mode and consoles."""

    settings: ClientSettings
    as_json: bool
    out: Console
    err: Console

    @classmethod
    def create(
        cls,
        addr: str | None,
        api_key: str | None,
        as_json: bool = False,
        *,
        tls: bool | None = None,
        ca_file: str | None = None,
    ) -> Cli:
        try:
            settings = ClientSettings.resolve(addr, api_key, tls=tls, ca_file=ca_file)
        except ValueError as exc:
            Console(stderr=True).print(
                f"[red]error:[/] {literal(exc)}", highlight=False, soft_wrap=True
            )
            raise typer.Exit(EXIT_USAGE) from None
        return cls(settings, as_json, Console(), Console(stderr=True))

    def client(self, timeout: float = 30.0) -> RagmeshClient:
        return RagmeshClient(
            self.settings.gateway_addr,
            self.settings.api_key,
            timeout=timeout,
            tls=self.settings.tls,
            ca_file=self.settings.ca_file or None,
        )

    def kb(self, value: str | None) -> str:
        import os

        kb = value or os.environ.get("RAGMESH_KB") or self.settings.knowledge_base
        if not kb:
            self.fail("no knowledge base: pass --kb NAME (or set RAGMESH_KB)", EXIT_USAGE)
        return kb

    def fail(self, message: str, code: int = EXIT_FAILURES) -> None:
        """Print `message` (plain text, never markup) as the one error line and exit."""
        self.err.print(f"[red]error:[/] {literal(message)}", highlight=False, soft_wrap=True)
        raise typer.Exit(code)

    def print_json(self, data: Any) -> None:
        sys.stdout.write(json.dumps(data, indent=2, ensure_ascii=False, default=str) + "\n")
        sys.stdout.flush()

    @contextmanager
    def errors(self) -> Iterator[None]:
        """RagmeshError → a one-line message (with the reason) and its exit code."""
        try:
            yield
        except RagmeshError as err:
            hint = ""
            if err.code == grpc.StatusCode.UNAVAILABLE and not err.domain:
                # No ErrorInfo: the gateway itself did not answer (a service behind it would
                # have sent a reason such as LLM_UNAVAILABLE).
                transport = (
                    f"TLS, CA {self.settings.ca_file or 'system roots'}"
                    if self.settings.tls
                    else "plaintext; a gateway serving TLS needs --tls or --ca-file"
                )
                hint = (
                    f"\n  (is the stack running? gateway {self.settings.gateway_addr} from "
                    f"{self.settings.source}, {transport}; start it with `make run`)"
                )
            elif err.code == grpc.StatusCode.UNAUTHENTICATED:
                hint = "\n  (pass --api-key or set RAGMESH_API_KEY; `make run` prints the key)"
            elif err.reason == "AUTH_RATE_LIMITED":
                hint = "\n  (too many wrong API keys from this address: fix the key, then wait)"
            reason = f" [{err.reason}]" if err.reason else ""
            self.err.print(
                f"[red]error:[/] {literal(f'{err.code.name}{reason}: {err.message}{hint}')}",
                highlight=False,
                soft_wrap=True,
            )
            raise typer.Exit(exit_code_for(err)) from None


def message_dict(msg: Message) -> dict[str, Any]:
    """A protobuf message as JSON-ready dict (field names as in the proto)."""
    return json_format.MessageToDict(
        msg, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
    )


def timestamp_text(ts: Any) -> str:
    if not ts.seconds and not ts.nanos:
        return ""
    return str(ts.ToDatetime().strftime("%Y-%m-%d %H:%M:%S"))


def snippet(text: str, width: int = 100) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= width else flat[: width - 1] + "…"


def examples(*lines: str) -> str:
    """A Typer epilog listing examples (one per paragraph so that Rich keeps lines)."""
    return "Examples:\n\n" + "\n\n".join(f"  {line}" for line in lines)
