"""The web service's ASGI app: the OpenAI-compatible API, the REST + SSE mapping,
MCP at /mcp, health endpoints and the OpenAPI schema (/openapi.json, /docs)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException
from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

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
from services.web.errors import ERROR_RESPONSES, HttpError, from_exception
from services.web.limits import MCP_PREFIX, BodyLimit, BodyTooLarge
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


def error_response(err: HttpError, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(
        err.body(), status_code=err.status, headers={**(headers or {}), **err.headers()}
    )


PARAM_PLACES = frozenset({"body", "query", "path", "header", "cookie"})


def validation_error(exc: RequestValidationError) -> HttpError:
    """FastAPI's validation errors, precisely: bad JSON, or the first field that is wrong."""
    errors = exc.errors()
    first = errors[0] if errors else {}
    # The field's path, without where it was (body, query, path, header): `page_size`.
    loc = [str(p) for p in first.get("loc", ())]
    if loc and loc[0] in PARAM_PLACES:
        loc = loc[1:]
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


#: The methods a 405's `Allow` header may list (HEAD goes with GET: HeadAsGet).
METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")


def allowed_methods(request: Request) -> str:
    """The `Allow` header of a 405: the methods some route takes at this path. (The
    route that refused knows only its own; here each method of a path is a route.)"""
    scope = request.scope
    methods: set[str] = set()
    for method in METHODS:
        probe = {
            "type": "http",
            "method": method,
            "path": scope["path"],
            "root_path": scope.get("root_path", ""),
            "headers": scope.get("headers", []),
        }
        if any(route.matches(probe)[0] == Match.FULL for route in request.app.router.routes):
            methods.add(method)
    if "GET" in methods:
        methods.add("HEAD")
    return ", ".join(sorted(methods))


def install_error_handlers(app: FastAPI) -> None:
    """Errors the handlers raise, answered by Starlette's ExceptionMiddleware; any
    other exception is UnexpectedErrors' (below)."""

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
        headers = dict(exc.headers or {})
        if exc.status_code == 404:
            err: ServiceError = NotFound(
                f"no such path: {request.url.path}", reason="NO_SUCH_ROUTE"
            )
        elif exc.status_code == 405:
            headers["Allow"] = allowed_methods(request) or headers.get("Allow", "")
            err = InvalidArgument(
                f"{request.method} is not allowed here; allowed: {headers['Allow']}",
                reason="METHOD_NOT_ALLOWED",
            )
        else:
            err = InvalidArgument(str(exc.detail), reason="INVALID_REQUEST_BODY")
        http = from_exception(err)
        http.status = exc.status_code
        return error_response(http, headers)

    app.add_exception_handler(RagmeshError, on_error)
    app.add_exception_handler(ServiceError, on_error)
    app.add_exception_handler(RequestValidationError, on_validation)
    app.add_exception_handler(HTTPException, on_http)
    # Not `Exception`: Starlette gives that handler to its ServerErrorMiddleware, which
    # answers with it and then raises the exception again, for the server to log a
    # second traceback.


class UnexpectedErrors:
    """Any other exception a request raised: logged once (errors.from_exception) and
    answered 500 INTERNAL_ERROR in the API's shape. One raised after the answer started
    goes on to the server, which logs it and cuts the answer short."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracked(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, tracked)
        except Exception as exc:
            if started:
                raise
            await error_response(from_exception(exc))(scope, receive, send)


class HeadAsGet:
    """HEAD answered as GET without the body (FastAPI's routes take only the methods
    they declare). The answer ends with its headers: a stream (server-sent events) is
    not run on."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] != "http"
            or scope["method"] != "HEAD"
            or str(scope.get("path", "")).startswith(MCP_PREFIX)
        ):
            await self.app(scope, receive, send)
            return
        done = False

        async def bodiless(message: Message) -> None:
            nonlocal done
            if done:
                return
            if message["type"] == "http.response.body":
                done = True
                message = {"type": "http.response.body", "body": b"", "more_body": False}
            await send(message)

        # A copy: the server reads its own scope's method to leave the body out too.
        await self.app({**scope, "method": "GET"}, receive, bodiless)


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
        # A `text` field is the document, as a `file` part is: the same limit (the
        # multipart parser's default is 1 MiB for a field).
        form_limits={"max_part_size": settings.max_upload_bytes},
    )
    install_error_handlers(app)
    app.include_router(routes_openai.router, responses=ERROR_RESPONSES)
    app.include_router(routes_rest.router, responses=ERROR_RESPONSES)
    app.include_router(routes_job_actions.router, responses=ERROR_RESPONSES)
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
    app.add_middleware(HeadAsGet)
    app.add_middleware(UnexpectedErrors)  # the outermost of ours
    return app
