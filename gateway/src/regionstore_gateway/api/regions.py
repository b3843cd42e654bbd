"""Region status routes, and a live feed of them for the console."""

from __future__ import annotations

from collections.abc import AsyncIterator

from fastapi import APIRouter, HTTPException, Request, status
from sse_starlette import EventSourceResponse, ServerSentEvent

from regionstore_gateway.api.errors import status_change_responses
from regionstore_gateway.deps import BacklogDep, BoardDep, ChangesDep, SettingsDep
from regionstore_gateway.models import RegionList, RegionOut, StatusBody
from regionstore_gateway.settings import GatewaySettings
from regionstore_shared.status import StatusBoard

router = APIRouter(prefix="/v1/regions", tags=["regions"])


async def region_list(
    settings: GatewaySettings, board: StatusBoard, backlog: BacklogDep
) -> RegionList:
    """Every region with its status and pending backlog, and the consumers' lag.

    While Redis cannot be reached the statuses are the last ones read (see StatusBoard).
    """
    names = settings.region_map.names
    statuses = await board.all()
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
            )
            for spec in settings.region_map.specs
        ],
    )


@router.get("", response_model=RegionList)
async def list_regions(settings: SettingsDep, board: BoardDep, backlog: BacklogDep) -> RegionList:
    """Status, replicas and pending backlog of every region."""
    return await region_list(settings, board, backlog)


@router.put("/{region}/status", response_model=RegionOut, responses=status_change_responses())
async def set_status(
    region: str, body: StatusBody, settings: SettingsDep, board: BoardDep, backlog: BacklogDep
) -> RegionOut:
    """Mark a region available or unavailable; recovery drains it when it comes back.

    503 when Redis cannot be reached: statuses live only there, so nothing was changed.
    """
    if region not in settings.region_map:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"unknown region {region!r}")
    await board.set(region, body.status)
    regions = await region_list(settings, board, backlog)
    return next(r for r in regions.regions if r.name == region)


@router.get("/events")
async def region_events(
    request: Request,
    settings: SettingsDep,
    board: BoardDep,
    backlog: BacklogDep,
    changes: ChangesDep,
) -> EventSourceResponse:
    """Server-sent events: the region list on every status change and every few seconds."""

    async def stream() -> AsyncIterator[ServerSentEvent]:
        seen = -1
        while not await request.is_disconnected():
            regions = await region_list(settings, board, backlog)
            yield ServerSentEvent(data=regions.model_dump_json(), event="regions")
            seen = await changes.wait(seen, settings.api.region_events_interval_s)

    return EventSourceResponse(stream(), ping=15)
