"""Region status routes, and a live feed of them for the console."""

from __future__ import annotations

from collections.abc import AsyncIterator

from fastapi import APIRouter, Request
from sse_starlette import EventSourceResponse, ServerSentEvent

from regionstore_gateway.api.errors import status_change_responses
from regionstore_gateway.auth import PrincipalDep, requires_operator, requires_reader
from regionstore_gateway.bodies import RegionList, RegionOut, StatusBody
from regionstore_gateway.deps import RegionsDep

router = APIRouter(prefix="/v1/regions", tags=["regions"])


@router.get("", dependencies=[requires_reader], response_model=RegionList)
async def list_regions(regions: RegionsDep) -> RegionList:
    """Status, replicas, parked backlog, applied total and recent changes of every region."""
    return await regions.regions()


@router.put(
    "/{region}/status",
    dependencies=[requires_operator],
    response_model=RegionOut,
    responses=status_change_responses(),
)
async def set_status(
    region: str, body: StatusBody, regions: RegionsDep, principal: PrincipalDep
) -> RegionOut:
    """Mark a region available or unavailable; recovery drains it when it comes back.

    The change is recorded in the audit trail first. 503 when the trail cannot be written, or
    Redis cannot be reached (statuses live only there): either way nothing was changed.
    """
    await regions.set_status(region, body.status, principal)
    return await regions.region(region)


@router.get("/events", dependencies=[requires_reader])
async def region_events(request: Request, regions: RegionsDep) -> EventSourceResponse:
    """Server-sent events: the region list on every status change, every change the audit
    trail records, and every few seconds."""

    async def stream() -> AsyncIterator[ServerSentEvent]:
        seen = (-1, -1)
        while not await request.is_disconnected():
            listed = await regions.regions()
            yield ServerSentEvent(data=listed.model_dump_json(), event="regions")
            seen = await regions.next_change(seen)

    return EventSourceResponse(stream(), ping=15)
