"""Node availability, kept in Redis so every service and the console agree on it.

Redis is not on the write path: when it cannot be reached, the board answers with the statuses
it last read (every region available if it never read any), so consumers keep applying and the
gateway keeps serving; only a status change needs Redis itself.

A region's status key holds ``available``, ``unavailable`` (an operator took it out) or
``down`` (the failure detector found its store failing). Beside it, a hash says who set it,
when, why, and a revision that every change bumps, so the detector changes a status only if
nobody changed it since it looked (see :meth:`StatusBoard.transition`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum

from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError, ResponseError

from regionstore_shared.logs import Outages
from regionstore_shared.settings import RedisSettings

#: The dependency name in the down / still down / back log lines.
REDIS = "redis"


class NodeStatus(StrEnum):
    """Whether a region's store should receive traffic: what the consumers and reads act on.

    A region detected ``down`` takes no traffic either, so it reads as unavailable here; the
    status itself, and who set it, is a :class:`StatusRecord`.
    """

    AVAILABLE = "available"
    UNAVAILABLE = "unavailable"

    @classmethod
    def parse(cls, value: str | bytes | None) -> NodeStatus:
        """Read a stored value; a missing or unknown key means available (the safe default)."""
        return RegionStatus.parse(value).traffic


class RegionStatus(StrEnum):
    """A region's status as stored and shown: the two an operator sets, and the detector's."""

    AVAILABLE = "available"
    UNAVAILABLE = "unavailable"
    """Taken out by an operator (maintenance); never undone automatically."""
    DOWN = "down"
    """Taken out by the failure detector; back to available once the store is healthy again,
    or by an operator."""

    @classmethod
    def parse(cls, value: str | bytes | None) -> RegionStatus:
        """Read a stored value; a missing or unknown key means available (the safe default)."""
        if isinstance(value, bytes):
            value = value.decode()
        try:
            return cls((value or "").strip().lower())
        except ValueError:
            return cls.AVAILABLE

    @property
    def traffic(self) -> NodeStatus:
        """Whether the region takes traffic in this status."""
        return NodeStatus.AVAILABLE if self is RegionStatus.AVAILABLE else NodeStatus.UNAVAILABLE


class SetBy(StrEnum):
    """Who set a status."""

    OPERATOR = "operator"
    DETECTOR = "detector"


@dataclass(frozen=True, slots=True)
class StatusRecord:
    """A region's status, who set it, since when and why."""

    status: RegionStatus
    set_by: SetBy | None = None
    """None for a status nobody set yet (available by default), or set by an older version."""
    key_id: str | None = None
    """The API key id of the operator who set it."""
    since: datetime | None = None
    reason: str | None = None
    """Why the detector set it."""
    revision: int = 0
    """Bumped by every change made through the board."""

    @classmethod
    def parse(cls, value: str | None, meta: Mapping[str, str]) -> StatusRecord:
        """A record from the status key's value and its hash (either may be missing)."""
        try:
            set_by: SetBy | None = SetBy(meta.get("by", ""))
        except ValueError:
            set_by = None
        since_ms = meta.get("since_ms", "")
        return cls(
            status=RegionStatus.parse(value),
            set_by=set_by,
            key_id=meta.get("key_id") or None,
            since=datetime.fromtimestamp(int(since_ms) / 1000, UTC) if since_ms.isdigit() else None,
            reason=meta.get("reason") or None,
            revision=int(meta["revision"]) if meta.get("revision", "").isdigit() else 0,
        )


class Transition(StrEnum):
    """What became of a conditional status change."""

    DONE = "done"
    CHANGED_MEANWHILE = "changed_meanwhile"
    """Someone changed the status since it was read: nothing was written."""
    NOT_LEADER = "not_leader"
    """The caller's lease was gone: nothing was written."""


# KEYS: status key, its hash, the lease key. ARGV: the lease token, the revision and status the
# caller read, the new status, the time in ms, the reason. A status key without a hash reads as
# revision 0, and a missing status as available, as StatusRecord.parse reads them.
_TRANSITION = """
if redis.call('GET', KEYS[3]) ~= ARGV[1] then return 'not_leader' end
local revision = tonumber(redis.call('HGET', KEYS[2], 'revision') or '0')
local status = string.lower(redis.call('GET', KEYS[1]) or 'available')
if revision ~= tonumber(ARGV[2]) or status ~= ARGV[3] then return 'changed_meanwhile' end
redis.call('SET', KEYS[1], ARGV[4])
redis.call('HSET', KEYS[2], 'by', 'detector', 'key_id', '', 'since_ms', ARGV[5], 'reason', ARGV[6])
redis.call('HINCRBY', KEYS[2], 'revision', 1)
return 'done'
"""


