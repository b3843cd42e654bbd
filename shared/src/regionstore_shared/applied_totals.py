"""Running totals of documents applied per region, kept in one Redis hash for the console.

The totals are a view, not a record: the console turns successive totals into applied/s. So
counting is best effort and never on the apply path's critical path: :meth:`AppliedCounter.add`
only adds to a dict in memory, and a background task sends the sums with one HINCRBY per
region, at most once a second: the console reads the totals every few seconds, so a send per
batch (two Redis round trips per write for the writer and the replicator at low rates, where
each write is a batch of its own) bought nothing. While Redis cannot be reached the sums wait
in memory and are sent when it answers again (an increment that timed out after Redis applied
it may then count twice: a spike in a chart, nothing more).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterable

from redis.asyncio import Redis
from redis.exceptions import RedisError

from regionstore_shared.logs import Outages
from regionstore_shared.status import REDIS

log = logging.getLogger(__name__)


class AppliedCounter:
    """Adds applied documents to ``key`` (a Redis hash, one field per region), in the background.

    The first count after a quiet spell is sent at once; what follows within ``every_s`` of a
    send is summed and goes in the next one, so Redis sees at most one HINCRBY per region per
    ``every_s``. After a failed send the next one waits ``retry_every_s``.
    """

    def __init__(
        self,
        redis: Redis,
        key: str,
        *,
        outages: Outages | None = None,
        every_s: float = 1.0,
        retry_every_s: float = 1.0,
        stop_timeout_s: float = 1.0,
    ) -> None:
        self._redis = redis
        self._every_s = every_s
        self._key = key
        self._outages = outages if outages is not None else Outages()
        self._retry_every_s = retry_every_s
        self._stop_timeout_s = stop_timeout_s
        self._pending: dict[str, int] = {}
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    @property
    def pending(self) -> dict[str, int]:
        """Documents counted but not yet added to Redis, per region."""
        return dict(self._pending)

    def add(self, region: str, count: int) -> None:
        """Count ``count`` documents applied to ``region``; returns at once."""
        if count <= 0:
            return
        self._pending[region] = self._pending.get(region, 0) + count
        self._wake.set()

    def start(self) -> None:
        """Send the counts in the background until :meth:`stop`."""
        self._task = asyncio.create_task(self._run(), name="applied-counter")

    async def stop(self) -> None:
        """Stop sending, after one last try (bounded by ``stop_timeout_s``) for what is left."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self._stop_timeout_s):
                await self.flush()

    async def flush(self) -> bool:
        """Add every pending count to Redis; False if Redis failed (what is left stays)."""
        for region in list(self._pending):
            count = self._pending.get(region, 0)
            try:
                await self._redis.hincrby(self._key, region, count)
            except (RedisError, OSError) as error:
                self._outages.failed(REDIS, f"applied counts not stored: {error}")
                return False
            left = self._pending.get(region, 0) - count
            if left > 0:
                self._pending[region] = left
            else:
                self._pending.pop(region, None)
        self._outages.ok(REDIS)
        return True

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            if not await self.flush():
                await asyncio.sleep(self._retry_every_s)
                self._wake.set()
                continue
            await asyncio.sleep(self._every_s)


class AppliedTotals:
    """Reads the totals :class:`AppliedCounter` keeps."""

    def __init__(self, redis: Redis, key: str) -> None:
        self._redis = redis
        self._key = key

    async def read(self, regions: Iterable[str]) -> dict[str, int | None]:
        """Each region's total: 0 when nothing was counted yet, None when Redis failed."""
        names = list(regions)
        try:
            stored = await self._redis.hgetall(self._key)
        except (RedisError, OSError) as error:
            log.debug("applied totals unreadable", extra={"error": str(error)})
            return dict.fromkeys(names)
        totals = {_text(field): value for field, value in stored.items()}
        return {name: _count(totals.get(name)) for name in names}


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _count(value: bytes | str | None) -> int | None:
    if value is None:
        return 0
    try:
        return int(value)
    except ValueError:
        return None
