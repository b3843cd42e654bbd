"""What the services see of the regional stores, told to the failure detector through Redis.

Every process already holds a region suspect when a write, a drain or a read fails outright
(:class:`~regionstore_shared.apply.Suspicion`). :class:`ReportingSuspicion` also tells the
detector, which runs in one recovery process and counts these reports with its own probes. A
missed read deadline is not reported: it may be the query's doing, and the detector's probe, a
point read, tells a slow store from a slow query.

Reports are best effort and never on the apply or read path: :meth:`HealthReports.failed`
notes the region in memory and returns, and a background task appends to one capped Redis
stream, at most one entry per region every ``every_s`` per process. While Redis cannot be
reached reports are dropped: the detector cannot change a status then anyway.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import cast

from redis.asyncio import Redis
from redis.exceptions import RedisError

from regionstore_shared.apply import Suspicion

log = logging.getLogger(__name__)

# A stream's entries as the client (decode_responses) returns them: (id, fields).
Entries = list[tuple[str, dict[str, str]]]

#: Entries the stream keeps; a detector reads it every second, so this is far more than enough.
STREAM_LENGTH = 1000


class HealthReports:
    """Appends "``source`` saw ``region`` fail" to the stream ``key``, in the background."""

    def __init__(
        self,
        redis: Redis,
        key: str,
        source: str,
        *,
        every_s: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._redis = redis
        self._key = key
        self._source = source
        self._every_s = every_s
        self._clock = clock
        self._last: dict[str, float] = {}
        self._pending: set[str] = set()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def failed(self, region: str) -> None:
        """Note that ``region`` failed; returns at once."""
        now = self._clock()
        if now - self._last.get(region, float("-inf")) < self._every_s:
            return
        self._last[region] = now
        self._pending.add(region)
        self._wake.set()

    def start(self) -> None:
        """Send reports in the background until :meth:`stop`."""
        self._task = asyncio.create_task(self._run(), name="health-reports")

    async def stop(self) -> None:
        """Stop sending; reports not sent yet are dropped."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def flush(self) -> None:
        """Send every pending report; on a Redis failure they are dropped."""
        regions, self._pending = self._pending, set()
        for region in sorted(regions):
            try:
                await self._redis.xadd(
                    self._key,
                    {"region": region, "source": self._source},
                    maxlen=STREAM_LENGTH,
                    approximate=True,
                )
            except (RedisError, OSError) as error:
                log.debug("health report dropped", extra={"region": region, "error": str(error)})

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            await self.flush()


class ReportingSuspicion(Suspicion):
    """A Suspicion that also reports every region it holds suspect to the detector."""

    def __init__(
        self,
        hold_s: float,
        reports: HealthReports,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(hold_s, clock)
        self._reports = reports

    def suspect(self, region: str) -> None:
        """Hold a region down for the configured time, and tell the detector."""
        super().suspect(region)
        self._reports.failed(region)


class HealthFeed:
    """Reads the reports appended since the last read (the detector's side)."""

    def __init__(self, redis: Redis, key: str) -> None:
        self._redis = redis
        self._key = key
        self._after: str | None = None

    def forget(self) -> None:
        """Start again from the next report on: what came before is someone else's past."""
        self._after = None

    async def read(self) -> list[tuple[str, str]]:
        """``(region, source)`` of every report since the last read; raises RedisError.

        The first read only finds where the stream ends: older reports are not counted.
        """
        if self._after is None:
            last = cast(Entries, await self._redis.xrevrange(self._key, count=1))
            self._after = last[0][0] if last else "0-0"
            return []
        entries = cast(
            Entries, await self._redis.xrange(self._key, min=f"({self._after}", count=STREAM_LENGTH)
        )
        if entries:
            self._after = entries[-1][0]
        return [(fields.get("region", ""), fields.get("source", "")) for _, fields in entries]
