"""The web console's files, served at every path no API route takes."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles
from starlette.responses import JSONResponse
from starlette.routing import BaseRoute, Match, Mount
from starlette.types import Receive, Scope, Send

READ_METHODS = frozenset({"GET", "HEAD"})
HTTP_METHODS = ("DELETE", "GET", "HEAD", "OPTIONS", "PATCH", "POST", "PUT")
_ALLOWED = "regionstore.allowed_methods"


class ConsoleMount(Mount):
    """A mount at ``/`` that answers 405 for an API path asked with a method it does not take.

    A mount at ``/`` matches every path, so ``OPTIONS /v1/customers:batch`` or
    ``GET /create-customer`` would reach the files and be answered as files (404, or 405 with
    ``Allow: GET, HEAD``). Starlette's router, for its part, answers such a request with the
    ``Allow`` of the first route of that path only, while FastAPI makes one route per method.
    This mount is the last route: it answers 405 with every method the path's routes take.
    """

    def __init__(self, path: str, *, app: StaticFiles, routes: Sequence[BaseRoute]) -> None:
        super().__init__(path, app=app, name="console")
        self.api_routes = routes

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        if scope["type"] == "http":
            allowed = self._methods_of_path(scope)
            if allowed:
                return Match.FULL, {_ALLOWED: allowed}
            if scope["method"] not in READ_METHODS:
                match, child = super().matches(scope)
                return (Match.PARTIAL if match is Match.FULL else match), child
        return super().matches(scope)

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        allowed = scope.get(_ALLOWED)
        if not allowed:
            await super().handle(scope, receive, send)
            return
        headers = {"Allow": ", ".join(sorted(allowed))}
        await JSONResponse({"detail": "Method Not Allowed"}, 405, headers)(scope, receive, send)

    def _methods_of_path(self, scope: Scope) -> set[str]:
        # Probed through matches(), the one interface every kind of route has (FastAPI keeps
        # an included router as one route).
        return {
            method
            for method in HTTP_METHODS
            if any(
                route.matches({**scope, "method": method})[0] is Match.FULL
                for route in self.api_routes
            )
        }


def mount_console(app: FastAPI, directory: Path) -> None:
    """Serve the console's files after every API route."""
    files = StaticFiles(directory=directory, html=True)
    app.router.routes.append(ConsoleMount("/", app=files, routes=list(app.router.routes)))
