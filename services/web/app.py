"""The web service's ASGI app: the OpenAI-compatible API, the REST + SSE mapping,
MCP at /mcp, health endpoints and the OpenAPI schema (/openapi.json, /docs)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException

from ragmesh.client.aio import AsyncRagmeshClient
from ragmesh.client.config import ClientSettings
from ragmesh.client.errors import RagmeshError
from ragmesh.client.retry import NO_RETRY
from services.common.config import ServiceAddresses
from services.common.errors import InvalidArgument, NotFound, ServiceError
from services.common.trace_interceptors import aio_client_interceptors
from services.web import routes_job_actions, routes_openai, routes_rest
from services.web.config import WebSettings
from services.web.deps import WebState
from services.web.errors import HttpError, from_exception
from services.web.limits import BodyLimit, BodyTooLarge
from services.web.page import mount_page

DESCRIPTION = """\
ragmesh over HTTP. **OpenAI-compatible**: `POST /v1/chat/completions` with
`model: "ragmesh/<knowledge base>"` (streamed as server-sent events with
`stream: true`), `GET /v1/models`. **REST**: knowledge bases, documents (multipart
upload), ingestion jobs (watched as server-sent events) and search under `/api/v1`.
**MCP** (streamable HTTP) at `/mcp`. Every call needs `Authorization: Bearer <API key>`
(the gateway's keys). Errors are OpenAI's shape: `{"error": {"message", "type",
"code": "<REASON>", "status": "<gRPC code>"}}`.
"""


def gateway_client(settings: WebSettings) -> AsyncRagmeshClient:
    """One channel to the gateway for every caller; each request sends its own key.
    No client-side retries: a 429 or 503 goes back to the HTTP caller with Retry-After."""
    addr = ServiceAddresses().gateway_addr
    client = ClientSettings.resolve(
        addr,
        "",
        tls=True if settings.gateway_tls else None,
        ca_file=settings.gateway_ca_file or None,
        read_file=False,
    )
    return AsyncRagmeshClient(
        addr,
        "",
        tls=client.tls,
        ca_file=client.ca_file or None,
        retry=NO_RETRY,
        # CLIENT spans, children of FastAPI's own span of the HTTP request (its native
        # OpenTelemetry support, on the provider tracing.configure installed), so that
        # the gateway continues the HTTP caller's trace
        interceptors=aio_client_interceptors(),
    )


def error_response(err: HttpError) -> JSONResponse:
    return JSONResponse(err.body(), status_code=err.status, headers=err.headers())


def validation_error(exc: RequestValidationError) -> HttpError:
    """FastAPI's validation errors, precisely: bad JSON, or the first field that is wrong."""
    errors = exc.errors()
    first = errors[0] if errors else {}
    loc = [str(p) for p in first.get("loc", ()) if p != "body"]
    if first.get("type") == "json_invalid":
        ctx = first.get("ctx") or {}
        err = InvalidArgument(
            f"the body is not valid JSON: {ctx.get('error', first.get('msg', ''))}",
            reason="MALFORMED_JSON",
        )
    else:
        where = ".".join(loc) or "body"
        err = InvalidArgument(
            f"{where}: {first.get('msg', 'invalid')}",
            reason="INVALID_REQUEST_BODY",
            metadata={"param": where, "problems": str(len(errors))},
        )
    return from_exception(err)


def install_error_handlers(app: FastAPI) -> None:
    async def on_error(_: Request, exc: Exception) -> Response:
        return error_response(from_exception(exc))

    async def on_validation(_: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        return error_response(validation_error(exc))

    async def on_http(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        if isinstance(exc, BodyTooLarge):
            return error_response(from_exception(exc.error()))
        if isinstance(exc.__cause__, BodyTooLarge):
            return error_response(from_exception(exc.__cause__.error()))
        if exc.status_code == 404:
            err: ServiceError = NotFound(
                f"no such path: {request.url.path}", reason="NO_SUCH_ROUTE"
            )
        elif exc.status_code == 405:
            err = InvalidArgument("method not allowed here", reason="METHOD_NOT_ALLOWED")
        else:
            err = InvalidArgument(str(exc.detail), reason="INVALID_REQUEST_BODY")
        http = from_exception(err)
        http.status = exc.status_code
        return error_response(http)

    app.add_exception_handler(RagmeshError, on_error)
    app.add_exception_handler(ServiceError, on_error)
    app.add_exception_handler(RequestValidationError, on_validation)
    app.add_exception_handler(HTTPException, on_http)
    app.add_exception_handler(Exception, on_error)


def create_app(
    settings: WebSettings | None = None, client: AsyncRagmeshClient | None = None
) -> FastAPI:
    settings = settings or WebSettings()
    base: list[AsyncRagmeshClient] = []  # set at startup: the MCP tools use it too
    mcp_app = None
    mcp = None
    if settings.mcp_enabled:
        from services.web.mcp_http import build_http_mcp

        mcp, mcp_app = build_http_mcp(settings, lambda: base[0])

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        gateway = client or gateway_client(settings)
        base[:] = [gateway]
        app.state.web = WebState(settings, gateway)
        async with contextlib.AsyncExitStack() as stack:
            if mcp is not None:
                await stack.enter_async_context(mcp.session_manager.run())
            try:
                yield
            finally:
                if client is None:
                    await gateway.close()

    app = FastAPI(
        title="ragmesh",
        version="0.1.0",
        description=DESCRIPTION,
        lifespan=lifespan,
        docs_url="/docs",
        redoc_url=None,
    )
    install_error_handlers(app)
    app.include_router(routes_openai.router)
    app.include_router(routes_rest.router)
    app.include_router(routes_job_actions.router)
    if mcp_app is not None:
        # The MCP app's own route (/mcp), served by this app.
        app.router.routes.extend(mcp_app.routes)

    @app.get("/healthz", tags=["health"], summary="Liveness: the process serves HTTP")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", tags=["health"], summary="Readiness: the gateway is SERVING")
    async def readyz(request: Request) -> Response:
        state: WebState = request.app.state.web
        try:
            status = await state.gateway.health(timeout=2.0)
        except RagmeshError as err:
            status = err.code_name  # the details name the gateway's address: logs only
        code = 200 if status == "SERVING" else 503
        return JSONResponse(
            {"status": "ok" if code == 200 else "unavailable", "gateway": status}, status_code=code
        )

    mount_page(app)  # the web page at /

    app.add_middleware(BodyLimit, settings=settings)
    return app
