"""Node availability, kept in Redis so every service and the console agree on it."""

from __future__ import annotations

from collections.abc import Iterable
from enum import StrEnum

from redis.asyncio import Redis

from regionstore_shared.settings import RedisSettings


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


class StatusBoard:
    """Reads and writes region statuses: one Redis string key per region."""

    def __init__(self, redis: Redis, settings: RedisSettings, regions: Iterable[str]) -> None:
        self._redis = redis
        self._settings = settings
        self._regions = tuple(regions)

    @property
    def regions(self) -> tuple[str, ...]:
        """The regions this board knows."""
        return self._regions

    def key(self, region: str) -> str:
        """The Redis key of a region's status."""
        return self._settings.status_key(region)

    def region_of_key(self, key: str) -> str | None:
        """The region a status key belongs to, or None for any other key."""
        for region in self._regions:
            if key == self.key(region):
                return region
        return None

    async def all(self) -> dict[str, NodeStatus]:
        """Every region's status, in one round trip."""
        values = await self._redis.mget([self.key(r) for r in self._regions])
        return {r: NodeStatus.parse(v) for r, v in zip(self._regions, values, strict=True)}

    async def get(self, region: str) -> NodeStatus:
        """One region's status."""
        return NodeStatus.parse(await self._redis.get(self.key(region)))

    async def set(self, region: str, status: NodeStatus) -> None:
        """Store a region's status; recovery hears of it through a keyspace event."""
        await self._redis.set(self.key(region), status.value)
