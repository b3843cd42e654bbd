"""The gateway: HTTP API, original routes and the web console."""

from __future__ import annotations

import functools
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from pathlib import Path

import uvicorn
from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

from regionstore_gateway.api import batch, customers, errors, health, legacy, regions
from regionstore_gateway.middleware import BodyLimit, RequestMetrics
from regionstore_gateway.settings import GatewaySettings
from regionstore_gateway.state import State, lifespan
from regionstore_shared.logs import configure_logging

STATIC_DIR = Path(__file__).parent / "static"


def create_app(
    settings: GatewaySettings | None = None,
    *,
    open_state: Callable[[FastAPI], AbstractAsyncContextManager[State]] | None = None,
) -> FastAPI:
    """The ASGI app, with its clients opened by the lifespan (or by ``open_state``: fakes)."""
    settings = settings or GatewaySettings()
    app = FastAPI(
        title="regionstore",
        version="0.1.0",
        summary="Multi-region customer store with hinted handoff through Kafka.",
        lifespan=open_state or functools.partial(lifespan, settings),
    )
    for router in (health.router, customers.router, batch.router, regions.router, legacy.router):
        app.include_router(router)
    errors.install(app, retry_after_s=settings.api.retry_after_s)
    app.add_middleware(BodyLimit, max_bytes=settings.api.max_body_bytes)
    app.add_middleware(RequestMetrics)
    if STATIC_DIR.is_dir():
        app.mount("/", StaticFiles(directory=STATIC_DIR, html=True), name="console")
    return app


def main() -> None:
    """Serve the gateway with uvicorn until SIGTERM."""
    settings = GatewaySettings()
    configure_logging(settings.service_name, settings.log_level)
    uvicorn.run(
        create_app(settings),
        host=settings.http.host,
        port=settings.http.port,
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=10,
    )
