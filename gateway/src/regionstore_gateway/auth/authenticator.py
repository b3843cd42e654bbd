"""Verifies API keys against their records, with a cache of verified keys in this process.

A verified key is trusted from memory for ``cache_refresh_s``, then read again from Redis, so
most requests cost no Redis round trip and a revocation takes effect within that time. While
Redis cannot be reached, keys verified before keep working from their last known record
(Redis is tried again at most once a second); a key never verified here cannot be checked
then, which is an :class:`AuthUnavailableError` (503), not a refusal.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from prometheus_client import Counter
from redis.asyncio import Redis
from redis.exceptions import RedisError

from regionstore_gateway.auth.apikeys import (
    KeyHasher,
    KeyRecord,
    KeyRecords,
    RedisKeyStore,
    parse_key,
)
from regionstore_gateway.auth.ratelimit import RateLimiter
from regionstore_gateway.auth.roles import Principal
from regionstore_gateway.settings import AuthSettings
from regionstore_shared.logs import Outages
from regionstore_shared.status import REDIS

log = logging.getLogger(__name__)

REFUSALS = Counter(
    "regionstore_auth_refusals_total",
    "Requests refused by authentication or its rate limit, by reason.",
    ["reason"],
)
# A wrong secret for a real key id is logged once per key and window, never per request.
_LOG_WRONG_SECRET_EVERY_S = 30.0


class AuthUnavailableError(Exception):
    """A key this process has not verified before, while the key store cannot be reached."""


@dataclass(frozen=True, slots=True)
class Limits:
    """A key's rate (requests per second) and burst."""

    rate: float
    burst: int


@dataclass(frozen=True, slots=True)
class _Entry:
    record: KeyRecord
    read_at: float


class Authenticator:
    """Turns a presented key into a principal, and meters each principal's requests."""

    def __init__(
        self,
        records: KeyRecords,
        hasher: KeyHasher,
        *,
        defaults: Limits,
        refresh_s: float = 30.0,
        retry_every_s: float = 1.0,
        outages: Outages | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._records = records
        self.hasher = hasher
        self._defaults = defaults
        self._refresh_s = refresh_s
        self._retry_every_s = retry_every_s
        self._outages = outages if outages is not None else Outages()
        self._clock = clock
        self._cache: dict[str, _Entry] = {}
        self._retry_at = 0.0
        self._limiter = RateLimiter(clock)
        # Only ids of real keys get here (a wrong secret needs a stored digest): few.
        self._logged: dict[str, float] = {}

    async def authenticate(self, key: str) -> Principal | None:
        """The principal of a valid key; None for a malformed, unknown, revoked or wrong key.

        Raises AuthUnavailableError for a key that cannot be checked now.
        """
        parsed = parse_key(key)
        if parsed is None:
            REFUSALS.labels(reason="malformed").inc()
            return None
        entry = self._cache.get(parsed.key_id)
        if entry is None or self._clock() - entry.read_at >= self._refresh_s:
            entry = await self._read(parsed.key_id, entry)
        if entry is None:
            REFUSALS.labels(reason="unknown or revoked").inc()
            log.debug("api key refused", extra={"key_id": parsed.key_id, "reason": "unknown"})
            return None
        if not self.hasher.matches(parsed.secret, entry.record.digest):
            REFUSALS.labels(reason="wrong secret").inc()
            self._log_wrong_secret(parsed.key_id)
            return None
        return entry.record.principal

    def _log_wrong_secret(self, key_id: str) -> None:
        now = self._clock()
        if now < self._logged.get(key_id, float("-inf")) + _LOG_WRONG_SECRET_EVERY_S:
            return
        self._logged[key_id] = now
        log.warning("api key refused", extra={"key_id": key_id, "reason": "wrong secret"})

    def limits(self, key_id: str) -> Limits:
        """The rate and burst of a verified key (its own, or the defaults)."""
        entry = self._cache.get(key_id)
        record = entry.record if entry is not None else None
        return Limits(
            rate=record.rate if record and record.rate else self._defaults.rate,
            burst=record.burst if record and record.burst else self._defaults.burst,
        )

    def admit(self, principal: Principal) -> float:
        """0 if this request of the key is within its rate, else seconds until one would be."""
        limits = self.limits(principal.key_id)
        return self._limiter.admit(principal.key_id, limits.rate, limits.burst)

    async def _read(self, key_id: str, cached: _Entry | None) -> _Entry | None:
        now = self._clock()
        if now < self._retry_at:
            return self._last_known(key_id, cached)
        try:
            record = await self._records.get(key_id)
        except RedisError as error:
            self._retry_at = now + self._retry_every_s
            self._outages.failed(REDIS, f"api keys unreadable, using the last ones read: {error}")
            return self._last_known(key_id, cached)
        self._retry_at = 0.0
        self._outages.ok(REDIS)
        if record is None or record.revoked_at is not None:
            self._cache.pop(key_id, None)
            return None
        entry = _Entry(record, now)
        self._cache[key_id] = entry
        return entry

    @staticmethod
    def _last_known(key_id: str, cached: _Entry | None) -> _Entry:
        if cached is None:
            raise AuthUnavailableError(
                f"API key {key_id} cannot be checked now: the key store cannot be reached"
            )
        return cached


def redis_authenticator(
    redis: Redis, settings: AuthSettings, *, outages: Outages | None = None
) -> Authenticator:
    """The gateway's authenticator over the key records in Redis."""
    secret = settings.secret.get_secret_value()
    if not secret:
        log.warning("REGIONSTORE_AUTH__SECRET is empty: acceptable for development only")
    return Authenticator(
        RedisKeyStore(redis, settings.key_prefix),
        KeyHasher(secret),
        defaults=Limits(settings.default_rate, settings.default_burst),
        refresh_s=settings.cache_refresh_s,
        outages=outages,
    )
