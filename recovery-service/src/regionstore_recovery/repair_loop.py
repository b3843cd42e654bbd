"""The repair in the background: one process per deployment compares the regions, pass after
pass, at a bounded pace.

Every recovery process runs this loop; only the one holding the repair's Redis lease (the
detector's pattern, :class:`~regionstore_recovery.detection.Lease`, under a key of its own)
makes a pass, and it renews the lease after every bucket: a process that loses it stops its
pass there, and another takes over at the next round. A pass waits while any region is not
``available`` and while commands are on their way (a region's parked backlog, or the writer's
or the replicator's lag above ``max_lag``): a region that is down or draining, and a customer
whose write is still in a consumer's queue, would only read as missing, and publishing them
again would add to the queue (measured: a pass during a 37,000-command lag published 4,110
writes again for nothing). Between passes the loop waits ``interval_s``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterable, Mapping
from typing import Protocol

from regionstore_recovery.repair import Repairer, Report
from regionstore_shared.documents import Collection
from regionstore_shared.indexes import ensure_indexes
from regionstore_shared.status import NodeStatus

log = logging.getLogger(__name__)


class Leadership(Protocol):
    async def hold(self) -> bool: ...


class Statuses(Protocol):
    async def all(self) -> dict[str, NodeStatus]: ...


class Backlogs(Protocol):
    """Commands on their way (see :class:`~regionstore_shared.backlog.BacklogProbe`)."""

    async def backlog(self, regions: Iterable[str]) -> dict[str, int | None]: ...

    async def command_lag(self, groups: Mapping[str, str]) -> dict[str, int | None]: ...


class RepairLoop:
    """Passes of the repair, while this process holds the lease and every region is up."""

    def __init__(
        self,
        repairer: Repairer,
        *,
        lease: Leadership,
        statuses: Statuses,
        backlogs: Backlogs,
        consumers: Mapping[str, str],
        max_lag: int,
        collections: dict[str, Collection],
    ) -> None:
        """``consumers``: the consumer groups whose lag puts a pass off, by name."""
        self._repairer = repairer
        self._lease = lease
        self._statuses = statuses
        self._backlogs = backlogs
        self._consumers = consumers
        self._max_lag = max_lag
        self._collections = collections
        self.last: Report | None = None

    async def run(self, interval_s: float, stop: asyncio.Event) -> None:
        """Go round until ``stop``; a round that fails is logged and the next one comes."""
        while not stop.is_set():
            try:
                await self.round()
            except Exception:
                # Whatever went wrong, recovery's drains must not stop with the repair.
                log.exception("repair pass failed")
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(interval_s):
                    await stop.wait()

    async def round(self) -> Report | None:
        """One pass when this process leads and every region is available; its report."""
        if not await self._lease.hold():
            return None
        if (busy := await self._busy()) is not None:
            log.info("repair pass put off", extra={"reason": busy})
            return None
        # A region started empty has lost its indexes with its data; the services make them
        # only as they start.
        await ensure_indexes(self._collections)
        report = await self._repairer.run(going=self._lease.hold)
        self.last = report
        log.info(
            "repair pass",
            extra={
                "complete": report.complete,
                "buckets": report.buckets,
                "buckets_differing": report.buckets_differing,
                "diverging": report.diverging,
                "republished": report.republished,
                "tombstoned": report.tombstoned,
                "seconds": round(report.seconds, 1),
            },
        )
        return report

    async def _busy(self) -> str | None:
        """Why a pass must wait now, if it must."""
        statuses = await self._statuses.all()
        if any(status is not NodeStatus.AVAILABLE for status in statuses.values()):
            return "a region is not available"
        parked = await self._backlogs.backlog(statuses)
        if any(count is None or count > 0 for count in parked.values()):
            return f"parked commands: {parked}"
        lag = await self._backlogs.command_lag(self._consumers)
        if any(count is None or count > self._max_lag for count in lag.values()):
            return f"consumer lag: {lag}"
        return None
