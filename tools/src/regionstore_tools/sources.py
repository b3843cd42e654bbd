"""Where the operator commands read from: Kafka (parked commands, the audit trail) and the
gateway's Redis (API keys), reached directly with the services' own settings.

Each source is opened by a function of :class:`Sources`; the unit tests invoke the command line
with a ``Sources`` of fakes as its context object.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

import typer
from pydantic import SecretStr
from redis.asyncio import Redis

from regionstore_gateway.auth.apikeys import KeyHasher, KeyRecord
from regionstore_gateway.auth.roles import Role
from regionstore_gateway.keys import key_store
from regionstore_gateway.settings import AuthSettings, GatewaySettings
from regionstore_shared.api_key import ClientKeySettings, stack_secret
from regionstore_shared.audit_trail import AuditEvent
from regionstore_shared.backlog import BacklogProbe
from regionstore_shared.clients import redis_client
from regionstore_shared.parked import ParkedBacklog, ParkedReader, parked_reader
from regionstore_shared.settings import KafkaSettings
from regionstore_tools.audit_log import AuditReader, audit_reader
from regionstore_tools.gateway import ToolError

CLIENT_ID = "regionstore-cli"


class ParkedSource(Protocol):
    """What ``pending`` reads (:class:`~regionstore_shared.parked.ParkedReader`)."""

    async def read(self, region: str, *, sample: int) -> ParkedBacklog: ...


class AuditSource(Protocol):
    """What ``audit-log`` reads (:class:`~regionstore_tools.audit_log.AuditReader`)."""

    async def history(self, since: datetime) -> list[AuditEvent]: ...

    async def next_events(self) -> list[AuditEvent]: ...


class KeyStore(Protocol):
    """What ``keys`` changes (the gateway's ``RedisKeyStore``)."""

    async def all(self) -> list[KeyRecord]: ...

    async def revoke(self, key_id: str) -> KeyRecord | None: ...

    async def issue(
        self,
        hasher: KeyHasher,
        role: Role,
        *,
        name: str = "",
        rate: float | None = None,
        burst: int | None = None,
    ) -> tuple[str, KeyRecord]: ...


@dataclass(frozen=True, slots=True)
class KeyTools:
    """The key records, and the hasher that makes a new key's digest (None: no server secret)."""

    store: KeyStore
    hasher: KeyHasher | None

    def signing(self) -> KeyHasher:
        """The hasher; a ToolError when the server secret is not known here."""
        if self.hasher is None:
            raise ToolError(
                "creating a key needs the gateway's server secret: set REGIONSTORE_AUTH__SECRET"
            )
        return self.hasher


@asynccontextmanager
async def open_parked(settings: KafkaSettings) -> AsyncIterator[ParkedSource]:
    """A reader of parked commands, with the backlog probe it reads offsets through."""
    # Closed even when a start fails: a client made but never stopped complains when collected.
    probe = BacklogProbe(settings, CLIENT_ID)
    try:
        await probe.start()
        reader: ParkedReader = parked_reader(settings, CLIENT_ID, probe)
        try:
            await reader.start()
            yield reader
        finally:
            await reader.close()
    finally:
        await probe.close()


@asynccontextmanager
async def open_audit(settings: KafkaSettings) -> AsyncIterator[AuditSource]:
    """A reader of the audit trail."""
    reader: AuditReader = audit_reader(settings, CLIENT_ID)
    try:
        await reader.start()
        yield reader
    finally:
        await reader.close()


@asynccontextmanager
async def open_keys(settings: GatewaySettings) -> AsyncIterator[KeyTools]:
    """The gateway's key records in its Redis, as ``python -m regionstore_gateway.keys`` uses
    them; the server secret is REGIONSTORE_AUTH__SECRET, else the local stack's."""
    settings = settings.model_copy(update={"auth": _with_secret(settings.auth)})
    redis: Redis = redis_client(settings.redis, CLIENT_ID)
    try:
        store, hasher = key_store(redis, settings)
        yield KeyTools(store, hasher if settings.auth.secret.get_secret_value() else None)
    finally:
        await redis.aclose()


def _with_secret(auth: AuthSettings) -> AuthSettings:
    if auth.secret.get_secret_value():
        return auth
    try:
        secret = stack_secret(ClientKeySettings().run_dir)
    except OSError:
        return auth
    return auth.model_copy(update={"secret": SecretStr(secret)})


@dataclass(frozen=True, slots=True)
class Sources:
    """How each source is opened."""

    parked: Callable[[KafkaSettings], AbstractAsyncContextManager[ParkedSource]] = open_parked
    audit: Callable[[KafkaSettings], AbstractAsyncContextManager[AuditSource]] = open_audit
    keys: Callable[[GatewaySettings], AbstractAsyncContextManager[KeyTools]] = open_keys


def sources(ctx: typer.Context) -> Sources:
    """The context object's sources (the unit tests' fakes), else the real ones."""
    return ctx.obj if isinstance(ctx.obj, Sources) else Sources()
