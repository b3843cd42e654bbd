"""Request metrics by route template and status (and the access log's line for each)."""

from __future__ import annotations

import functools
import time

from prometheus_client import Counter, Histogram
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from regionstore_gateway.edge.access_log import AccessLog

REQUESTS = Counter(
    "regionstore_http_requests_total", "HTTP requests by route and status.", ["route", "status"]
)
LATENCY = Histogram(
    "regionstore_http_request_duration_seconds",
    "HTTP request latency by route.",
    ["route"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)


@functools.cache
def _series(route: str, status: int) -> tuple[Counter, Histogram]:
    # Bound once per route and status: labels() takes a lock and builds a key on every call.
    return REQUESTS.labels(route=route, status=str(status)), LATENCY.labels(route=route)


class RequestMetrics:
    """Counts requests and times them by route template and status; with ``access_log``, logs
    a line for each."""

    def __init__(self, app: ASGIApp, *, access_log: AccessLog | None = None) -> None:
        self.app = app
        self.access_log = access_log

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        code = 500

        async def capture(message: Message) -> None:
            nonlocal code
            if message["type"] == "http.response.start":
                code = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, capture)
        finally:
            seconds = time.perf_counter() - started
            route = getattr(scope.get("route"), "path", None) or "unmatched"
            requests, latency = _series(route, code)
            requests.inc()
            latency.observe(seconds)
            if self.access_log is not None:
                self.access_log.record(scope, route, code, seconds)
