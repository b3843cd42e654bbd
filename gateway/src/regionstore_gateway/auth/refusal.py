"""Why a request's key is refused, said once for every way a key comes in: the middleware
answers it for every route, and signing in raises it for the key in the body."""

from __future__ import annotations

from dataclasses import dataclass, field

from regionstore_gateway.auth.authenticator import Authenticator, AuthUnavailableError
from regionstore_gateway.auth.ratelimit import retry_after
from regionstore_gateway.auth.roles import Principal

CHALLENGE = {"WWW-Authenticate": 'Bearer realm="regionstore"'}
UNAUTHENTICATED = "a valid API key is required: Authorization: Bearer <key>"
KEY_REFUSED = "the API key is not valid (unknown, revoked or wrong)"


@dataclass(frozen=True, slots=True)
class Refusal:
    """The answer to a refused key: its status, detail and headers."""

    status: int
    detail: str
    headers: dict[str, str] = field(default_factory=dict)
    reason: str | None = None
    """The refusals counter's label, for a refusal the authenticator has not counted."""


async def verified(
    authenticator: Authenticator, key: str, *, retry_after_s: int
) -> Principal | Refusal:
    """The key's principal; else 503 when it cannot be checked now, 401 when it is not valid."""
    try:
        principal = await authenticator.authenticate(key)
    except AuthUnavailableError as error:
        retry = {"Retry-After": str(retry_after_s)}
        return Refusal(503, str(error), retry, reason="key store unreachable")
    if principal is None:
        return Refusal(401, KEY_REFUSED, CHALLENGE)
    return principal


def over_rate(authenticator: Authenticator, principal: Principal) -> Refusal | None:
    """A 429 when this request of the key is over its rate, else None."""
    wait_s = authenticator.admit(principal)
    if wait_s <= 0:
        return None
    return Refusal(
        429,
        f"rate limit of API key {principal.key_id} exceeded",
        {"Retry-After": str(retry_after(wait_s))},
        reason="rate limit",
    )
