"""Security headers: a strict CSP everywhere, and one that allows exactly the docs page's own
inline script (by hash) and CDN."""

from __future__ import annotations

import base64
import hashlib
import os
import re
from collections.abc import AsyncIterator

import httpx
import pytest
import pytest_asyncio
from starlette.types import Message, Receive, Scope, Send

from regionstore_gateway.edge.security_headers import STRICT_CSP, SecurityHeaders, page_csp
from regionstore_gateway.main import create_app
from regionstore_gateway.settings import GatewaySettings

# MDN's CSP example: this script's sha256.
MDN_SCRIPT = "alert('Hello, world.');"
MDN_HASH = "'sha256-qznLcsROx4GACP2dm0UCKCzCG+HiZ1guq6ZZDob/Tng='"
STATIC = {
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "x-frame-options": "DENY",
}


def directives(policy: str) -> dict[str, list[str]]:
    parsed = [part.split() for part in policy.split(";") if part.strip()]
    return {name: values for name, *values in parsed}


def inline_scripts(html: str) -> list[str]:
    return re.findall(r"<script>(.*?)</script>", html, flags=re.DOTALL)


def sha256(text: str) -> str:
    return f"'sha256-{base64.b64encode(hashlib.sha256(text.encode()).digest()).decode()}'"


class TestPageCsp:
    def test_an_inline_script_is_allowed_by_its_hash_only(self) -> None:
        policy = directives(page_csp(f"<html><script>{MDN_SCRIPT}</script></html>"))
        assert policy["script-src"] == ["'self'", MDN_HASH]
        assert "'unsafe-inline'" not in page_csp(f"<script>{MDN_SCRIPT}</script>")

    def test_the_origins_the_page_loads_from_are_allowed_where_it_uses_them(self) -> None:
        html = (
            '<link rel="stylesheet" href="https://styles.example/a.css">'
            '<link rel="shortcut icon" href="https://icons.example/f.png">'
            '<script src="https://scripts.example/x.js"></script><script>go()</script>'
        )
        policy = directives(page_csp(html))
        assert policy["script-src"] == ["'self'", "https://scripts.example", sha256("go()")]
        assert policy["style-src"] == ["'self'", "https://styles.example"]
        assert policy["img-src"] == ["'self'", "https://icons.example", "data:"]
        assert policy["default-src"] == ["'self'"]
        assert policy["object-src"] == ["'none'"]
        assert policy["frame-ancestors"] == ["'none'"]

    def test_script_text_is_hashed_as_written(self) -> None:
        script = 'const a = "&amp;" < 1;'
        assert directives(page_csp(f"<script>{script}</script>"))["script-src"][1] == sha256(script)


@pytest.fixture
def gateway_settings(monkeypatch: pytest.MonkeyPatch) -> GatewaySettings:
    for name in list(os.environ):
        if name.upper().startswith("REGIONSTORE_"):
            monkeypatch.delenv(name)
    return GatewaySettings()


@pytest_asyncio.fixture
async def client(gateway_settings: GatewaySettings) -> AsyncIterator[httpx.AsyncClient]:
    """The real app in process: no lifespan, no clients, no sockets; open routes only."""
    transport = httpx.ASGITransport(app=create_app(gateway_settings))
    async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as http:
        yield http


class TestInTheGateway:
    @pytest.mark.parametrize("path", ["/healthz", "/", "/app.js", "/openapi.json"])
    async def test_every_answer_has_the_strict_policy_and_the_other_headers(
        self, client: httpx.AsyncClient, path: str
    ) -> None:
        response = await client.get(path)
        assert response.status_code == 200
        assert response.headers["content-security-policy"] == STRICT_CSP
        assert {name: response.headers[name] for name in STATIC} == STATIC

    async def test_an_error_answer_has_them_too(self, client: httpx.AsyncClient) -> None:
        response = await client.post(
            "/v1/session", content=b" " * 5_000_000, headers={"content-type": "application/json"}
        )
        assert response.status_code == 413
        assert response.headers["content-security-policy"] == STRICT_CSP
        assert response.headers["x-frame-options"] == "DENY"

    @pytest.mark.parametrize("path", ["/docs", "/docs/oauth2-redirect"])
    async def test_a_docs_page_may_run_exactly_its_own_inline_scripts(
        self, client: httpx.AsyncClient, path: str
    ) -> None:
        response = await client.get(path)
        assert response.status_code == 200
        scripts = inline_scripts(response.text)
        assert scripts
        policy = directives(response.headers["content-security-policy"])
        hashes = [value for value in policy["script-src"] if value.startswith("'sha256-")]
        assert hashes == [sha256(script) for script in scripts]
        assert "'unsafe-inline'" not in response.headers["content-security-policy"]
        assert {name: response.headers[name] for name in STATIC} == STATIC

    async def test_swagger_ui_may_load_from_its_cdn_and_nothing_else(
        self, client: httpx.AsyncClient
    ) -> None:
        response = await client.get("/docs")
        cdn = {
            f"https://{host}"
            for host in re.findall(r'(?:src|href)="https://([^/"]+)/', response.text)
        }
        policy = directives(response.headers["content-security-policy"])
        allowed = {
            value
            for name in ("script-src", "style-src", "img-src")
            for value in policy[name]
            if value.startswith("https://")
        }
        assert cdn
        assert allowed == cdn
        assert policy["connect-src"] == ["'self'"]

    def test_redoc_is_not_served(self, gateway_settings: GatewaySettings) -> None:
        # It needs inline styles: /docs is the one docs page.
        app = create_app(gateway_settings)
        assert app.redoc_url is None
        assert "/redoc" not in {getattr(route, "path", None) for route in app.routes}


class TestMiddleware:
    async def test_a_header_the_app_set_is_replaced_not_repeated(self) -> None:
        async def app(scope: Scope, receive: Receive, send: Send) -> None:
            headers = [(b"X-Frame-Options", b"SAMEORIGIN"), (b"content-type", b"text/plain")]
            await send({"type": "http.response.start", "status": 200, "headers": headers})
            await send({"type": "http.response.body", "body": b"ok"})

        sent: list[Message] = []

        async def send(message: Message) -> None:
            sent.append(message)

        async def receive() -> Message:
            return {"type": "http.request", "body": b""}

        scope = {"type": "http", "method": "GET", "path": "/", "headers": []}
        await SecurityHeaders(app)(scope, receive, send)
        headers = [(name.lower(), value) for name, value in sent[0]["headers"]]
        assert headers.count((b"x-frame-options", b"DENY")) == 1
        assert len([name for name, _ in headers if name == b"x-frame-options"]) == 1
        assert (b"content-type", b"text/plain") in headers
        assert (b"content-security-policy", STRICT_CSP.encode()) in headers
        assert sent[1]["body"] == b"ok"