class StatusStoreUnavailableError(Exception):
    """A status change failed because Redis refused it, could not be reached or did not answer."""

    def __init__(self, region: str, error: RedisError) -> None:
        super().__init__(f"status of {region} not stored: {error}")
        self.region = region
        # An error reply (out of memory, a read-only replica, a missing permission) is Redis
        # refusing this very SET: nothing was written.
        self.refused = isinstance(error, ResponseError)
        # A refused or lost connection before an answer means the SET was not applied, or
        # was applied by an identical retry; an error answer (out of memory, read-only
        # replica, no permission) is Redis refusing the SET; a timeout may come after Redis
        # applied it.
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
        self._records: dict[str, StatusRecord] | None = None
        self._retry_at = 0.0
        self._read_at = float("-inf")

    @property
    def regions(self) -> tuple[str, ...]:
        """The regions this board knows."""
        return self._regions

    @property
    def reachable(self) -> bool:
        """False from a failed read or write of Redis until the next successful one."""
        return not self._outages.is_down(REDIS)

    def read_within(self, seconds: float) -> bool:
        """Whether Redis answered a read of every status less than ``seconds`` ago."""
        return self._clock() - self._read_at < seconds

    @property
    def last_known(self) -> dict[str, NodeStatus]:
        """The statuses last read, or every region available if none was ever read."""
        if self._known is None:
            return dict.fromkeys(self._regions, NodeStatus.AVAILABLE)
        return dict(self._known)

    def key(self, region: str) -> str:
        """The Redis key of a region's status."""
        return self._settings.status_key(region)

    def meta_key(self, region: str) -> str:
        """The Redis hash saying who set a region's status, when and why."""
        return f"{self.key(region)}:set"

    async def read(self) -> dict[str, NodeStatus]:
        """Every region's status from Redis, in one round trip; raises RedisError on failure."""
        values = await self._redis.mget([self.key(r) for r in self._regions])
        self._known = {r: NodeStatus.parse(v) for r, v in zip(self._regions, values, strict=True)}
        self._retry_at = 0.0
        self._read_at = self._clock()
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

    async def read_records(self) -> dict[str, StatusRecord]:
        """Every region's status with who set it, in one round trip; raises RedisError."""
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.mget([self.key(r) for r in self._regions])
            for region in self._regions:
                pipe.hgetall(self.meta_key(region))
            values, *metas = await pipe.execute()
        records = {
            region: StatusRecord.parse(value, meta)
            for region, value, meta in zip(self._regions, values, metas, strict=True)
        }
        self._records = records
        self._known = {r: record.status.traffic for r, record in records.items()}
        self._retry_at = 0.0
        self._read_at = self._clock()
        self._outages.ok(REDIS)
        return dict(records)

    async def records(self) -> dict[str, StatusRecord]:
        """Every region's record: from Redis, or the last known while it cannot be read."""
        if self._clock() >= self._retry_at:
            try:
                return await self.read_records()
            except RedisError as error:
                self._retry_at = self._clock() + self._retry_every_s
                self._outages.failed(
                    REDIS, f"statuses unreadable, using the last ones read: {error}"
                )
        if self._records is not None:
            return dict(self._records)
        return {r: StatusRecord(RegionStatus(s.value)) for r, s in self.last_known.items()}

    async def set(self, region: str, status: NodeStatus, *, key_id: str | None = None) -> None:
        """Store a region's status as an operator's (``key_id``: theirs); recovery hears of it
        through a keyspace event.

        Raises StatusStoreUnavailableError when Redis fails: nothing else keeps a status.
        """
        since_ms = time.time_ns() // 1_000_000
        try:
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.set(self.key(region), status.value)
                pipe.hset(
                    self.meta_key(region),
                    mapping={
                        "by": SetBy.OPERATOR.value,
                        "key_id": key_id or "",
                        "since_ms": str(since_ms),
                        "reason": "",
                    },
                )
                pipe.hincrby(self.meta_key(region), "revision", 1)
                *_, revision = await pipe.execute()
        except RedisError as error:
            self._outages.failed(REDIS, f"status of {region} not stored: {error}")
            raise StatusStoreUnavailableError(region, error) from error
        known = self.last_known
        known[region] = status
        self._known = known
        if self._records is not None:
            self._records[region] = StatusRecord.parse(
                status.value,
                {
                    "by": SetBy.OPERATOR,
                    "key_id": key_id or "",
                    "since_ms": str(since_ms),
                    "revision": str(revision),
                },
            )
        self._retry_at = 0.0
        self._outages.ok(REDIS)

    async def transition(
        self,
        region: str,
        seen: StatusRecord,
        status: RegionStatus,
        reason: str,
        *,
        lease_key: str,
        lease_token: str,
    ) -> Transition:
        """Set a region's status as the detector's, only if it is still ``seen`` and the
        detector still holds its lease; one atomic step in Redis.

        So the detector never overwrites a change an operator made after it looked, and a
        detector that lost its lease (paused, cut off) cannot write a stale decision.
        Raises RedisError when Redis fails.
        """
        outcome = await self._redis.eval(
            _TRANSITION,
            3,
            self.key(region),
            self.meta_key(region),
            lease_key,
            lease_token,
            str(seen.revision),
            seen.status.value,
            status.value,
            str(time.time_ns() // 1_000_000),
            reason,
        )
        return Transition(outcome)
