"""Security headers on every gateway response: a strict CSP, and one per API docs page.

The console and the API get ``default-src 'self'`` and nothing inline. FastAPI's Swagger UI page
runs one inline script (its configuration) and loads its bundle from a CDN, so ``/docs`` gets a
policy that allows exactly that script by its sha256, computed from the page FastAPI renders for
this app, and the page's own CDN origins: not ``'unsafe-inline'``, so a script injected into the
page still does not run. The hashes follow FastAPI's template: an upgrade that changes it changes
them with it.
"""

from __future__ import annotations

import base64
import hashlib
from html.parser import HTMLParser
from urllib.parse import urlsplit

from fastapi import FastAPI
from fastapi.openapi.docs import get_swagger_ui_html, get_swagger_ui_oauth2_redirect_html
from starlette.types import ASGIApp, Message, Receive, Scope, Send

STRICT_CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; "
    "frame-ancestors 'none'"
)
STATIC_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
}


class _PageSources(HTMLParser):
    """The inline scripts of a page and the origins of its scripts, stylesheets and icons."""

    def __init__(self) -> None:
        # Script text is hashed as written: character references must stay as they are.
        super().__init__(convert_charrefs=False)
        self.inline_scripts: list[str] = []
        self.script_origins: set[str] = set()
        self.style_origins: set[str] = set()
        self.img_origins: set[str] = set()
        self._in_inline_script = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = {name: value or "" for name, value in attrs}
        if tag == "script":
            if values.get("src"):
                self.script_origins.add(_origin(values["src"]))
            else:
                self._in_inline_script = True
                self.inline_scripts.append("")
        elif tag == "link" and values.get("href"):
            rel = values.get("rel", "").lower().split()
            if "stylesheet" in rel:
                self.style_origins.add(_origin(values["href"]))
            elif "icon" in rel:
                self.img_origins.add(_origin(values["href"]))

    def handle_endtag(self, tag: str) -> None:
        if tag == "script":
            self._in_inline_script = False

    def handle_data(self, data: str) -> None:
        if self._in_inline_script:
            self.inline_scripts[-1] += data


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}" if parts.netloc else "'self'"


def _sources(*origins: set[str]) -> str:
    return " ".join(["'self'", *sorted(set().union(*origins) - {"'self'"})])


def _sha256(text: str) -> str:
    return base64.b64encode(hashlib.sha256(text.encode()).digest()).decode()


def page_csp(html: str) -> str:
    """A strict CSP that also allows a page's inline scripts (by hash) and its CDN origins."""
    page = _PageSources()
    page.feed(html)
    page.close()
    hashes = [f"'sha256-{_sha256(script)}'" for script in page.inline_scripts]
    return (
        f"default-src 'self'; script-src {' '.join([_sources(page.script_origins), *hashes])}; "
        f"style-src {_sources(page.style_origins)}; "
        f"img-src {_sources(page.img_origins)} data:; connect-src 'self'; object-src 'none'; "
        "base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
    )


def docs_policies(app: FastAPI) -> dict[str, str]:
    """The CSP of each docs page the app serves, by path, from the pages FastAPI renders.

    Rendered as FastAPI renders them for a request without a ``root_path`` (the gateway is
    served at the root): under a root path the page names another openapi URL, its script hash
    differs and the browser refuses that script.
    """
    if not (app.openapi_url and app.docs_url):
        return {}
    swagger = get_swagger_ui_html(
        openapi_url=app.openapi_url,
        title=f"{app.title} - Swagger UI",
        oauth2_redirect_url=app.swagger_ui_oauth2_redirect_url,
        init_oauth=app.swagger_ui_init_oauth,
        swagger_ui_parameters=app.swagger_ui_parameters,
    )
    policies = {app.docs_url: page_csp(bytes(swagger.body).decode())}
    if app.swagger_ui_oauth2_redirect_url:
        redirect = get_swagger_ui_oauth2_redirect_html()
        policies[app.swagger_ui_oauth2_redirect_url] = page_csp(bytes(redirect.body).decode())
    return policies


class SecurityHeaders:
    """Adds the CSP and the other security headers to every HTTP response."""

    def __init__(self, app: ASGIApp, docs: dict[str, str] | None = None) -> None:
        self.app = app
        # Encoded once: a response replaces any of these it carries with the ones here.
        self._strict = _raw(STRICT_CSP)
        self._docs = {path: _raw(policy) for path, policy in (docs or {}).items()}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        ours = self._docs.get(scope["path"], self._strict)

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [
                    *(h for h in message.get("headers", ()) if h[0].lower() not in _NAMES),
                    *ours,
                ]
            await send(message)

        await self.app(scope, receive, with_headers)


_NAMES = frozenset(name.lower().encode() for name in ("Content-Security-Policy", *STATIC_HEADERS))


def _raw(policy: str) -> list[tuple[bytes, bytes]]:
    headers = {"Content-Security-Policy": policy, **STATIC_HEADERS}
    return [(name.lower().encode(), value.encode()) for name, value in headers.items()]
