"""The console's session: sign in with an API key, get it back, sign out.

Signing in sets the key as an HttpOnly, SameSite=Strict cookie, so the console's script never
holds it and other sites' pages never send it. A request the cookie signs in that changes
anything must also carry the session's ``csrf_token`` as X-CSRF-Token (checked by the
Authentication middleware).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, HTTPException, Request, Response, status
from pydantic import BaseModel, ConfigDict, Field

from regionstore_gateway.auth import Principal, PrincipalDep, requires_reader
from regionstore_gateway.auth.authentication import SESSION_COOKIE
from regionstore_gateway.auth.refusal import Refusal, over_rate, verified
from regionstore_gateway.deps import AuthDep, SettingsDep

router = APIRouter(prefix="/v1/session", tags=["session"])

UNAUTHENTICATED = {
    "description": "No session, or the key is unknown, revoked or wrong.",
    "headers": {"WWW-Authenticate": {"schema": {"type": "string"}}},
}


class SignIn(BaseModel):
    """The API key to sign the console in with."""

    model_config = ConfigDict(extra="forbid", hide_input_in_errors=True)

    key: Annotated[str, Field(min_length=1, max_length=200, description="rsk_<id>_<secret>")]


class Session(BaseModel):
    """Who the session is, and the token its state-changing requests must carry."""

    key_id: str
    role: str
    csrf_token: Annotated[str, Field(description="Send as X-CSRF-Token on POST/PUT/PATCH/DELETE.")]


def _session(auth: AuthDep, principal: Principal) -> Session:
    return Session(
        key_id=principal.key_id,
        role=principal.role.value,
        csrf_token=auth.hasher.csrf_token(principal.key_id),
    )


def _refused(refusal: Refusal) -> HTTPException:
    return HTTPException(refusal.status, refusal.detail, headers=refusal.headers)


@router.post("", response_model=Session, responses={401: UNAUTHENTICATED, 429: {}, 503: {}})
async def sign_in(
    body: SignIn, request: Request, response: Response, auth: AuthDep, settings: SettingsDep
) -> Session:
    """Check a key and set it as the session cookie."""
    principal = await verified(auth, body.key, retry_after_s=settings.api.retry_after_s)
    if isinstance(principal, Refusal):
        raise _refused(principal)
    if (refusal := over_rate(auth, principal)) is not None:
        raise _refused(refusal)
    response.set_cookie(
        SESSION_COOKIE,
        body.key,
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
        path="/",
    )
    return _session(auth, principal)


@router.get(
    "", response_model=Session, dependencies=[requires_reader], responses={401: UNAUTHENTICATED}
)
async def current(principal: PrincipalDep, auth: AuthDep) -> Session:
    """The signed-in key (the session cookie's, or the Bearer key's)."""
    return _session(auth, principal)


@router.delete("", status_code=status.HTTP_204_NO_CONTENT)
async def sign_out(request: Request) -> Response:
    """Clear the session cookie (always allowed, so a revoked key can still sign out)."""
    response = Response(status_code=status.HTTP_204_NO_CONTENT)
    response.delete_cookie(
        SESSION_COOKIE,
        path="/",
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )
    return response
