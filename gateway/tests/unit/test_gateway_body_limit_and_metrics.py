"""BodyLimit: a request body over the limit is answered 413, however it arrives. RequestMetrics:
requests counted and timed by route and status. FastAPI's own OpenTelemetry stays out of it."""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import AsyncIterator, Callable
from typing import cast

import httpx
import pytest
from asgi_lifespan import LifespanManager
from auth_fakes import HEADERS, authenticator
from fastapi import FastAPI
from opentelemetry import _logs as otel_logs
from opentelemetry import metrics as otel_metrics
from opentelemetry import trace as otel_trace
from prometheus_client import REGISTRY
from starlette.types import Message, Receive, Scope, Send

from regionstore_gateway.edge.body_limit import BodyLimit
from regionstore_gateway.main import create_app
from regionstore_gateway.settings import ApiSettings, GatewaySettings
from regionstore_gateway.state import State

LIMIT = 10


class EchoApp:
    """Reads the whole body, then answers 200 with it."""

    def __init__(self, *, respond_first: bool = False) -> None:
        self.calls = 0
        self.respond_first = respond_first

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.calls += 1
        if scope["type"] != "http":
            return
        if self.respond_first:
            await send({"type": "http.response.start", "status": 200, "headers": []})
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        if not self.respond_first:
            await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": body})


class Exchange:
    """One request through an ASGI app, recording what it received and sent."""

    def __init__(self, chunks: list[bytes], content_length: int | None = None) -> None:
        headers = [(b"content-type", b"application/json")]
        if content_length is not None:
            headers.append((b"content-length", str(content_length).encode()))
        self.scope: Scope = {"type": "http", "method": "POST", "path": "/", "headers": headers}
        self.pending: list[Message] = [
            {"type": "http.request", "body": chunk, "more_body": i < len(chunks) - 1}
            for i, chunk in enumerate(chunks)
        ]
        self.received = 0
        self.sent: list[Message] = []

    async def receive(self) -> Message:
        self.received += 1
        return self.pending.pop(0) if self.pending else {"type": "http.disconnect"}

    async def send(self, message: Message) -> None:
        self.sent.append(message)

    async def run(self, app: BodyLimit) -> Exchange:
        await app(self.scope, self.receive, self.send)
        return self

    @property
    def status(self) -> int:
        (start,) = [m for m in self.sent if m["type"] == "http.response.start"]
        return int(start["status"])

    @property
    def body(self) -> bytes:
        return b"".join(m.get("body", b"") for m in self.sent if m["type"] == "http.response.body")


def too_large_detail(limit: int) -> dict[str, object]:
    return {
        "detail": [
            {"loc": ["body"], "msg": f"request body over {limit} bytes", "type": "too_large"}
        ]
    }


class TestBodyLimit:
    async def test_a_body_under_the_limit_passes_through(self) -> None:
        exchange = await Exchange([b"12345"], content_length=5).run(BodyLimit(EchoApp(), LIMIT))
        assert (exchange.status, exchange.body) == (200, b"12345")

    async def test_a_body_exactly_at_the_limit_passes(self) -> None:
        exchange = await Exchange([b"12345", b"67890"]).run(BodyLimit(EchoApp(), LIMIT))
        assert (exchange.status, exchange.body) == (200, b"1234567890")

    async def test_declared_length_over_the_limit_is_413_without_calling_the_app(self) -> None:
        app = EchoApp()
        exchange = await Exchange([b"x" * 11], content_length=11).run(BodyLimit(app, LIMIT))
        assert exchange.status == 413
        assert json.loads(exchange.body) == too_large_detail(LIMIT)
        start = exchange.sent[0]
        assert (b"content-type", b"application/json") in start["headers"]
        assert (b"content-length", str(len(exchange.body)).encode()) in start["headers"]
        assert app.calls == 0
        assert exchange.received == 0

    async def test_streamed_body_over_the_limit_is_413(self) -> None:
        exchange = await Exchange([b"x" * 6, b"x" * 6, b"x" * 6]).run(BodyLimit(EchoApp(), LIMIT))
        assert exchange.status == 413
        assert json.loads(exchange.body) == too_large_detail(LIMIT)
        assert exchange.received == 2  # stops reading at the chunk that crosses the limit

    async def test_an_understated_length_does_not_get_past_the_limit(self) -> None:
        exchange = await Exchange([b"x" * 8, b"x" * 8], content_length=4).run(
            BodyLimit(EchoApp(), LIMIT)
        )
        assert exchange.status == 413

    async def test_no_second_response_once_one_has_started(self) -> None:
        exchange = await Exchange([b"x" * 6, b"x" * 6]).run(
            BodyLimit(EchoApp(respond_first=True), LIMIT)
        )
        assert exchange.status == 200

    async def test_other_scopes_pass_through(self) -> None:
        app = EchoApp()
        sent: list[Message] = []

        async def receive() -> Message:
            return {"type": "lifespan.startup"}

        async def send(message: Message) -> None:
            sent.append(message)

        await BodyLimit(app, LIMIT)({"type": "lifespan"}, receive, send)
        assert (app.calls, sent) == (1, [])


