"""How a background service runs: its work, a small HTTP listener for health and metrics, and a
clean stop on SIGTERM."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Callable, Coroutine, Generator
from dataclasses import dataclass, field
from typing import Any

import uvicorn
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from regionstore_shared.listening import listen
from regionstore_shared.logs import Outages, configure_logging
from regionstore_shared.settings import CommonSettings
from regionstore_shared.tracing import configure_tracing

log = logging.getLogger(__name__)


@dataclass
class ServiceState:
    """What the work shares with the health endpoints, and the outages its logs report."""

    stop: asyncio.Event = field(default_factory=asyncio.Event)
    ready: bool = False
    details: dict[str, object] = field(default_factory=dict)
    outages: Outages = field(default_factory=Outages)


class _QuietServer(uvicorn.Server):
    # The service owns SIGTERM so it can stop its work before the listener goes away.
    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


def _health_app(state: ServiceState) -> Starlette:
    async def healthz(_: Request) -> JSONResponse:
        return JSONResponse({"status": "alive"})

    async def readyz(_: Request) -> JSONResponse:
        body = {"ready": state.ready, **state.details}
        return JSONResponse(body, status_code=200 if state.ready else 503)

    async def metrics(_: Request) -> Response:
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    # /metrics answers itself, as the gateway's does; /metrics/ stays for scrapers configured
    # when it was a mounted app that redirected /metrics there.
    return Starlette(
        routes=[
            Route("/healthz", healthz),
            Route("/readyz", readyz),
            Route("/metrics", metrics),
            Route("/metrics/", metrics),
        ]
    )


async def run_service(
    settings: CommonSettings, work: Callable[[ServiceState], Coroutine[Any, Any, None]]
) -> None:
    """Run ``work`` until it returns or SIGTERM/SIGINT arrives, serving health and metrics."""
    state = ServiceState(outages=Outages(summary_every_s=settings.log_summary_s))
    configure_logging(
        settings.service_name,
        settings.log_level,
        summary_every_s=settings.log_summary_s,
        outages=state.outages,
    )
    configure_tracing(settings.service_name)
    # Before the work starts: a taken port ends the process at once (regionstore_shared.listening).
    sock = listen(settings.http.host, settings.http.port)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, state.stop.set)
    server = _QuietServer(
        uvicorn.Config(
            _health_app(state),
            log_config=None,
            access_log=False,
            lifespan="off",
        )
    )
    listener = asyncio.create_task(server.serve(sockets=[sock]), name="health-listener")
    worker = asyncio.create_task(work(state), name="work")
    stopper = asyncio.create_task(state.stop.wait(), name="stop-signal")
    log.info("service starting", extra={"port": settings.http.port})
    try:
        done, _ = await asyncio.wait(
            {worker, stopper, listener}, return_when=asyncio.FIRST_COMPLETED
        )
        if listener in done and not state.stop.is_set():
            listener.result()
            raise RuntimeError(f"health listener on port {settings.http.port} stopped")
        state.stop.set()
        await worker
    finally:
        state.ready = False
        for task in (worker, stopper):
            task.cancel()
        server.should_exit = True
        with contextlib.suppress(asyncio.CancelledError):
            await listener
        log.info("service stopped")
