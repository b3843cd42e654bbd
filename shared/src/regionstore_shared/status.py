"""Node availability, kept in Redis so every service and the console agree on it.

Redis is not on the write path: when it cannot be reached, the board answers with the statuses
it last read (every region available if it never read any), so consumers keep applying and the
gateway keeps serving; only a status change needs Redis itself.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from enum import StrEnum

from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError, ResponseError

from regionstore_shared.logs import Outages
from regionstore_shared.settings import RedisSettings

#: The dependency name in the down / still down / back log lines.
REDIS = "redis"


class NodeStatus(StrEnum):
    """Whether a region's store should receive traffic."""

    AVAILABLE = "available"
    UNAVAILABLE = "unavailable"

    @classmethod
    def parse(cls, value: str | bytes | None) -> NodeStatus:
        """Read a stored value; a missing or unknown key means available (the safe default)."""
        if isinstance(value, bytes):
            value = value.decode()
        if value is not None and value.strip().lower() == cls.UNAVAILABLE:
            return cls.UNAVAILABLE
        return cls.AVAILABLE


class StatusStoreUnavailableError(Exception):
    """A status change failed because Redis refused it, could not be reached or did not answer."""

    def __init__(self, region: str, error: RedisError) -> None:
        super().__init__(f"status of {region} not stored: {error}")
        self.region = region
        # An error reply (out of memory, a read-only replica, a missing permission) is Redis
        # refusing this very SET: nothing was written.
        self.refused = isinstance(error, ResponseError)
        # A refused or lost connection before an answer means the SET was not applied, or
        # was applied by an identical retry; only a timeout may come after Redis applied it.
        self.certainly_unchanged = self.refused or isinstance(error, RedisConnectionError)


class StatusBoard:
    """Reads and writes region statuses: one Redis string key per region.

    Reads survive a Redis outage with the last statuses read; after a failed read, Redis is
    tried again at most every ``retry_every_s`` (so a Redis that hangs instead of refusing
    costs one socket timeout per interval, not one per call). ``outages`` hears of every
    failed and successful read, which logs Redis down once per outage and back once.
    """

    def __init__(
        self,
        redis: Redis,
        settings: RedisSettings,
        regions: Iterable[str],
        *,
        outages: Outages | None = None,
        retry_every_s: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._redis = redis
        self._settings = settings
        self._regions = tuple(regions)
        self._outages = outages if outages is not None else Outages()
        self._retry_every_s = retry_every_s
        self._clock = clock
        self._known: dict[str, NodeStatus] | None = None
        self._retry_at = 0.0

    @property
    def regions(self) -> tuple[str, ...]:
        """The regions this board knows."""
        return self._regions

    @property
    def reachable(self) -> bool:
        """False from a failed read or write of Redis until the next successful one."""
        return not self._outages.is_down(REDIS)

    @property
    def last_known(self) -> dict[str, NodeStatus]:
        """The statuses last read, or every region available if none was ever read."""
        if self._known is None:
            return dict.fromkeys(self._regions, NodeStatus.AVAILABLE)
        return dict(self._known)

    def key(self, region: str) -> str:
        """The Redis key of a region's status."""
        return self._settings.status_key(region)

    async def read(self) -> dict[str, NodeStatus]:
        """Every region's status from Redis, in one round trip; raises RedisError on failure."""
        values = await self._redis.mget([self.key(r) for r in self._regions])
        self._known = {r: NodeStatus.parse(v) for r, v in zip(self._regions, values, strict=True)}
        self._retry_at = 0.0
        self._outages.ok(REDIS)
        return dict(self._known)

    async def all(self) -> dict[str, NodeStatus]:
        """Every region's status: from Redis, or the last known while it cannot be read."""
        if self._clock() < self._retry_at:
            return self.last_known
        try:
            return await self.read()
        except RedisError as error:
            self._retry_at = self._clock() + self._retry_every_s
            self._outages.failed(REDIS, f"statuses unreadable, using the last ones read: {error}")
            return self.last_known

    async def set(self, region: str, status: NodeStatus) -> None:
        """Store a region's status; recovery hears of it through a keyspace event.

        Raises StatusStoreUnavailableError when Redis fails: nothing else keeps a status.
        """
        try:
            await self._redis.set(self.key(region), status.value)
        except RedisError as error:
            self._outages.failed(REDIS, f"status of {region} not stored: {error}")
            raise StatusStoreUnavailableError(region, error) from error
        known = self.last_known
        known[region] = status
        self._known = known
        self._retry_at = 0.0
        self._outages.ok(REDIS)
