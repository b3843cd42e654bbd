"""API keys for the tests: the stack's operator key, and new keys of any role.

``api_key()`` reads ``REGIONSTORE_API_KEY``, else the file named by ``REGIONSTORE_API_KEY_FILE``,
else ``$RUN_DIR/operator.key`` (``<repo>/.run`` by default), which ``make up`` writes.
``new_key(role)`` creates a key straight in the stack's Redis, with the server secret from
``REGIONSTORE_AUTH__SECRET`` or ``$RUN_DIR/secrets/auth_secret``.
"""

from __future__ import annotations

from pydantic import SecretStr

from regionstore_gateway.auth import Role
from regionstore_gateway.keys import key_store
from regionstore_gateway.settings import AuthSettings, GatewaySettings
from regionstore_shared.api_key import ClientKeySettings, auth_headers, stack_secret
from regionstore_shared.api_key import api_key as _api_key
from regionstore_shared.clients import redis_client


def api_key() -> str:
    """The operator key of the stack under test."""
    return _api_key()


def headers(key: str | None = None) -> dict[str, str]:
    """The Authorization header with a key (default: the operator key)."""
    return auth_headers(key if key is not None else api_key())


def server_secret() -> str:
    """The gateway's key secret: its setting, else the stack's secret file."""
    secret = GatewaySettings().auth.secret.get_secret_value()
    if secret:
        return secret
    return stack_secret(ClientKeySettings().run_dir)


async def new_key(
    role: Role | str, rate: float | None = None, burst: int | None = None, name: str = "tests"
) -> str:
    """A new key of ``role`` (with its own rate and burst if given), registered in Redis."""
    base = GatewaySettings()
    settings = base.model_copy(
        update={
            "auth": AuthSettings(secret=SecretStr(server_secret()), key_prefix=base.auth.key_prefix)
        }
    )
    redis = redis_client(settings.redis, "tests")
    try:
        store, hasher = key_store(redis, settings)
        key, _ = await store.issue(hasher, Role(role), name=name, rate=rate, burst=burst)
    finally:
        await redis.aclose()
    return key


async def revoke(key_id: str) -> None:
    """Revoke a key by id."""
    settings = GatewaySettings()
    redis = redis_client(settings.redis, "tests")
    try:
        store, _ = key_store(redis, settings)
        await store.revoke(key_id)
    finally:
        await redis.aclose()
