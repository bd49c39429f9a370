"""The `ragmesh` command line."""

from __future__ import annotations

import importlib

import typer

from services.common.config import DEFAULT_PORTS

app = typer.Typer(
    help="ragmesh: grounded, cited answers from your documents.",
    no_args_is_help=True,
    add_completion=False,
)

SERVICES = tuple(DEFAULT_PORTS)


@app.command(
    epilog="Examples:\n\n  ragmesh serve chunking\n\n  ragmesh serve embedding --port 6053",
)
def serve(
    service: str = typer.Argument(..., help=f"One of: {', '.join(SERVICES)}."),
    port: int | None = typer.Option(None, help="gRPC port (default: the service's own)."),
    metrics_port: int | None = typer.Option(
        None, help="Prometheus port (default 9100 + port - 50050)."
    ),
) -> None:
    """Run one ragmesh service until SIGTERM or Ctrl-C."""
    if service not in SERVICES:
        typer.echo(f"unknown service {service!r}; choose one of {', '.join(SERVICES)}", err=True)
        raise typer.Exit(2)
    from services.common import server

    module = importlib.import_module(f"services.{service}.server")
    svc, default_port = module.create_service()
    server.run(svc, port if port is not None else default_port, metrics_port)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
