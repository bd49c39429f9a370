"""The failed-authentication limit: sources from peers and x-forwarded-for, the
sliding window with its retry delay, and its bounded memory (fake clock)."""

from __future__ import annotations

import sys

import pytest

from services.common.errors import ResourceExhausted
from services.gateway.auth_limits import FailedAuthLimiter, client_source, peer_source


class FakeClock:
    def __init__(self) -> None:
        self.now = 500.0

    def __call__(self) -> float:
        return self.now


@pytest.mark.parametrize(
    ("peer", "source"),
    [
        ("ipv4:10.1.2.3:5555", "10.1.2.3"),
        ("ipv6:[2001:db8:1:2:3:4:5:6]:443", "2001:db8:1:2::/64"),
        ("ipv6:[2001:db8:1:2:ffff::9]:443", "2001:db8:1:2::/64"),  # same /64: same source
        ("ipv6:%5B2001:db8:1:3::1%5D:443", "2001:db8:1:3::/64"),  # percent-encoded
        ("ipv6:[::ffff:10.0.0.1]:80", "10.0.0.1"),  # IPv4-mapped
        ("unix:/run/ragmesh.sock", "unix:/run/ragmesh.sock"),
        ("", "unknown"),
    ],
)
def test_peer_sources(peer: str, source: str) -> None:
    assert peer_source(peer) == source


PEER = "ipv4:10.0.0.5:40000"  # the ingress controller's pod


@pytest.mark.parametrize(
    ("headers", "hops", "source"),
    [
        (["6.6.6.6, 203.0.113.9"], 0, "10.0.0.5"),  # not trusted by default
        (["6.6.6.6, 203.0.113.9"], 1, "203.0.113.9"),  # the entry the ingress appended
        (["6.6.6.6, 203.0.113.9"], 2, "6.6.6.6"),
        (["6.6.6.6", "203.0.113.9"], 1, "203.0.113.9"),  # repeated headers, in order
        (["203.0.113.9:5123"], 1, "203.0.113.9"),  # with a port
        (["[2001:db8::7]:443"], 1, "2001:db8::/64"),
        (["203.0.113.9"], 2, "10.0.0.5"),  # fewer entries than proxies: the peer
        (["unknown"], 1, "10.0.0.5"),  # not an address: the peer
        ([], 1, "10.0.0.5"),
    ],
)
def test_forwarded_for_counts_only_as_far_as_it_is_trusted(
    headers: list[str], hops: int, source: str
) -> None:
    metadata = [("x-forwarded-for", h) for h in headers] + [("authorization", "Bearer x")]
    assert client_source(PEER, metadata, hops) == source


def test_sliding_window_and_retry_delay() -> None:
    clock = FakeClock()
    limiter = FailedAuthLimiter(3, 10.0, clock=clock)
    for t in (0.0, 2.0, 4.0):
        clock.now = 500.0 + t
        limiter.check("a")
        limiter.record_failure("a")
    assert limiter.blocked_for("a") == pytest.approx(6.0)  # first failure at +0, now +4
    with pytest.raises(ResourceExhausted) as exc:
        limiter.check("a")
    err = exc.value
    assert (err.reason, err.retry_after_s) == ("AUTH_RATE_LIMITED", pytest.approx(6.0))
    assert err.metadata == {"limit": "3", "window_s": "10.0"}
    assert "try again in 6 s" in err.message
    limiter.check("b")  # other sources are not affected
    clock.now = 510.0  # +10: the first failure leaves the window
    limiter.check("a")
    limiter.record_failure("a")  # +10, +2, +4 within the window again
    assert limiter.blocked_for("a") == pytest.approx(2.0)
    clock.now = 530.0  # all gone: the source is forgotten
    limiter.check("a")
    assert limiter.blocked_for("a") == 0.0 and len(limiter) == 0


def test_memory_is_bounded_least_recent_failure_forgotten_first() -> None:
    clock = FakeClock()
    limiter = FailedAuthLimiter(2, 60.0, max_sources=3, clock=clock)
    for source in ("a", "b", "c"):
        limiter.record_failure(source)
        limiter.record_failure(source)
    limiter.record_failure("a")  # a is now the most recent
    limiter.record_failure("d")  # evicts b, the least recent
    assert len(limiter) == 3
    assert limiter.blocked_for("a") > 0 and limiter.blocked_for("c") > 0
    assert limiter.blocked_for("b") == 0.0


def test_many_sources_stay_within_the_bound() -> None:
    clock = FakeClock()
    limiter = FailedAuthLimiter(10, 60.0, max_sources=1000, clock=clock)
    for i in range(20_000):
        limiter.record_failure(f"10.{i // 65536}.{i // 256 % 256}.{i % 256}")
    assert len(limiter) == 1000
    per_source = sum(sys.getsizeof(d) for d in limiter._failures.values()) / len(limiter)
    assert per_source < 1000  # a deque of at most 10 floats


def test_disabled_limit() -> None:
    for limiter in (FailedAuthLimiter(0, 60.0), FailedAuthLimiter(5, 0.0)):
        for _ in range(50):
            limiter.record_failure("a")
        limiter.check("a")
        assert not limiter.enabled and len(limiter) == 0
