"""The console's files yield to the API: an API path's 405 names the route's own methods."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator

import httpx
import pytest
import pytest_asyncio
from fastapi.staticfiles import StaticFiles
from starlette.routing import Match, Route

from regionstore_gateway.edge.console import ConsoleMount
from regionstore_gateway.main import STATIC_DIR, create_app
from regionstore_gateway.settings import GatewaySettings


def scope(method: str, path: str) -> dict[str, object]:
    return {"type": "http", "method": method, "path": path, "root_path": "", "headers": []}


class TestConsoleMount:
    @staticmethod
    def mount() -> ConsoleMount:
        async def endpoint() -> None:
            raise AssertionError  # pragma: no cover

        routes = [Route("/v1/x", endpoint, methods=["POST"]), Route("/v1/x", endpoint)]
        return ConsoleMount("/", app=StaticFiles(directory=STATIC_DIR), routes=routes)

    @pytest.mark.parametrize("method", ["GET", "HEAD"])
    def test_reads_of_other_paths_are_files(self, method: str) -> None:
        match, child = self.mount().matches(scope(method, "/app.js"))
        assert match is Match.FULL
        assert "regionstore.allowed_methods" not in child

    @pytest.mark.parametrize("method", ["OPTIONS", "PUT", "DELETE"])
    def test_an_api_path_with_another_method_gets_every_method_of_the_path(
        self, method: str
    ) -> None:
        match, child = self.mount().matches(scope(method, "/v1/x"))
        assert match is Match.FULL
        assert child["regionstore.allowed_methods"] == {"POST", "GET", "HEAD"}

    def test_other_methods_on_files_match_only_partly(self) -> None:
        assert self.mount().matches(scope("POST", "/app.js"))[0] is Match.PARTIAL


@pytest_asyncio.fixture
async def client(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[httpx.AsyncClient]:
    for name in list(os.environ):
        if name.upper().startswith("REGIONSTORE_"):
            monkeypatch.delenv(name)
    transport = httpx.ASGITransport(app=create_app(GatewaySettings()))
    async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as http:
        yield http


class TestInTheGateway:
    async def test_the_console_is_served(self, client: httpx.AsyncClient) -> None:
        assert STATIC_DIR.is_dir()
        response = await client.get("/")
        assert response.status_code == 200
        assert "text/html" in response.headers["content-type"]

    async def test_a_file_takes_no_other_method(self, client: httpx.AsyncClient) -> None:
        response = await client.post("/app.js")
        assert response.status_code == 405
        assert response.headers["allow"] == "GET, HEAD"

    async def test_an_api_path_answers_405_with_all_its_methods(
        self, client: httpx.AsyncClient
    ) -> None:
        # Not the files' 405: the route's (/healthz is open, so no key store is needed).
        response = await client.post("/healthz")
        assert response.status_code == 405
        assert response.headers["allow"] == "GET"
        assert response.json() == {"detail": "Method Not Allowed"}

    async def test_a_body_that_is_not_utf8_is_422_on_the_body(
        self, client: httpx.AsyncClient
    ) -> None:
        # POST /v1/session is open (the key is in the body), so no key store is needed here.
        response = await client.post(
            "/v1/session", content=b"\xff\xfe{", headers={"content-type": "application/json"}
        )
        assert response.status_code == 422
        (error,) = response.json()["detail"]
        assert (error["loc"], error["type"]) == (["body"], "json_invalid")
