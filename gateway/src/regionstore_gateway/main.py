"""The gateway: HTTP API, original routes and the web console."""

from __future__ import annotations

import atexit
import functools
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from importlib.metadata import version
from pathlib import Path

import uvicorn
from fastapi import Depends, FastAPI
from starlette.types import Scope

from regionstore_gateway.api import batch, customers, errors, health, legacy, regions, session
from regionstore_gateway.api.query import each_parameter_once
from regionstore_gateway.auth import check_routes
from regionstore_gateway.auth.authentication import Authentication
from regionstore_gateway.edge.access_log import AccessLog
from regionstore_gateway.edge.body_limit import BodyLimit
from regionstore_gateway.edge.console import mount_console
from regionstore_gateway.edge.openapi import install as install_openapi
from regionstore_gateway.edge.plain_create import PlainCreates, create_route
from regionstore_gateway.edge.request_metrics import RequestMetrics
from regionstore_gateway.edge.security_headers import SecurityHeaders, docs_policies
from regionstore_gateway.edge.timeouts import BodyTimeout, head_timeout_protocol
from regionstore_gateway.settings import GatewaySettings
from regionstore_gateway.state import State, lifespan
from regionstore_shared.listening import STARTUP_FAILURE, listen
from regionstore_shared.logs import configure_logging
from regionstore_shared.tracing import configure_tracing, tracing_enabled

STATIC_DIR = Path(__file__).parent / "static"
UNTRACED_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})


def create_app(
    settings: GatewaySettings | None = None,
    *,
    open_state: Callable[[FastAPI], AbstractAsyncContextManager[State]] | None = None,
) -> FastAPI:
    """The ASGI app, with its clients opened by the lifespan (or by ``open_state``: fakes)."""
    settings = settings or GatewaySettings()
    app = FastAPI(
        title="regionstore",
        # The project's one version, as installed: every member of the workspace carries it.
        version=version("regionstore-gateway"),
        summary="Multi-region customer store with hinted handoff through Kafka.",
        lifespan=open_state or functools.partial(lifespan, settings),
        dependencies=[Depends(each_parameter_once)],
        # ReDoc needs inline styles (and a blob: worker); /docs is the one docs page.
        redoc_url=None,
        # Metrics are Prometheus's and logs are JSON lines; traces are FastAPI's own server
        # spans, only once main configured tracing: unconfigured, FastAPI still looked its
        # providers up on every request. Operation spans (each dependency, the endpoint, the
        # serialization) would triple the spans of a write for little: the trace shows the
        # request, the publish and every region's apply.
        telemetry={
            "tracing": tracing_enabled(),
            "metrics": False,
            "logs": False,
            "operation_spans": False,
            # Configured by regionstore_shared.tracing, once, for every service alike.
            "auto_configure": False,
            "exclude": _untraced,
        },
    )
    routers = (health.router, customers.router, batch.router, regions.router, legacy.router)
    for router in (*routers, session.router):
        app.include_router(router)
    open_paths = _open_paths(app)
    check_routes(app.routes, open_paths)
    errors.install(app, retry_after_s=settings.api.retry_after_s)
    install_openapi(app, settings)
    # Added first, so it runs last: every other middleware has had its say by then.
    app.add_middleware(PlainCreates, route=create_route(), handlers=app.exception_handlers)
    app.add_middleware(BodyLimit, max_bytes=settings.api.max_body_bytes)
    app.add_middleware(
        Authentication, open_paths=open_paths, retry_after_s=settings.api.retry_after_s
    )
    app.add_middleware(BodyTimeout, timeout_s=settings.api.body_timeout_s)
    app.state.access_log = AccessLog(settings.service_name) if settings.access_log else None
    app.add_middleware(RequestMetrics, access_log=app.state.access_log)
    app.add_middleware(SecurityHeaders, docs=docs_policies(app))
    if STATIC_DIR.is_dir():
        mount_console(app, STATIC_DIR)
    return app


def _untraced(scope: Scope) -> bool:
    """Probes and scrapes, a trace a second each, that nobody follows."""
    return scope.get("path") in UNTRACED_PATHS


def _open_paths(app: FastAPI) -> frozenset[str]:
    """Paths any caller may read: health, the API's documents and the console's files."""
    docs = (app.openapi_url, app.docs_url, app.swagger_ui_oauth2_redirect_url, app.redoc_url)
    paths = {"/healthz", "/readyz", *(url for url in docs if url)}
    if STATIC_DIR.is_dir():
        files = [f for f in STATIC_DIR.rglob("*") if f.is_file()]
        paths.update(f"/{f.relative_to(STATIC_DIR).as_posix()}" for f in files)
        # StaticFiles(html=True) serves a directory's index.html at the directory's path.
        for index in (f for f in files if f.name == "index.html"):
            folder = index.parent.relative_to(STATIC_DIR).as_posix()
            paths.update({"/"} if folder == "." else {f"/{folder}", f"/{folder}/"})
    return frozenset(paths)


def main() -> None:
    """Serve the gateway with uvicorn until SIGTERM; exit 3 at once when its port is taken."""
    settings = GatewaySettings()
    configure_logging(settings.service_name, settings.log_level)
    configure_tracing(settings.service_name)
    # Before the app opens its clients: see regionstore_shared.listening.
    sock = listen(settings.http.host, settings.http.port)
    app = create_app(settings)
    if app.state.access_log is not None:
        # The lines of the last tenth of a second, once the server has stopped.
        atexit.register(app.state.access_log.flush)
    config = uvicorn.Config(
        app,
        http=head_timeout_protocol(settings.api.header_timeout_s),
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=10,
    )
    server = uvicorn.Server(config)
    server.run(sockets=[sock])
    if not server.started:
        # As uvicorn.run: the app's startup failed.
        raise SystemExit(STARTUP_FAILURE)
