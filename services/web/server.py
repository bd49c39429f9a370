"""`ragmesh serve web`: the ASGI app on uvicorn until SIGTERM or Ctrl-C."""

from __future__ import annotations

import uvicorn

from services.common import tracing
from services.common.config import CommonSettings
from services.common.logs import configure_logging
from services.web.app import create_app
from services.web.config import WebSettings


def run(port: int | None = None) -> None:
    common = CommonSettings()
    settings = WebSettings()
    configure_logging("web", common.log_level, common.log_format)
    # The OTEL_* variables are checked like every service's (a mistake stops it); the
    # provider it installs serves FastAPI's own request spans (docs/observability.md).
    tracing.configure("web")
    uvicorn.run(
        create_app(settings),
        host=common.bind_host,
        port=port if port is not None else settings.port,
        log_config=None,  # our handlers (configure_logging), not uvicorn's
        timeout_graceful_shutdown=int(common.shutdown_grace_s),
        # Many idle keep-alive connections from chat UIs: bound them.
        timeout_keep_alive=30,
        server_header=False,
    )
