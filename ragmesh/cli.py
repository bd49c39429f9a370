"""The `ragmesh` command line."""

from __future__ import annotations

import importlib
from typing import Any

import typer

from ragmesh.cli_chat import CHAT_EXAMPLES, chat
from ragmesh.cli_common import examples
from ragmesh.cli_eval import EVAL_EXAMPLES, eval_command
from ragmesh.cli_ingest import INGEST_EXAMPLES, ingest
from ragmesh.cli_manage import docs_app, jobs_app, kb_app, status
from ragmesh.cli_query import ASK_EXAMPLES, SEARCH_EXAMPLES, ask, search
from ragmesh.cli_state import (
    CHECK_EXAMPLES,
    DOWNLOAD_EXAMPLES,
    REINDEX_EXAMPLES,
    docs_download,
    docs_text,
    kb_check,
    kb_reindex,
)
from ragmesh.ports import DEFAULT_PORTS

app = typer.Typer(
    help="ragmesh: grounded, cited answers from your documents.\n\n"
    "After `make run` every command finds the local stack and its development key by itself "
    "(config in .ragmesh/config.json); elsewhere pass --addr/--api-key or set "
    "RAGMESH_GATEWAY_ADDR and RAGMESH_API_KEY (and --ca-file or RAGMESH_TLS_CA_FILE for a "
    "gateway serving TLS). Exit codes: 0 ok, 1 something failed, 2 bad "
    "arguments, 3 not found, 4 already exists, 5 bad API key, 6 stack unreachable or timed "
    "out, 7 a server limit, 10 other server errors.",
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode="rich",
)

SERVICES = (*DEFAULT_PORTS, "web")


@app.callback()
def _root() -> None:
    """ragmesh: grounded, cited answers from your documents."""
    # With a single command typer would make it the whole app (`ragmesh chunking`);
    # a callback keeps `serve` a subcommand: `ragmesh serve chunking`.


@app.command(
    epilog="Examples:\n\n  ragmesh serve chunking\n\n  ragmesh serve embedding --port 6053",
)
def serve(
    service: str = typer.Argument(..., help=f"One of: {', '.join(SERVICES)}."),
    port: int | None = typer.Option(
        None, help="gRPC port (HTTP for web; default: the service's own)."
    ),
    metrics_port: int | None = typer.Option(
        None, help="Prometheus port (default 9100 + port - 50050)."
    ),
) -> None:
    """Run one ragmesh service until SIGTERM or Ctrl-C."""
    if service not in SERVICES:
        typer.echo(f"unknown service {service!r}; choose one of {', '.join(SERVICES)}", err=True)
        raise typer.Exit(2)
    if service == "web":
        # HTTP (uvicorn), not a gRPC server: its own runner and the `web` extra.
        _web_module("services.web.server").run(port)
        return
    server, module = _server_modules(service)
    svc, default_port = module.create_service()
    server.run(svc, port if port is not None else default_port, metrics_port)


def _server_modules(service: str) -> tuple[Any, Any]:
    """The server bootstrap and the service's module, imported only here: the SDK
    and the other commands install without the servers' dependencies."""
    try:
        from services.common import server

        return server, importlib.import_module(f"services.{service}.server")
    except ImportError as exc:
        typer.echo(
            f"`ragmesh serve` needs the server dependencies ({exc.name or exc} is missing): "
            "pip install 'ragmesh[server]'",
            err=True,
        )
        raise typer.Exit(2) from exc


def _web_module(name: str) -> Any:
    try:
        return importlib.import_module(name)
    except ImportError as exc:
        typer.echo(
            f"this command needs the web dependencies ({exc.name or exc} is missing): "
            "pip install 'ragmesh[web]'",
            err=True,
        )
        raise typer.Exit(2) from exc


@app.command(
    epilog="Examples:\n\n  ragmesh mcp\n\n"
    "  RAGMESH_API_KEY=... RAGMESH_GATEWAY_ADDR=rag.example.com:443 RAGMESH_TLS=true ragmesh mcp",
)
def mcp() -> None:
    """An MCP server over stdio for desktop agents: tools to list knowledge bases, search,
    ask, upload and follow jobs. The gateway and key come from RAGMESH_GATEWAY_ADDR /
    RAGMESH_API_KEY or the config `make run` writes."""
    _web_module("services.web.mcp_stdio").run()


kb_app.command("check", epilog=CHECK_EXAMPLES)(kb_check)
kb_app.command("reindex", epilog=REINDEX_EXAMPLES)(kb_reindex)
docs_app.command("download", epilog=DOWNLOAD_EXAMPLES)(docs_download)
docs_app.command("text", epilog=examples("ragmesh docs text handbook.pdf --kb manuals | less"))(
    docs_text
)
app.add_typer(kb_app, name="kb")
app.add_typer(docs_app, name="docs")
app.add_typer(jobs_app, name="jobs")
app.command("ingest", epilog=INGEST_EXAMPLES)(ingest)
app.command("search", epilog=SEARCH_EXAMPLES)(search)
app.command("ask", epilog=ASK_EXAMPLES)(ask)
app.command("chat", epilog=CHAT_EXAMPLES)(chat)
app.command("eval", epilog=EVAL_EXAMPLES)(eval_command)
app.command(
    "status",
    epilog=examples("ragmesh status", "ragmesh status --json", "ragmesh status --addr gw:50051"),
)(status)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
