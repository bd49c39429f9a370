"""What every route needs: the gateway client for the caller, and the settings."""

from __future__ import annotations

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


def caller_metadata(request: Request) -> list[tuple[str, str]]:
    """The caller's key (its `Authorization` header, verbatim: the gateway checks it),
    the request id, and `x-forwarded-for` with the caller's address appended, as a
    proxy does: the gateway counts failed keys per source
    (RAGMESH_GATEWAY_TRUSTED_PROXY_HOPS decides how far to the left it looks)."""
    metadata: list[tuple[str, str]] = []
    auth = request.headers.get("authorization")
    if auth:
        metadata.append(("authorization", auth))
    rid = request.headers.get(REQUEST_ID)
    if rid:
        metadata.append((REQUEST_ID, rid[:128]))
    chain = [e.strip() for e in request.headers.get(FORWARDED_FOR, "").split(",") if e.strip()]
    if request.client is not None and request.client.host:
        chain.append(request.client.host)
    if chain:
        metadata.append((FORWARDED_FOR, ", ".join(chain)))
    return metadata


def gateway(request: Request) -> AsyncRagmeshClient:
    """The gateway client, speaking for this request's caller."""
    return state(request).gateway.with_metadata(caller_metadata(request))


#: A route's parameter: the gateway client speaking for the caller.
Gateway = Annotated[AsyncRagmeshClient, Depends(gateway)]
