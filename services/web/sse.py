"""Server-sent events: encoding, and a keep-alive for streams that go quiet."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any

SSE_HEADERS = {
    # No caching, no buffering by proxies (nginx honours X-Accel-Buffering).
    "Cache-Control": "no-cache",
    "X-Accel-Buffering": "no",
}


def event(data: Any, name: str | None = None) -> str:
    """One event; `data` is sent as compact JSON (a str as it is)."""
    text = data if isinstance(data, str) else json.dumps(data, ensure_ascii=False)
    head = f"event: {name}\n" if name else ""
    return head + "".join(f"data: {line}\n" for line in text.split("\n")) + "\n"


def comment(text: str) -> str:
    """A comment line: ignored by clients, it keeps proxies and idle timers from
    closing a quiet stream."""
    return f": {text}\n\n"


async def with_keepalive(
    source: AsyncIterator[str], every_s: float, *, comment_first: bool = False
) -> AsyncGenerator[str, None]:
    """`source`'s items, and a comment whenever it has been quiet for `every_s`
    (`comment_first`: one before anything else, for a stream that starts quiet).

    The pending read is a task that survives the timeout (cancelling it would end
    the gateway stream under it); it is cancelled only when the client goes away.
    """
    pending: asyncio.Future[str] | None = None
    try:
        if comment_first:
            yield comment("keep-alive")
        while True:
            if pending is None:
                pending = asyncio.ensure_future(source.__anext__())
            done, _ = await asyncio.wait({pending}, timeout=every_s)
            if not done:
                yield comment("keep-alive")
                continue
            try:
                item = pending.result()
            except StopAsyncIteration:
                pending = None
                return
            pending = None
            yield item
    finally:
        if pending is not None:
            pending.cancel()
            with contextlib.suppress(BaseException):
                await pending
        aclose = getattr(source, "aclose", None)
        if aclose is not None:
            with contextlib.suppress(Exception):
                await aclose()
