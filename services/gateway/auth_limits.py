"""Failed authentications, rate-limited per source.

Guessing API keys costs one call per guess; this makes it cost time. Every
failed authentication (missing, malformed or unknown key) is counted against
the caller's source; a source with `max_failures` failures within the last
`window_s` seconds gets RESOURCE_EXHAUSTED / AUTH_RATE_LIMITED, with a RetryInfo
saying when its oldest counted failure leaves the window, for every call (even
one with a right key, so that a guess cannot be confirmed during the lockout).
A success does not clear the count: a tenant holding one good key must not be
able to interleave guesses at other tenants' keys.

A source is the client's IP address (an IPv6 client by its /64, the usual
size of one subscriber's network), taken from the TCP peer, or from
`x-forwarded-for` when the gateway is told how many proxies in front of it
append to that header. Memory is bounded: at most `max_sources` sources are
remembered, the one that failed least recently forgotten first.

No grpc here: the servicer hands in the peer string and the metadata.
"""

from __future__ import annotations

import ipaddress
import math
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable
from urllib.parse import unquote

from services.common.errors import ResourceExhausted

FORWARDED_FOR = "x-forwarded-for"
IPV6_PREFIX = 64


def _ip_source(text: str) -> str | None:
    """An IP address as a source key (IPv6 by /64, IPv4-mapped as IPv4); None if no IP."""
    text = text.strip().strip('"')
    if text.startswith("[") and "]" in text:  # [v6]:port
        text = text[1 : text.index("]")]
    elif text.count(":") == 1:  # v4:port
        text = text.split(":", 1)[0]
    try:
        address = ipaddress.ip_address(text.split("%", 1)[0])  # drop an IPv6 zone
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        network = ipaddress.IPv6Network((address, IPV6_PREFIX), strict=False)
        return str(network)
    return str(address)


def peer_source(peer: str) -> str:
    """The source of a gRPC peer string: `ipv4:1.2.3.4:5678` → `1.2.3.4`,
    `ipv6:[2001:db8::1]:5678` → `2001:db8::/64`; anything else (a Unix socket)
    as it is, without a port."""
    peer = unquote(peer or "")
    scheme, sep, rest = peer.partition(":")
    if sep and scheme in ("ipv4", "ipv6"):
        host = rest
        if scheme == "ipv4":
            host = rest.rsplit(":", 1)[0]
        elif rest.startswith("["):
            host = rest[1 : rest.index("]")] if "]" in rest else rest
        return _ip_source(host) or host
    return peer or "unknown"


def forwarded_entries(metadata: Iterable[tuple[str, str | bytes]] | None) -> list[str]:
    """Every address in the `x-forwarded-for` metadata, left (client) to right."""
    entries: list[str] = []
    for key, value in metadata or ():
        if key == FORWARDED_FOR:
            text = value.decode(errors="replace") if isinstance(value, bytes) else value
            entries += [e.strip() for e in text.split(",") if e.strip()]
    return entries


def client_source(
    peer: str,
    metadata: Iterable[tuple[str, str | bytes]] | None = None,
    trusted_proxy_hops: int = 0,
) -> str:
    """The source a call is counted against.

    With `trusted_proxy_hops` = N > 0 the gateway sits behind N proxies that each
    append the address they saw to `x-forwarded-for`; the N-th entry from the
    right is then the client's address as the outermost proxy saw it, and the
    entries left of it are whatever the client sent (never trusted). Without
    enough entries, or with an entry that is not an address, the TCP peer counts.
    """
    if trusted_proxy_hops > 0:
        entries = forwarded_entries(metadata)
        if len(entries) >= trusted_proxy_hops:
            source = _ip_source(entries[-trusted_proxy_hops])
            if source is not None:
                return source
    return peer_source(peer)


class FailedAuthLimiter:
    """Failed authentications per source within a sliding window."""

    def __init__(
        self,
        max_failures: int,
        window_s: float,
        max_sources: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.max_failures = max_failures
        self.window_s = window_s
        self.max_sources = max(1, max_sources)
        self._clock = clock
        # source → times of its latest failures (at most max_failures), oldest first;
        # ordered by the last failure, least recent first (the LRU to evict).
        self._failures: OrderedDict[str, deque[float]] = OrderedDict()

    @property
    def enabled(self) -> bool:
        return self.max_failures > 0 and self.window_s > 0

    def __len__(self) -> int:
        return len(self._failures)

    def _recent(self, source: str, now: float) -> deque[float] | None:
        times = self._failures.get(source)
        if times is None:
            return None
        while times and times[0] <= now - self.window_s:
            times.popleft()
        if not times:
            del self._failures[source]
            return None
        return times

    def blocked_for(self, source: str) -> float:
        """Seconds until `source` may try again; 0 when it may now."""
        if not self.enabled:
            return 0.0
        now = self._clock()
        times = self._recent(source, now)
        if times is None or len(times) < self.max_failures:
            return 0.0
        return max(0.0, times[0] + self.window_s - now)

    def check(self, source: str) -> None:
        """Raise AUTH_RATE_LIMITED while `source` is locked out."""
        wait = self.blocked_for(source)
        if wait > 0:
            raise ResourceExhausted(
                f"too many failed authentications from this address; try again in "
                f"{math.ceil(wait)} s",
                reason="AUTH_RATE_LIMITED",
                metadata={"limit": self.max_failures, "window_s": self.window_s},
                retry_after_s=math.ceil(wait * 1000) / 1000,
            )

    def record_failure(self, source: str) -> None:
        if not self.enabled:
            return
        now = self._clock()
        times = self._recent(source, now)
        if times is None:
            times = self._failures[source] = deque(maxlen=self.max_failures)
        times.append(now)
        self._failures.move_to_end(source)
        while len(self._failures) > self.max_sources:
            self._failures.popitem(last=False)
