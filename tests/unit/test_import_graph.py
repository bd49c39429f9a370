"""Imports go one way (docs/architecture.md): the gateway and the worker share
services.jobs and never import each other; logic modules never import grpc;
the SDK never imports the servers; runtime code never imports dev support."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

# Modules that translate between gRPC and the logic (or wrap gRPC clients).
GRPC_PLUMBING = {
    "services/common/channels.py",
    "services/common/interceptors.py",
    "services/common/server.py",
    "services/common/status.py",
    "services/common/trace_interceptors.py",
    "services/gateway/clients.py",
    "services/worker/clients.py",
    "services/retrieval/milvus_errors.py",
}


def modules(*roots: str) -> Iterator[Path]:
    for root in roots:
        for path in sorted((REPO / root).rglob("*.py")):
            if "/v1/" not in path.as_posix():
                yield path


def imports(path: Path, *, top_level_only: bool = False) -> set[str]:
    """Modules `path` imports (at module level only, when asked)."""
    tree = ast.parse(path.read_text())
    nodes = tree.body if top_level_only else list(ast.walk(tree))
    found: set[str] = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def offenders(roots: tuple[str, ...], forbidden: tuple[str, ...], **kw: bool) -> list[str]:
    bad = []
    for path in modules(*roots):
        for name in imports(path, **kw):
            if any(name == f or name.startswith(f + ".") for f in forbidden):
                bad.append(f"{path.relative_to(REPO)} imports {name}")
    return bad


def test_gateway_and_worker_never_import_each_other() -> None:
    assert offenders(("services/gateway",), ("services.worker",)) == []
    assert offenders(("services/worker",), ("services.gateway",)) == []


def test_jobs_depends_on_neither_side_nor_on_grpc() -> None:
    assert offenders(("services/jobs",), ("services.gateway", "services.worker", "grpc")) == []


def test_logic_modules_never_import_grpc() -> None:
    bad = [
        line
        for line in offenders(("services",), ("grpc",))
        if not line.split(" imports ")[0].endswith("/server.py")
        and line.split(" imports ")[0] not in GRPC_PLUMBING
    ]
    assert bad == []


def test_sdk_never_imports_the_servers() -> None:
    assert offenders(("ragmesh/client",), ("services", "devstack")) == []
    # The CLI imports the servers only inside `ragmesh serve`, lazily.
    assert offenders(("ragmesh",), ("services", "devstack"), top_level_only=True) == []


def test_runtime_code_never_imports_dev_support_or_tests() -> None:
    assert offenders(("services", "ragmesh"), ("devstack", "tests", "benchmarks")) == []
    assert offenders(("benchmarks", "devstack"), ("tests",)) == []


def test_the_scan_sees_imports() -> None:
    """The checks above would pass vacuously if the scan found nothing."""
    server = imports(REPO / "services/gateway/server.py")
    assert "grpc" in server and "services.jobs.state" in server
    assert offenders(("services/gateway",), ("grpc",)) != []
