"""What every route needs: the gateway client for the caller, and the settings."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request

from ragmesh.client.aio import AsyncRagmeshClient
from services.web.config import WebSettings

FORWARDED_FOR = "x-forwarded-for"
REQUEST_ID = "x-request-id"


@dataclass
class WebState:
    """The app's only state: settings and one channel to the gateway (no caller data)."""

    settings: WebSettings
    gateway: AsyncRagmeshClient


def state(request: Request) -> WebState:
    web: WebState = request.app.state.web
    return web


#: Longest request id passed on (the gateway makes its own for a longer one).
MAX_REQUEST_ID = 128
#: Longest `Authorization` passed on: gRPC refuses a call whose metadata passes 8 KiB
#: (RESOURCE_EXHAUSTED, which would read as a rate limit).
MAX_AUTHORIZATION = 4096
#: Forwarded-for entries passed on: the rightmost ones, which the gateway reads (its
#: RAGMESH_GATEWAY_TRUSTED_PROXY_HOPS counts from the right), each no longer than an
#: address can be.
MAX_FORWARDED_ENTRIES = 32
MAX_FORWARDED_ENTRY = 64
#: Sent instead of a key gRPC metadata cannot carry (not printable ASCII, or too long):
#: it can match no key (the gateway refuses keys under 8 characters), so the gateway
#: answers it as it answers any wrong key (401 INVALID_API_KEY) and counts the failure
#: against the caller's source like any other.
UNSENDABLE_KEY = "Bearer invalid"


def printable(value: str) -> bool:
    """Printable ASCII, all that an ASCII gRPC metadata value may hold (Starlette decodes
    header bytes as Latin-1, so any other byte is a character outside this range)."""
    return all(" " <= c <= "~" for c in value)


def _address_like(entry: str) -> bool:
    return 0 < len(entry) <= MAX_FORWARDED_ENTRY and printable(entry)


def forwarded_metadata(
    headers: Mapping[str, str], client_host: str | None
) -> list[tuple[str, str]]:
    """The gRPC metadata an HTTP request's headers become (`headers` by lower-case name):
    the caller's key (its `Authorization` header, verbatim: the gateway checks it), the
    request id, and `x-forwarded-for` with the caller's address appended, as a proxy
    does: the gateway counts failed keys per source (RAGMESH_GATEWAY_TRUSTED_PROXY_HOPS
    decides how far to the left it looks).

    Only what gRPC metadata can carry is passed on (printable ASCII; anything else
    failed the call): a key that is not printable (or too long) is sent as one that
    matches no key, a request id that is not (or is too long) is left out (the gateway
    makes one), and forwarded-for entries that are not printable or longer than an
    address are dropped (the gateway only reads the rightmost entries, which the proxies
    appended; at most MAX_FORWARDED_ENTRIES of them are passed on)."""
    metadata: list[tuple[str, str]] = []
    auth = headers.get("authorization")
    if auth:
        sendable = len(auth) <= MAX_AUTHORIZATION and printable(auth)
        metadata.append(("authorization", auth if sendable else UNSENDABLE_KEY))
    rid = headers.get(REQUEST_ID)
    if rid and len(rid) <= MAX_REQUEST_ID and printable(rid):
        metadata.append((REQUEST_ID, rid))
    chain = [
        entry
        for entry in (e.strip() for e in headers.get(FORWARDED_FOR, "").split(","))
        if _address_like(entry)
    ][-MAX_FORWARDED_ENTRIES:]
    # Checked too: behind a proxy it trusts, uvicorn takes the client's address from
    # X-Forwarded-For.
    if client_host and _address_like(client_host):
        chain.append(client_host)
    if chain:
        metadata.append((FORWARDED_FOR, ", ".join(chain)))
    return metadata


def caller_metadata(request: Request) -> list[tuple[str, str]]:
    """This request's caller as gRPC metadata (forwarded_metadata)."""
    client = request.client.host if request.client is not None else None
    return forwarded_metadata(request.headers, client)


def gateway(request: Request) -> AsyncRagmeshClient:
    """The gateway client, speaking for this request's caller."""
    return state(request).gateway.with_metadata(caller_metadata(request))


#: A route's parameter: the gateway client speaking for the caller.
Gateway = Annotated[AsyncRagmeshClient, Depends(gateway)]
