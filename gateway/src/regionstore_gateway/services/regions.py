"""Regions: their statuses, backlog and recent changes, and audited status changes."""

from __future__ import annotations

import asyncio

from regionstore_gateway.adapters.audit_trail import (
    Actor,
    AuditAction,
    AuditTrail,
    new_event,
    request_id,
)
from regionstore_gateway.adapters.status_history import RecentChanges
from regionstore_gateway.bodies import RegionList, RegionOut, StatusChangeOut
from regionstore_gateway.services.errors import RegionNotFound
from regionstore_gateway.settings import GatewaySettings
from regionstore_shared.applied_totals import AppliedTotals
from regionstore_shared.backlog import BacklogProbe
from regionstore_shared.status import NodeStatus, StatusBoard
from regionstore_shared.status_events import StatusChanges


class RegionService:
    """What the gateway knows of every region, and the one way to change a region's status."""

    def __init__(
        self,
        *,
        settings: GatewaySettings,
        board: StatusBoard,
        backlog: BacklogProbe,
        applied: AppliedTotals,
        recent: RecentChanges,
        changes: StatusChanges,
        audit: AuditTrail,
    ) -> None:
        self._settings = settings
        self._board = board
        self._backlog = backlog
        self._applied = applied
        self._recent = recent
        self._changes = changes
        self._audit = audit

    async def statuses(self) -> dict[str, NodeStatus]:
        """Every region's status."""
        return await self._board.all()

    async def regions(self) -> RegionList:
        """Every region with its status, parked backlog and recent status changes."""
        return await region_list(
            self._settings, self._board, self._backlog, self._applied, self._recent
        )

    async def set_status(
        self, region: str, status: NodeStatus, actor: Actor, *, noun: str = "region"
    ) -> None:
        """Record the change in the audit trail, then make it; nothing changes if either fails.

        ``noun`` is what the caller calls a region, for the error naming an unknown one.
        """
        if region not in self._settings.region_map:
            raise RegionNotFound(region, noun=noun)
        event = new_event(
            actor,
            AuditAction.REGION_STATUS,
            region,
            {"status": status.value},
            request_id=request_id(),
        )
        async with self._audit.action(event):
            await self._board.set(region, status, key_id=actor.key_id)

    async def region(self, region: str) -> RegionOut:
        """One region, as the region list shows it."""
        listed = await self.regions()
        return next(r for r in listed.regions if r.name == region)

    async def next_change(self, seen: tuple[int, int]) -> tuple[int, int]:
        """Once the statuses or the recent changes move past ``seen``, or after the events
        interval: the generations to wait past next."""
        within_s = self._settings.api.region_events_interval_s
        return await next_change(self._changes, self._recent, seen, within_s)


async def region_list(
    settings: GatewaySettings,
    board: StatusBoard,
    backlog: BacklogProbe,
    applied: AppliedTotals,
    recent: RecentChanges,
) -> RegionList:
    """Every region with its status (who set it, since when), parked backlog and recent
    status changes, and the consumers' lag.

    While Redis cannot be reached the statuses are the last ones read (see StatusBoard), and
    the applied totals are unknown: not asked for, so an outage costs no second timeout.
    """
    names = settings.region_map.names
    records = await board.records()
    totals = await applied.read(names) if board.reachable else dict.fromkeys(names)
    pending = await backlog.backlog(names)
    kafka = settings.kafka
    lag = await backlog.command_lag(
        {"writer": kafka.writer_group, "replicator": kafka.replicator_group}
    )
    return RegionList(
        lag=lag,
        regions=[
            RegionOut(
                name=spec.name,
                status=records[spec.name].status,
                set_by=records[spec.name].set_by,
                set_by_key=records[spec.name].key_id,
                since=records[spec.name].since,
                reason=records[spec.name].reason,
                zip_min=spec.zip_min,
                zip_max=spec.zip_max,
                replicas=list(spec.replicas),
                pending=pending.get(spec.name),
                applied=totals.get(spec.name),
                recent_changes=[
                    StatusChangeOut(
                        at=c.at,
                        key_id=c.key_id,
                        key_name=c.key_name,
                        status=c.status,
                        by=c.by,
                        reason=c.reason,
                        outcome=c.outcome,
                    )
                    for c in recent.of(spec.name)
                ],
            )
            for spec in settings.region_map.specs
        ],
    )


async def next_change(
    changes: StatusChanges, recent: RecentChanges, seen: tuple[int, int], within_s: float
) -> tuple[int, int]:
    """Once the statuses or the recent changes move past ``seen``, or after ``within_s``."""
    waits = [
        asyncio.ensure_future(changes.wait(seen[0], within_s)),
        asyncio.ensure_future(recent.wait(seen[1], within_s)),
    ]
    try:
        await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for wait in waits:
            wait.cancel()
        await asyncio.gather(*waits, return_exceptions=True)
    return changes.generation, recent.generation
