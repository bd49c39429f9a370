"""The blocking client and the asyncio client offer the same methods with the
same parameters (names, kinds, defaults), so that code moves between them."""

from __future__ import annotations

import inspect

from ragmesh.client import AsyncRagmeshClient, RagmeshClient

# Context-manager and lifecycle plumbing differs by nature (with vs async with).
LIFECYCLE = {"__enter__", "__exit__", "__aenter__", "__aexit__"}


def public_methods(cls: type) -> dict[str, inspect.Signature]:
    return {
        name: inspect.signature(member)
        for name, member in inspect.getmembers(cls, callable)
        if (not name.startswith("_") or name == "__init__") and name not in LIFECYCLE
    }


def parameters(sig: inspect.Signature) -> list[tuple[str, object, object]]:
    return [(p.name, p.kind, p.default) for p in sig.parameters.values()]


def test_same_methods() -> None:
    assert set(public_methods(RagmeshClient)) == set(public_methods(AsyncRagmeshClient))


def test_same_parameters() -> None:
    sync, aio = public_methods(RagmeshClient), public_methods(AsyncRagmeshClient)
    different = {name for name in sync if parameters(sync[name]) != parameters(aio[name])}
    assert not different, {n: (sync[n], aio[n]) for n in different}


def test_both_build_from_the_environment(monkeypatch: object) -> None:
    assert "from_env" in public_methods(RagmeshClient)
    assert inspect.ismethod(AsyncRagmeshClient.from_env)  # a classmethod
