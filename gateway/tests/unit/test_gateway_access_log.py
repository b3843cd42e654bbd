"""The access log: one line per request, with its route template, status and key id, never the
path or the key; written in batches, shaped as every other log line, and a setting turns it off."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
from collections.abc import AsyncIterator, Iterator
from typing import Any, cast

import httpx
import pytest
from asgi_lifespan import LifespanManager
from auth_fakes import HEADERS, OPERATOR_KEY, authenticator
from fastapi import FastAPI
from starlette.types import Scope

from regionstore_gateway.auth.authentication import PRINCIPAL_SCOPE_KEY
from regionstore_gateway.auth.roles import Principal, Role
from regionstore_gateway.edge.access_log import AccessLog, trace_id
from regionstore_gateway.main import create_app
from regionstore_gateway.settings import GatewaySettings
from regionstore_gateway.state import State
from regionstore_shared.logs import configure_logging

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
TRACEPARENT = f"00-{TRACE_ID}-00f067aa0ba902b7-01".encode()
KEY_ID = OPERATOR_KEY.split("_")[1]


class Written(list[str]):
    """Every write of lines; ``came`` is set at the first."""

    def __init__(self) -> None:
        super().__init__()
        self.came = asyncio.Event()

    def append(self, text: str) -> None:
        super().append(text)
        self.came.set()

    def lines(self) -> list[dict[str, Any]]:
        return [json.loads(line) for text in self for line in text.splitlines()]


def scope(*headers: tuple[bytes, bytes], principal: Principal | None = None) -> Scope:
    request: Scope = {"type": "http", "method": "GET", "path": "/v1/customers/c1", "headers": []}
    request["headers"] = list(headers)
    if principal is not None:
        request[PRINCIPAL_SCOPE_KEY] = principal
    return request


@pytest.fixture
def root_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


@pytest.fixture
def info() -> Iterator[None]:
    """The access logger at INFO, as configure_logging leaves it."""
    logger = logging.getLogger("regionstore_gateway.access")
    logger.setLevel(logging.INFO)
    yield
    logger.setLevel(logging.NOTSET)


@pytest.mark.usefixtures("info")
class TestAccessLog:
    async def test_a_line_per_request_written_together_later(self) -> None:
        written = Written()
        log = AccessLog("gateway", flush_after_s=0, write=written.append, clock=lambda: 0.25)
        reader = Principal("0123456789ab", Role.READER, "grafana")
        log.record(scope((b"traceparent", TRACEPARENT), principal=reader), "/v1/x/{id}", 200, 0.5)
        log.record(scope(), "unmatched", 401, 0.000_25)
        assert written == []
        await asyncio.wait_for(written.came.wait(), 5)  # the flush, due at once, runs on the loop
        (text,) = written
        first, second = written.lines()
        assert first == {
            "ts": "1970-01-01T00:00:00.250Z",
            "level": "INFO",
            "logger": "regionstore_gateway.access",
            "message": "GET /v1/x/{id} 200",
            "service": "gateway",
            "method": "GET",
            "route": "/v1/x/{id}",
            "status": 200,
            "duration_ms": 500.0,
            "key_id": "0123456789ab",
            "trace_id": TRACE_ID,
        }
        assert (second["status"], second["key_id"], second["trace_id"]) == (401, None, None)
        assert second["duration_ms"] == 0.25
        assert "/v1/customers/c1" not in text, "never the path"

    async def test_a_full_batch_is_written_at_once(self) -> None:
        written = Written()
        log = AccessLog("gateway", flush_after_s=60, max_waiting=3, write=written.append)
        for _ in range(7):
            log.record(scope(), "/healthz", 200, 0.001)
        assert [len(text.splitlines()) for text in written] == [3, 3]
        log.flush()
        assert [len(text.splitlines()) for text in written] == [3, 3, 1]
        log.flush()
        assert len(written) == 3

    async def test_nothing_is_recorded_when_info_is_off(self) -> None:
        written = Written()
        log = AccessLog("gateway", flush_after_s=0, write=written.append)
        logger = logging.getLogger("regionstore_gateway.access")
        logger.setLevel(logging.WARNING)
        try:
            log.record(scope(), "/healthz", 200, 0.001)
        finally:
            logger.setLevel(logging.NOTSET)
        log.flush()
        assert written == []

    def test_a_malformed_traceparent_gives_no_trace_id(self) -> None:
        assert trace_id(scope((b"traceparent", b"not-a-trace"))) is None


@contextlib.asynccontextmanager
async def gateway(settings: GatewaySettings) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient]]:
    @contextlib.asynccontextmanager
    async def open_state(_: FastAPI) -> AsyncIterator[State]:
        yield cast(State, {"auth": authenticator()})

    app = create_app(settings, open_state=open_state)
    async with LifespanManager(app) as manager:
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://gateway", headers=HEADERS
        ) as client:
            yield app, client


@pytest.fixture
def settings(monkeypatch: pytest.MonkeyPatch) -> GatewaySettings:
    for name in list(os.environ):
        if name.upper().startswith("REGIONSTORE_"):
            monkeypatch.delenv(name)
    return GatewaySettings()


@pytest.mark.usefixtures("root_logging")
class TestInTheGateway:
    async def test_requests_are_logged_as_every_other_line_is(
        self, settings: GatewaySettings, capsys: pytest.CaptureFixture[str]
    ) -> None:
        configure_logging("gateway", "INFO")
        async with gateway(settings) as (app, client):
            assert (await client.get("/v1/session")).status_code == 200
            refused = await client.get("/v1/customers/c1", headers={"Authorization": ""})
            assert refused.status_code == 401
            app.state.access_log.flush()
        out = capsys.readouterr().out
        lines = [json.loads(line) for line in out.splitlines()]
        session, anonymous = (line for line in lines if line["logger"].endswith(".access"))
        # (httpx, the test's client, logs the URL it asked for; the gateway never does.)
        access = "".join(line for line in out.splitlines(True) if ".access" in line)
        assert list(session)[:5] == ["ts", "level", "logger", "message", "service"]
        assert (session["route"], session["status"], session["key_id"]) == (
            "/v1/session",
            200,
            KEY_ID,
        )
        # Authentication answers before routing: no template, no key.
        assert (anonymous["route"], anonymous["status"], anonymous["key_id"]) == (
            "unmatched",
            401,
            None,
        )
        assert OPERATOR_KEY.split("_", 2)[2] not in out
        assert "/v1/customers/c1" not in access

    async def test_a_setting_turns_it_off(
        self, settings: GatewaySettings, capsys: pytest.CaptureFixture[str]
    ) -> None:
        configure_logging("gateway", "INFO")
        quiet = settings.model_copy(update={"access_log": False})
        async with gateway(quiet) as (app, client):
            assert (await client.get("/v1/session")).status_code == 200
        assert app.state.access_log is None
        assert "regionstore_gateway.access" not in capsys.readouterr().out
