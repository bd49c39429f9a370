"""Builds the gRPC stubs into the wheel: they are generated from protos/ at
build time (as `make proto` does for a checkout) and never committed."""

from __future__ import annotations

from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent


class BuildPyWithStubs(build_py):
    def run(self) -> None:
        super().run()
        if not self.editable_mode:  # an editable install uses `make proto`'s stubs
            generate_stubs(Path(self.build_lib))


def generate_stubs(out: Path) -> None:
    import grpc_tools
    from grpc_tools import protoc

    protos = sorted(str(p.relative_to(ROOT / "protos")) for p in (ROOT / "protos").rglob("*.proto"))
    well_known = Path(grpc_tools.__file__).parent / "_proto"
    args = [
        "grpc_tools.protoc",
        f"-I{ROOT / 'protos'}",
        f"-I{well_known}",
        f"--python_out={out}",
        f"--grpc_python_out={out}",
        *protos,
    ]
    if protoc.main(args) != 0:
        raise RuntimeError("protoc failed to generate the gRPC stubs")
    for version_dir in out.glob("ragmesh/*/v1"):
        for package in (version_dir, version_dir.parent):
            (package / "__init__.py").touch()


setup(cmdclass={"build_py": BuildPyWithStubs})
