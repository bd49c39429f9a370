"""The worker's Redis broker transport: kombu's, with one fix so that a worker
survives its broker going away.

When the connection to Redis breaks, Celery (5.7) first collects the broken
connection, which detaches the transport from its connection info, and then
closes it; closing the channel gives the unacknowledged messages back, which
builds a Redis client from that connection info — now None — and raises
AttributeError. That is not a connection error, so nothing ignores it and the
worker's main process dies ("Unrecoverable error") instead of reconnecting
(seen in the chaos run whenever Redis restarted under a busy worker). Here a
detached channel raises redis's ConnectionError instead, which kombu and
Celery ignore while closing; the messages stay in Redis's unacked set, from
which kombu restores them after the visibility timeout, and the gateway's
reaper sends their jobs again sooner (services/jobs/reaper.py).
"""

from __future__ import annotations

from typing import Any

from kombu.transport import redis as kombu_redis
from redis.exceptions import ConnectionError as RedisConnectionError


class Channel(kombu_redis.Channel):
    def _connparams(self, asynchronous: bool = False) -> Any:
        if self.connection is None or self.connection.client is None:
            raise RedisConnectionError("the broker connection is closed")
        return super()._connparams(asynchronous=asynchronous)


class Transport(kombu_redis.Transport):
    Channel = Channel


#: Celery's `broker_transport` setting (the URL stays redis://…)
TRANSPORT = f"{__name__}:Transport"