@pytest.fixture
def gateway_settings(monkeypatch: pytest.MonkeyPatch) -> GatewaySettings:
    for name in list(os.environ):
        if name.upper().startswith("REGIONSTORE_"):
            monkeypatch.delenv(name)
    return GatewaySettings(api=ApiSettings(max_body_bytes=1024))


async def _chunks(count: int, size: int) -> AsyncIterator[bytes]:
    for _ in range(count):
        yield b" " * size


@contextlib.asynccontextmanager
async def _client(settings: GatewaySettings) -> AsyncIterator[httpx.AsyncClient]:
    """The real app with an authenticator as its only state, and the operator key."""

    @contextlib.asynccontextmanager
    async def open_state(_: FastAPI) -> AsyncIterator[State]:
        yield cast(State, {"auth": authenticator()})

    async with LifespanManager(create_app(settings, open_state=open_state)) as manager:
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://gateway", headers=HEADERS
        ) as client:
            yield client


class TestBodyLimitInTheGateway:
    """The same limit inside the real app, in process (no clients besides the key check)."""

    async def test_declared_length_over_the_limit_is_413(
        self, gateway_settings: GatewaySettings
    ) -> None:
        async with _client(gateway_settings) as client:
            response = await client.post(
                "/v1/customers", content=b" " * 2000, headers={"content-type": "application/json"}
            )
        assert response.status_code == 413
        assert response.json() == too_large_detail(1024)

    async def test_streamed_body_over_the_limit_is_413(
        self, gateway_settings: GatewaySettings
    ) -> None:
        # FastAPI turns any exception raised while it reads the body into "400 There was an
        # error parsing the body", so the limit must reach it as an HTTPException to survive.
        async with _client(gateway_settings) as client:
            response = await client.post(
                "/v1/customers",
                content=_chunks(4, 500),
                headers={"content-type": "application/json"},
            )
        assert response.status_code == 413
        assert response.json() == too_large_detail(1024)


def served(route: str, status: str) -> float:
    return (
        REGISTRY.get_sample_value(
            "regionstore_http_requests_total", {"route": route, "status": status}
        )
        or 0.0
    )


def timed(route: str) -> float:
    return (
        REGISTRY.get_sample_value(
            "regionstore_http_request_duration_seconds_count", {"route": route}
        )
        or 0.0
    )


class TestRequestMetrics:
    async def test_requests_are_counted_and_timed_by_route_template_and_status(
        self, gateway_settings: GatewaySettings
    ) -> None:
        before = (served("/healthz", "200"), timed("/healthz"), served("unmatched", "401"))
        async with _client(gateway_settings) as client:
            for _ in range(2):
                assert (await client.get("/healthz")).status_code == 200
            # Refused by authentication, before any route is matched.
            response = await client.get("/v1/customers/x", headers={"Authorization": ""})
            assert response.status_code == 401
        after = (served("/healthz", "200"), timed("/healthz"), served("unmatched", "401"))
        assert [b - a for a, b in zip(before, after, strict=True)] == [2, 2, 1]


class TestOpenTelemetry:
    async def test_fastapis_own_telemetry_is_never_consulted(
        self, gateway_settings: GatewaySettings, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        looked_up: list[str] = []

        def provider(kind: str) -> Callable[[], object]:
            def lookup() -> object:
                looked_up.append(kind)
                raise AssertionError(f"the {kind} provider was looked up")

            return lookup

        for kind, module in (
            ("tracer", otel_trace),
            ("meter", otel_metrics),
            ("logger", otel_logs),
        ):
            monkeypatch.setattr(module, f"get_{kind}_provider", provider(kind))
        async with _client(gateway_settings) as client:
            assert (await client.get("/healthz")).status_code == 200
            assert (
                await client.get("/v1/customers/x", headers={"Authorization": ""})
            ).status_code == 401
        assert looked_up == []
