"""Authentication of every request before any route sees it.

Runs before routing, so a request without a valid key is refused before its body is read or
validated and before any store is asked: neither a 401 nor a 403 can tell whether a customer
exists. The role a route needs is checked by that route's dependency (``requires_*``).
"""

from __future__ import annotations

from collections.abc import Collection

from starlette.requests import HTTPConnection
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from regionstore_gateway.auth.authenticator import REFUSALS, Authenticator
from regionstore_gateway.auth.refusal import (
    CHALLENGE,
    UNAUTHENTICATED,
    Refusal,
    over_rate,
    verified,
)
from regionstore_gateway.auth.roles import Principal

#: Where the authenticated principal is kept in the ASGI scope.
PRINCIPAL_SCOPE_KEY = "regionstore.principal"
SESSION_COOKIE = "regionstore_session"
CSRF_HEADER = "X-CSRF-Token"
SESSION_PATH = "/v1/session"
#: Operations that authenticate by other means: signing in (the key is in the body) and out.
OPEN_OPERATIONS = frozenset({("POST", SESSION_PATH), ("DELETE", SESSION_PATH)})
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})

BAD_CSRF = f"a request signed in by the session cookie must carry {CSRF_HEADER}"


def refused(refusal: Refusal) -> JSONResponse:
    """The answer to a refused key, counted by its reason."""
    if refusal.reason is not None:
        REFUSALS.labels(reason=refusal.reason).inc()
    return JSONResponse({"detail": refusal.detail}, refusal.status, refusal.headers)


def is_open(method: str, path: str, open_paths: Collection[str]) -> bool:
    """Whether a request needs no key: health, docs, the console's files, signing in and out."""
    return path in open_paths or (method, path) in OPEN_OPERATIONS


class Authentication:
    """Finds the caller's key (Bearer header, else the session cookie) and verifies it.

    Answers 401 for a missing or invalid key, 503 when the key cannot be checked now, 403 for
    a cookie-signed state change without its CSRF token, and 429 over the key's rate. The
    :class:`Authenticator` comes from the app's lifespan state (``auth``).
    """

    def __init__(self, app: ASGIApp, *, open_paths: Collection[str], retry_after_s: int) -> None:
        self.app = app
        self.open_paths = frozenset(open_paths)
        self.retry_after_s = retry_after_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or is_open(scope["method"], scope["path"], self.open_paths):
            await self.app(scope, receive, send)
            return
        connection = HTTPConnection(scope)
        authenticator: Authenticator = scope["state"]["auth"]
        answer = await self._check(authenticator, connection, scope["method"])
        if isinstance(answer, JSONResponse):
            await answer(scope, receive, send)
            return
        scope[PRINCIPAL_SCOPE_KEY] = answer
        await self.app(scope, receive, send)

    async def _check(
        self, authenticator: Authenticator, connection: HTTPConnection, method: str
    ) -> Principal | JSONResponse:
        key, by_cookie = _presented_key(connection)
        if key is None:
            return refused(Refusal(401, UNAUTHENTICATED, CHALLENGE, reason="no key"))
        principal = await verified(authenticator, key, retry_after_s=self.retry_after_s)
        if isinstance(principal, Refusal):
            return refused(principal)
        if by_cookie and method not in SAFE_METHODS:
            token = connection.headers.get(CSRF_HEADER, "")
            if not authenticator.hasher.csrf_ok(principal.key_id, token):
                REFUSALS.labels(reason="csrf").inc()
                return JSONResponse({"detail": BAD_CSRF}, status_code=403)
        refusal = over_rate(authenticator, principal)
        if refusal is not None:
            return refused(refusal)
        return principal


def _presented_key(connection: HTTPConnection) -> tuple[str | None, bool]:
    """The key a request carries and whether it came in the session cookie."""
    authorization = connection.headers.get("authorization")
    if authorization is not None:
        scheme, _, credentials = authorization.partition(" ")
        if scheme.lower() != "bearer":
            return None, False
        return credentials.strip() or None, False
    # Parsed only here: a Bearer request has no need of its cookies.
    cookie = connection.cookies.get(SESSION_COOKIE)
    return (cookie, True) if cookie else (None, False)
