"""The web page at `/`: static files (HTML, CSS and JavaScript modules) shipped in
the package (services/web/static), served as they are — no build step, nothing
fetched from elsewhere. Every call the page makes goes to this service's own
REST, SSE and OpenAI-compatible endpoints with the key the person signed in with."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import FileResponse
from starlette.staticfiles import StaticFiles

STATIC_DIR = Path(__file__).with_name("static")

# The page runs only its own scripts and talks only to this origin; a script
# injected through a document's text (shown as text, never as HTML) still could not
# load anything or send the key elsewhere.
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
)
PAGE_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}


def mount_page(app: FastAPI) -> None:
    """`/` is the page; its assets are under `/static/`."""

    @app.get("/", include_in_schema=False)
    async def index() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html", headers=PAGE_HEADERS)

    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
