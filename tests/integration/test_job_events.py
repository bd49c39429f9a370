"""The gateway's job-change signals over one Redis subscription (real Redis): a message
wakes the watchers of its job and no others, any number of watches share one
connection, and a lost subscription comes back (also when Redis was down at start)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import redis
import redis.asyncio as aioredis

from devstack.deps import start_redis
from devstack.procs import free_port
from services.gateway.job_events import SAFETY_NET_S, JobEvents, JobSignal
from services.jobs.db import async_client
from services.jobs.keys import Keys


def pubsub_connections(url: str) -> set[str]:
    return {c["id"] for c in redis.Redis.from_url(url).client_list(_type="pubsub")}


Hub = tuple[JobEvents, Keys, aioredis.Redis, set[str]]


@pytest.fixture
async def hub(redis_url: str) -> AsyncIterator[Hub]:
    keys = Keys(f"t{uuid.uuid4().hex[:8]}")  # apart from other tests on this Redis
    client = async_client(redis_url)
    events = JobEvents(client, pattern=keys.events("*"), prefix=keys.events(""))
    before = pubsub_connections(redis_url)
    events.start()
    await _subscribed(events)
    own = pubsub_connections(redis_url) - before
    assert len(own) == 1  # the hub's subscription
    yield events, keys, client, own
    await events.close()
    await client.aclose()


async def _subscribed(events: JobEvents) -> None:
    # The hub counts what it receives; a probe on an unwatched job says it listens.
    for _ in range(100):
        await events.aredis.publish(events.prefix + "probe", "1")
        await asyncio.sleep(0.02)
        if events.messages:
            return
    raise AssertionError("the hub never received a message")


async def _heard(publisher: aioredis.Redis, channel: str, signal: JobSignal) -> bool:
    """Publishes on `channel` until `signal` is set (at most 5 s): whether it was."""
    for _ in range(50):
        await publisher.publish(channel, "1")
        await asyncio.sleep(0.1)
        if signal.is_set():
            return True
    return False


async def test_a_message_wakes_the_watchers_of_its_job_only(
    hub: Hub,
) -> None:
    events, keys, client, _ = hub
    with events.watching("a") as a1, events.watching("a") as a2, events.watching("b") as b:
        for signal in (a1, a2, b):
            signal.clear()
        await client.publish(keys.events("a"), "1")
        # Woken by the message, not by the safety net: the flag is what the message set.
        await asyncio.wait_for(a1.wait(), SAFETY_NET_S / 2)
        await a2.wait()
        assert a1.is_set() and a2.is_set()
        assert not b.is_set()
    assert events.watched() == 0  # the watchers went away with their blocks


async def test_many_watches_share_one_redis_connection(hub: Hub, redis_url: str) -> None:
    events, keys, client, own = hub

    async def watch(job: str) -> bool:
        with events.watching(job) as signal:
            signal.clear()
            await signal.wait()
            return signal.is_set()

    watches = [asyncio.create_task(watch(f"job{i}")) for i in range(50)]
    await asyncio.sleep(0.1)
    assert events.watched() == 50
    assert own <= pubsub_connections(redis_url)
    assert len(pubsub_connections(redis_url)) == len(own)  # none of their own
    for i in range(50):
        await client.publish(keys.events(f"job{i}"), "1")
    assert all(await asyncio.gather(*watches))


async def test_a_lost_subscription_comes_back(hub: Hub, redis_url: str) -> None:
    events, keys, client, own = hub
    (hub_id,) = own
    assert redis.Redis.from_url(redis_url).client_kill_filter(_id=hub_id) == 1
    with events.watching("c") as signal:
        signal.clear()
        # What is published while it is gone is not heard (watchers read the job again
        # every SAFETY_NET_S anyway); once it is back, messages wake watchers again.
        assert await _heard(client, keys.events("c"), signal)
    again = pubsub_connections(redis_url)
    assert hub_id not in again


async def test_watchers_are_woken_once_redis_comes_up(tmp_path: Path) -> None:
    # No Redis on the port yet: subscribing fails and is tried again, more slowly.
    port = free_port()
    client = async_client(f"redis://127.0.0.1:{port}/0")
    keys = Keys("t")
    events = JobEvents(client, pattern=keys.events("*"), prefix=keys.events(""))
    events.start()
    proc = None
    try:
        with events.watching("d") as signal:
            await asyncio.sleep(1.5)  # a few attempts fail meanwhile
            signal.clear()
            proc, url = start_redis(tmp_path, port=port)
            # Subscribed at last: whatever changed meanwhile was not heard, so every
            # watcher is told to read its job again...
            for _ in range(100):
                if signal.is_set():
                    break
                await asyncio.sleep(0.1)
            assert signal.is_set()
            signal.clear()
            # ...and messages reach the watchers from then on.
            publisher = aioredis.Redis.from_url(url)
            assert await _heard(publisher, keys.events("d"), signal)
            await publisher.aclose()
    finally:
        await events.close()
        await client.aclose()
        if proc is not None:
            proc.stop()
