"""Tasks for tests/unit/test_chunking_pool.py, importable by the pool's child processes."""

from __future__ import annotations

import ctypes
import os
import re
import time
from typing import Any

from services.chunking.pool_child import Task
from services.common.errors import InvalidArgument

__all__ = ["Task"]


def init_state(tag: str) -> dict[str, Any]:
    return {"tag": tag, "kept": []}


def init_fails(tag: str) -> dict[str, Any]:
    raise RuntimeError(f"cannot load {tag}")


def echo(state: dict[str, Any], payload: bytes) -> tuple[dict[str, Any], bytes]:
    return {"pid": os.getpid(), "tag": state["tag"]}, payload


def sleep(state: dict[str, Any], payload: bytes) -> tuple[dict[str, Any], bytes]:
    started = time.time()  # wall clock: comparable across the worker processes
    time.sleep(float(payload))
    return {"pid": os.getpid(), "started": started, "ended": time.time()}, b"slept"


def spin(state: dict[str, Any], payload: bytes) -> tuple[dict[str, Any], bytes]:
    """Catastrophic backtracking: minutes inside the C regex engine, GIL held."""
    re.match(r"(a*)*b", "a" * int(payload))
    return {"pid": os.getpid()}, b"done"


def allocate(state: dict[str, Any], payload: bytes) -> tuple[dict[str, Any], bytes]:
    """Touch `payload` MiB (kept until the reply when the state asks)."""
    block = bytearray(int(payload) * 1024 * 1024)
    block[::4096] = b"x" * len(block[::4096])
    state["kept"].append(block)
    return {"pid": os.getpid()}, b"allocated"


def abort(state: dict[str, Any], payload: bytes) -> tuple[dict[str, Any], bytes]:
    os.abort()


def segfault(state: dict[str, Any], payload: bytes) -> tuple[dict[str, Any], bytes]:
    ctypes.string_at(0)
    return {}, b""


def refuse(state: dict[str, Any], payload: bytes) -> tuple[dict[str, Any], bytes]:
    raise InvalidArgument("corrupt", reason="CORRUPT_DOCUMENT", metadata={"page": 3})


def fail(state: dict[str, Any], payload: bytes) -> tuple[dict[str, Any], bytes]:
    raise ValueError("a bug")


def recurse(state: dict[str, Any], payload: bytes) -> tuple[dict[str, Any], bytes]:
    def down(n: int) -> int:
        return down(n + 1) + 1

    return {}, str(down(0)).encode()
