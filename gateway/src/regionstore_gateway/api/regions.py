"""Region status routes, and a live feed of them for the console."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from fastapi import APIRouter, HTTPException, Request, status
from sse_starlette import EventSourceResponse, ServerSentEvent

from regionstore_gateway.api.errors import status_change_responses
from regionstore_gateway.audit_tail import RecentChanges
from regionstore_gateway.audit_trail import AuditAction, new_event
from regionstore_gateway.auth import PrincipalDep, requires_operator, requires_reader
from regionstore_gateway.deps import (
    AppliedDep,
    AuditDep,
    BacklogDep,
    BoardDep,
    ChangesDep,
    RecentDep,
    SettingsDep,
)
from regionstore_gateway.models import RegionList, RegionOut, StatusBody, StatusChangeOut
from regionstore_gateway.settings import GatewaySettings
from regionstore_shared.applied import AppliedTotals
from regionstore_shared.status import StatusBoard
from regionstore_shared.status_events import StatusChanges

router = APIRouter(prefix="/v1/regions", tags=["regions"])


async def region_list(
    settings: GatewaySettings,
    board: StatusBoard,
    backlog: BacklogDep,
    applied: AppliedTotals,
    recent: RecentChanges,
) -> RegionList:
    """Every region with its status, pending backlog and recent status changes, and the
    consumers' lag.

    While Redis cannot be reached the statuses are the last ones read (see StatusBoard), and
    the applied totals are unknown: not asked for, so an outage costs no second timeout.
    """
    names = settings.region_map.names
    statuses = await board.all()
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
                status=statuses[spec.name],
                zip_min=spec.zip_min,
                zip_max=spec.zip_max,
                replicas=list(spec.replicas),
                pending=pending.get(spec.name),
                applied=totals.get(spec.name),
                recent_changes=[
                    StatusChangeOut(at=c.at, key_id=c.key_id, status=c.status)
                    for c in recent.of(spec.name)
                ],
            )
            for spec in settings.region_map.specs
        ],
    )


@router.get("", dependencies=[requires_reader], response_model=RegionList)
async def list_regions(
    settings: SettingsDep,
    board: BoardDep,
    backlog: BacklogDep,
    applied: AppliedDep,
    recent: RecentDep,
) -> RegionList:
    """Status, replicas, pending backlog, applied total and recent changes of every region."""
    return await region_list(settings, board, backlog, applied, recent)


@router.put(
    "/{region}/status",
    dependencies=[requires_operator],
    response_model=RegionOut,
    responses=status_change_responses(),
)
async def set_status(
    region: str,
    body: StatusBody,
    settings: SettingsDep,
    board: BoardDep,
    backlog: BacklogDep,
    applied: AppliedDep,
    audit: AuditDep,
    recent: RecentDep,
    principal: PrincipalDep,
) -> RegionOut:
    """Mark a region available or unavailable; recovery drains it when it comes back.

    The change is recorded in the audit trail first. 503 when the trail cannot be written, or
    Redis cannot be reached (statuses live only there): either way nothing was changed.
    """
    if region not in settings.region_map:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"unknown region {region!r}")
    event = new_event(principal, AuditAction.REGION_STATUS, region, {"status": body.status.value})
    async with audit.action(event):
        await board.set(region, body.status)
    regions = await region_list(settings, board, backlog, applied, recent)
    return next(r for r in regions.regions if r.name == region)


@router.get("/events", dependencies=[requires_reader])
async def region_events(
    request: Request,
    settings: SettingsDep,
    board: BoardDep,
    backlog: BacklogDep,
    changes: ChangesDep,
    applied: AppliedDep,
    recent: RecentDep,
) -> EventSourceResponse:
    """Server-sent events: the region list on every status change, every change the audit
    trail records, and every few seconds."""

    async def stream() -> AsyncIterator[ServerSentEvent]:
        seen = (-1, -1)
        while not await request.is_disconnected():
            regions = await region_list(settings, board, backlog, applied, recent)
            yield ServerSentEvent(data=regions.model_dump_json(), event="regions")
            seen = await _next_change(changes, recent, seen, settings.api.region_events_interval_s)

    return EventSourceResponse(stream(), ping=15)


async def _next_change(
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
