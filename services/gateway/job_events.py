"""Job-change signals for every watch a gateway process serves, over ONE Redis
subscription.

Writers of a job record publish on its channel (services.jobs.keys.Keys.events); a
message only means "changed, read the record again". Before, each WatchIngestionJob
stream opened a subscription of its own: a Redis connection per watcher (and a
connection set up and torn down per watched job, the largest part of a watch's
cost). Here one pattern subscription receives every job's messages and wakes the
watchers of that job; messages for jobs nobody here watches are dropped. So every
replica hears every job: about four messages a document (claim, stages, end), tens to
hundreds a second at the ingestion rates of a deployment (its embedding is the limit),
where a connection per watch cost a connection set-up per document watched. A watcher
never depends on a message alone: it also reads the record again at least every
`SAFETY_NET_S`, so a message lost while the subscription reconnects delays an update
by at most that, never loses it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterator

import redis.asyncio as aioredis

log = logging.getLogger("ragmesh.gateway")

SAFETY_NET_S = 1.0
RECONNECT_S = 0.5  # the first wait before subscribing again, doubling up to the max
RECONNECT_MAX_S = 5.0
# How long close() waits for the reader to stop once cancelled (see close()).
CLOSE_WAIT_S = 2.0


class JobSignal:
    """One watcher's flag: set by a message on its job's channel."""

    def __init__(self) -> None:
        self._changed = asyncio.Event()

    def clear(self) -> None:
        """Call before reading the record: a change after it sets the flag again."""
        self._changed.clear()

    async def wait(self) -> None:
        """Until the job changes, or SAFETY_NET_S passes (then read it anyway)."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._changed.wait(), SAFETY_NET_S)

    def set(self) -> None:
        self._changed.set()

    def is_set(self) -> bool:
        return self._changed.is_set()


class JobEvents:
    def __init__(self, aredis: aioredis.Redis, pattern: str, prefix: str) -> None:
        """`pattern` matches every job's channel; `prefix` is the channel without the
        job id (a channel is prefix + job_id)."""
        self.aredis = aredis
        self.pattern = pattern
        self.prefix = prefix
        self._watchers: dict[str, set[JobSignal]] = {}
        self._reader: asyncio.Task[None] | None = None
        self._closing = False
        self.messages = 0  # received, for tests

    def start(self) -> None:
        self._reader = asyncio.create_task(self._read(), name="job-events")

    async def close(self) -> None:
        """Stops the reader, waiting at most CLOSE_WAIT_S. A cancelled reader sometimes
        stayed in redis-py's `get_message` (timeout 1 s) for good — seen here while
        closing right after a watch, the close then never returned (a gateway that
        would not shut down). The flag ends the loop at its next turn; the bounded wait
        covers a read that never returns."""
        if self._reader is None:
            return
        self._closing = True
        self._reader.cancel()
        await asyncio.wait({self._reader}, timeout=CLOSE_WAIT_S)
        if not self._reader.done():
            log.warning(
                "job events reader still stopping after %.0f s; not waited for", CLOSE_WAIT_S
            )

    @contextlib.contextmanager
    def watching(self, job_id: str) -> Iterator[JobSignal]:
        """A signal set on every change of `job_id` while the block runs."""
        signal = JobSignal()
        self._watchers.setdefault(job_id, set()).add(signal)
        try:
            yield signal
        finally:
            signals = self._watchers.get(job_id)
            if signals is not None:
                signals.discard(signal)
                if not signals:
                    del self._watchers[job_id]

    def watched(self) -> int:
        """Jobs watched now."""
        return len(self._watchers)

    def _wake_all(self) -> None:
        for signals in self._watchers.values():
            for signal in signals:
                signal.set()

    async def _read(self) -> None:
        delay = 0.0  # between attempts to subscribe: 0 while it works, then growing
        while not self._closing:
            pubsub = self.aredis.pubsub()
            try:
                await pubsub.psubscribe(self.pattern)
                if delay:
                    log.info("job events subscription is back")
                    delay = 0.0
                # Changes made while (re)subscribing were not heard: everyone reads again.
                self._wake_all()
                while not self._closing:
                    message = await pubsub.get_message(
                        ignore_subscribe_messages=True, timeout=SAFETY_NET_S
                    )
                    if message is None:
                        continue
                    self.messages += 1
                    channel = message["channel"]
                    if isinstance(channel, bytes):
                        channel = channel.decode()
                    for signal in self._watchers.get(channel[len(self.prefix) :], ()):
                        signal.set()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # Redis down or restarted: watchers poll meanwhile
                if self._closing:
                    return
                if not delay:  # once per outage, not twice a second while it lasts
                    log.warning("job events subscription lost (%s); subscribing again", exc)
                delay = min(max(delay * 2, RECONNECT_S), RECONNECT_MAX_S)
                await asyncio.sleep(delay)
            finally:
                with contextlib.suppress(Exception):
                    await pubsub.aclose()
