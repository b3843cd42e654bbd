"""Route dependencies: the principal of a request and the role each route requires.

Every API route declares one of ``requires_reader``, ``requires_writer`` or
``requires_operator`` (``dependencies=[requires_writer]``); :func:`check_routes` refuses to
build an app with a route that declares none and is not open.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Coroutine, Iterable
from typing import Annotated, Any

from fastapi import Depends, HTTPException, Request, status
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute
from fastapi.security import APIKeyCookie, HTTPAuthorizationCredentials, HTTPBearer
from starlette.routing import BaseRoute

from regionstore_gateway.auth.authentication import PRINCIPAL_SCOPE_KEY, SESSION_COOKIE, is_open
from regionstore_gateway.auth.refusal import CHALLENGE, UNAUTHENTICATED
from regionstore_gateway.auth.roles import Principal, Role

# Declared for OpenAPI (and /docs' Authorize button); the Authentication middleware has
# already checked whatever they carry.
_bearer = HTTPBearer(
    auto_error=False,
    scheme_name="apiKey",
    description="An API key: `Authorization: Bearer rsk_<key id>_<secret>`.",
)
_cookie = APIKeyCookie(
    name=SESSION_COOKIE,
    auto_error=False,
    scheme_name="session",
    description="The console's session, from POST /v1/session. A request signed in this way "
    "that changes anything must carry X-CSRF-Token.",
)


async def _principal(
    request: Request,
    _: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    __: Annotated[str | None, Depends(_cookie)],
) -> Principal:
    principal = request.scope.get(PRINCIPAL_SCOPE_KEY)
    if not isinstance(principal, Principal):
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, UNAUTHENTICATED, headers=CHALLENGE)
    return principal


PrincipalDep = Annotated[Principal, Depends(_principal)]


def _requirement(role: Role) -> Callable[[Principal], Coroutine[Any, Any, None]]:
    async def requirement(principal: PrincipalDep) -> None:
        if not principal.role.allows(role):
            raise HTTPException(
                status.HTTP_403_FORBIDDEN,
                f"this operation needs the {role.value} role; "
                f"API key {principal.key_id} is a {principal.role.value} key",
            )

    requirement.__name__ = f"requires_{role.value}"
    return requirement


_REQUIREMENTS = {role: _requirement(role) for role in Role}
requires_reader = Depends(_REQUIREMENTS[Role.READER])
requires_writer = Depends(_REQUIREMENTS[Role.WRITER])
requires_operator = Depends(_REQUIREMENTS[Role.OPERATOR])


def _declares_role(dependant: Dependant) -> bool:
    return any(
        sub.call in _REQUIREMENTS.values() or _declares_role(sub) for sub in dependant.dependencies
    )


def check_routes(routes: Iterable[BaseRoute], open_paths: Collection[str]) -> None:
    """Raise if an API route that is not open declares no role requirement."""
    unguarded = [
        f"{method} {route.path}"
        for route in routes
        if isinstance(route, APIRoute) and not _declares_role(route.dependant)
        for method in sorted(route.methods or ())
        if not is_open(method, route.path, open_paths)
    ]
    if unguarded:
        raise RuntimeError(
            f"routes without a role: {', '.join(unguarded)}; add "
            "dependencies=[requires_reader | requires_writer | requires_operator] "
            "(regionstore_gateway.auth)"
        )
