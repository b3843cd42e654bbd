"""Backpressure: new writes are refused with 429 while the consumers are too far behind.

A write waits in Kafka behind every command accepted before it, so its accept-to-applied time
grows in step with the consumers' lag: on the local stack about half a second per thousand
commands while a load is being accepted (see docs/backpressure.md). Past a threshold of lag
the gateway stops taking new writes, before it publishes anything or claims an idempotency
key, so the backlog, and with it the time until a write is readable, stays bounded. Reads are
never refused for this.

The lag is read from Kafka in the background (end offsets against the groups' committed
offsets, :class:`~regionstore_shared.backlog.BacklogProbe`), never per request; a write is
judged by each group's last reading. A reading that fails keeps the one before, so a slow or
briefly unreachable Kafka does not open the gate under load; once a group's last reading is
older than ``stale_after_s`` it refuses nothing: the produce itself finds out whether Kafka
takes writes. While this gateway takes no write the lag is read every ``idle_refresh_s``
instead (three Kafka requests a second per gateway were most of an idle stack's traffic); the
first write after that wakes the reader at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Mapping

from prometheus_client import Counter, Gauge

from regionstore_gateway.settings import BackpressureSettings

log = logging.getLogger(__name__)

LagReader = Callable[[], Awaitable[Mapping[str, int | None]]]
"""Commands accepted but not applied yet, by consumer group name; None where Kafka did not say."""

LAG = Gauge(
    "regionstore_backpressure_lag_messages",
    "Commands accepted but not yet applied by each consumer group (writer, replicator), as the "
    "gateway last read them to decide on backpressure; -1 when unknown.",
    ["group"],
)
REFUSED = Counter(
    "regionstore_backpressure_refusals_total",
    "Write requests refused with 429 because a consumer group's lag was over its threshold, "
    "by the group that was behind.",
    ["group"],
)


class ConsumersBehindError(Exception):
    """A consumer group is too far behind: the write was not taken, nothing was published."""

    def __init__(self, group: str, lag: int, limit: int, retry_after_s: int) -> None:
        super().__init__(
            f"the {group} is {lag:,} commands behind (more than {limit:,}): writes are refused "
            "until it catches up"
        )
        self.group = group
        self.retry_after_s = retry_after_s


class Backpressure:
    """The consumers' lag, read every ``refresh_s`` in the background, and the writes it refuses."""

    def __init__(
        self,
        read: LagReader,
        settings: BackpressureSettings,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._read = read
        self._settings = settings
        self._limits = {
            "writer": settings.max_writer_lag,
            "replicator": settings.max_replicator_lag,
        }
        self._clock = clock
        self._readings: dict[str, tuple[int, float]] = {}
        """Each group's last lag read, and when."""
        self._task: asyncio.Task[None] | None = None
        self._written = asyncio.Event()
        """Set by every write checked since the last reading."""

    @property
    def lag(self) -> dict[str, int | None]:
        """Each group's last lag read; None when never read, or read too long ago."""
        oldest = self._clock() - self._settings.stale_after_s
        readings = {group: self._readings.get(group) for group in self._limits}
        return {
            group: reading[0] if reading is not None and reading[1] >= oldest else None
            for group, reading in readings.items()
        }

    def check(self) -> None:
        """Raise ConsumersBehindError when a group's last lag read is over its threshold."""
        self._written.set()
        for group, lag in self.lag.items():
            limit = self._limits[group]
            if limit and lag is not None and lag > limit:
                REFUSED.labels(group=group).inc()
                raise ConsumersBehindError(group, lag, limit, self._settings.retry_after_s)

    async def refresh(self) -> None:
        """Read the lag once; a group whose lag could not be read keeps its last reading."""
        try:
            lag = dict(await self._read())
        except Exception as error:
            # Whatever failed, the next reading tries again; the last ones stand meanwhile.
            log.warning("consumer lag unreadable", extra={"error": repr(error)})
            lag = {}
        read_at = self._clock()
        for group, value in lag.items():
            if value is not None and group in self._limits:
                self._readings[group] = (value, read_at)
        for group, value in self.lag.items():
            LAG.labels(group=group).set(-1 if value is None else value)

    def start(self) -> None:
        """Refresh in the background until :meth:`stop`; nothing is refused before a read."""
        if any(self._limits.values()):
            self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        """Stop refreshing."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        # Never longer than half the staleness: an idle gateway's readings stay usable.
        idle_s = min(self._settings.idle_refresh_s, self._settings.stale_after_s / 2)
        while True:
            await self.refresh()
            if self._written.is_set():
                self._written.clear()
                await asyncio.sleep(self._settings.refresh_s)
                continue
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._written.wait(), idle_s)
