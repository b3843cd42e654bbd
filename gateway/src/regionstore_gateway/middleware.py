"""ASGI middleware: request size limits, and request metrics (and access log lines)."""

from __future__ import annotations

import functools
import json
import time

from fastapi import HTTPException
from prometheus_client import Counter, Histogram
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from regionstore_gateway.access_log import AccessLog

REQUESTS = Counter(
    "regionstore_http_requests_total", "HTTP requests by route and status.", ["route", "status"]
)
LATENCY = Histogram(
    "regionstore_http_request_duration_seconds",
    "HTTP request latency by route.",
    ["route"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)


class _TooLargeError(HTTPException):
    # An HTTPException, because FastAPI turns any other error raised while it reads the body
    # into a 400.
    def __init__(self, max_bytes: int) -> None:
        super().__init__(413, detail=_too_large(max_bytes))


def _too_large(max_bytes: int) -> list[dict[str, object]]:
    return [{"loc": ["body"], "msg": f"request body over {max_bytes} bytes", "type": "too_large"}]


class BodyLimit:
    """Answers 413 for a request body over the limit, declared or streamed."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await self._reject(send)
            return
        seen = 0
        started = False

        async def limited() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    raise _TooLargeError(self.max_bytes)
            return message

        async def tracking(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, limited, tracking)
        except _TooLargeError:
            if not started:
                await self._reject(send)

    async def _reject(self, send: Send) -> None:
        body = json.dumps(
            {
                "detail": [
                    {
                        "loc": ["body"],
                        "msg": f"request body over {self.max_bytes} bytes",
                        "type": "too_large",
                    }
                ]
            }
        ).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})


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
