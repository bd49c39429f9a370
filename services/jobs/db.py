"""The Redis connection of the ingestion state and its transaction and paging
helpers. Blocking (redis-py): the gateway calls it through `asyncio.to_thread`,
the worker directly."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, TypeVar

import redis
import redis.asyncio as aioredis
from redis.asyncio.retry import Retry as AsyncRetry
from redis.backoff import ExponentialBackoff
from redis.retry import Retry

from services.common.api import decode_page_token, encode_page_token
from services.common.errors import ServiceError, Unavailable
from services.jobs.keys import Keys

T = TypeVar("T")


def page_scope(index: str, reverse: bool = False) -> str:
    """What a page token of `index` is bound to: the zset and the order."""
    return f"{index}|newest-first" if reverse else index


class RedisDb:
    def __init__(self, client: redis.Redis, keys: Keys | None = None) -> None:
        # Any: redis-py's types cannot tell that replies are bytes here.
        self.r: Any = client
        self.keys = keys or Keys()

    @classmethod
    def from_url(cls, url: str, prefix: str = "rm") -> RedisDb:
        client = redis.Redis.from_url(url, **client_options())
        return cls(client, Keys(prefix))

    def ping(self) -> bool:
        return bool(self.r.ping())

    def close(self) -> None:
        self.r.close()

    def txn(self, body: Callable[[Any], T], *watch: str) -> T:
        """Run `body(pipe)` in WATCH/MULTI, again whenever a watched key changed.

        `body` reads through the pipe (immediate mode), may watch more keys, then
        calls `pipe.multi()` and queues its writes.
        """
        with self.r.pipeline() as pipe:
            while True:
                try:
                    if watch:
                        pipe.watch(*watch)
                    result = body(pipe)
                    pipe.execute()
                    return result
                except redis.WatchError:
                    continue

    def page(
        self, index: str, page_size: int, page_token: str, *, reverse: bool = False
    ) -> tuple[list[str], str]:
        """A page of a lexicographically ordered zset (`reverse`: from its end), after
        the token's member (a token of this zset's pages in this order only)."""
        scope = page_scope(index, reverse)
        after = decode_page_token(page_token, scope, str)
        if reverse:
            start = "+" if after is None else "(" + after
            raw = self.r.zrevrangebylex(index, start, "-", start=0, num=page_size + 1)
        else:
            start = "-" if after is None else "(" + after
            raw = self.r.zrangebylex(index, start, "+", start=0, num=page_size + 1)
        members = [m.decode() for m in raw]
        if len(members) > page_size:
            members = members[:page_size]
            return members, encode_page_token(members[-1], scope)
        return members, ""

    def hashes(self, keys: Iterable[str]) -> list[dict[bytes, bytes]]:
        """HGETALL of each key in one round trip ({} where a key is missing)."""
        pipe = self.r.pipeline(transaction=False)
        for key in keys:
            pipe.hgetall(key)
        return list(pipe.execute())


def client_options() -> dict[str, Any]:
    """Options of every Redis client of the ingestion state: a command that meets
    a connection Redis dropped (a restart) is sent again on a new one, with a
    short backoff, instead of failing the caller's request."""
    return {
        "socket_timeout": 10,
        "socket_connect_timeout": 5,
        "health_check_interval": 15,
        "retry": Retry(ExponentialBackoff(cap=1.0, base=0.05), 3),
        "retry_on_error": [redis.ConnectionError, redis.TimeoutError],
    }


def async_client(url: str) -> aioredis.Redis:
    """An asyncio client (pub/sub for watches, the hot reads of Search and Ask)
    with the same reconnection as the blocking one."""
    return aioredis.Redis.from_url(
        url,
        socket_timeout=10,
        socket_connect_timeout=5,
        health_check_interval=15,
        retry=AsyncRetry(ExponentialBackoff(cap=1.0, base=0.05), 3),
        retry_on_error=[redis.ConnectionError, redis.TimeoutError],
    )


def translate_redis_error(exc: BaseException) -> ServiceError | None:
    """Redis down, unreachable or still loading its data: UNAVAILABLE (callers
    retry), never INTERNAL. Other exceptions: not ours to translate."""
    if isinstance(exc, redis.ConnectionError | redis.TimeoutError | redis.BusyLoadingError):
        return Unavailable("Redis is unavailable", reason="REDIS_UNAVAILABLE")
    return None
