"""The original system's routes, kept as thin aliases over the /v1 API."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, HTTPException, Query, Response, status
from pydantic import BaseModel, ConfigDict, Field

from regionstore_gateway.api.customers import (
    customer_out,
    prepare_upsert,
    replay_header,
    validate_filter,
)
from regionstore_gateway.api.errors import status_change_responses, write_responses
from regionstore_gateway.audit_trail import AuditAction, new_event
from regionstore_gateway.auth import (
    PrincipalDep,
    requires_operator,
    requires_reader,
    requires_writer,
)
from regionstore_gateway.deps import (
    AuditDep,
    BoardDep,
    IdempotencyDep,
    KeyHeader,
    SettingsDep,
    WritesDep,
)
from regionstore_gateway.idempotency import request_hash
from regionstore_gateway.keyed_writes import write_once
from regionstore_gateway.models import StatusBody
from regionstore_gateway.writes import Written
from regionstore_shared.schemas import Customer

router = APIRouter(tags=["original routes"])


class NodeStatusBody(StatusBody):
    """The original's body: which node, and its new status."""

    node_id: str


class FilterBody(BaseModel):
    """The original's filter body."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    # Strict, as the customer's zip is: JSON true is no zip prefix.
    zip_range_min: int | None = Field(
        default=None, alias="zipRangeMin", ge=0, le=99999, strict=True
    )
    zip_range_max: int | None = Field(
        default=None, alias="zipRangeMax", ge=0, le=99999, strict=True
    )
    city: str | None = Field(default=None, max_length=100)
    state: str | None = None


class LegacyRecord(Customer):
    """A record as the original answered it, plus the region that served it."""

    region: str
    served_by: str


class LegacyFilterResult(BaseModel):
    """Matching records and whether any could not be reached."""

    records: list[LegacyRecord]
    count: int
    degraded_regions: list[str]
    incomplete: bool


@router.post(
    "/create-customer",
    dependencies=[requires_writer],
    status_code=status.HTTP_202_ACCEPTED,
    responses=write_responses(),
)
async def create_customer(
    customer: Customer,
    writes: WritesDep,
    keys: IdempotencyDep,
    response: Response,
    idempotency_key: KeyHeader = None,
) -> dict[str, object]:
    """Accept a customer (same as POST /v1/customers)."""
    answer = await write_once(
        writes,
        keys=keys,
        key=idempotency_key,
        request=request_hash("POST /create-customer", customer=customer.model_dump(mode="json")),
        build=lambda: prepare_upsert(writes, customer, create_only=False),
        answer=_accepted,
        wait=False,
    )
    replay_header(answer, response)
    return answer.body


def _accepted(written: Written) -> dict[str, object]:
    command = written.command
    return {
        "message": "customer accepted",
        "customer_id": command.key,
        "command_id": str(command.command_id),
        "version": command.version,
    }


@router.post("/node-status", dependencies=[requires_operator], responses=status_change_responses())
async def node_status(
    body: NodeStatusBody,
    settings: SettingsDep,
    board: BoardDep,
    audit: AuditDep,
    principal: PrincipalDep,
) -> dict[str, str]:
    """Set a node's status (same as PUT /v1/regions/{node_id}/status, audited the same way)."""
    if body.node_id not in settings.region_map:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"unknown node {body.node_id!r}")
    detail = {"status": body.status.value}
    async with audit.action(new_event(principal, AuditAction.REGION_STATUS, body.node_id, detail)):
        await board.set(body.node_id, body.status)
    return {"node_id": body.node_id, "status": body.status.value}


@router.get("/node-statuses", dependencies=[requires_reader])
async def node_statuses(board: BoardDep) -> dict[str, str]:
    """Every node's status, by node id."""
    return {region: value.value for region, value in (await board.all()).items()}


async def _filter(writes: WritesDep, settings: SettingsDep, body: FilterBody) -> LegacyFilterResult:
    query = validate_filter(
        settings.region_map.names,
        body.zip_range_min,
        body.zip_range_max,
        body.city,
        body.state,
        None,
    )
    statuses = await writes.statuses()
    records: list[LegacyRecord] = []
    after: str | None = None
    degraded: set[str] = set()
    incomplete = False
    while True:
        page = await writes.repository.page(
            query, statuses, after=after, limit=settings.api.max_page_size
        )
        degraded.update(page.degraded)
        incomplete = incomplete or bool(page.unreachable)
        rows = [customer_out(found) for found in page.rows]
        records += [LegacyRecord(**row.model_dump(exclude={"fallback", "version"})) for row in rows]
        if not page.more or not rows:
            break
        after = rows[-1].customer_id
    return LegacyFilterResult(
        records=records,
        count=len(records),
        degraded_regions=sorted(degraded),
        incomplete=incomplete,
    )


@router.post("/filter-records", dependencies=[requires_reader], response_model=LegacyFilterResult)
async def filter_records_post(
    body: FilterBody, writes: WritesDep, settings: SettingsDep
) -> LegacyFilterResult:
    """Every record matching the filters (body form)."""
    return await _filter(writes, settings, body)


@router.get("/filter-records", dependencies=[requires_reader], response_model=LegacyFilterResult)
async def filter_records_get(
    writes: WritesDep,
    settings: SettingsDep,
    zip_range_min: Annotated[int | None, Query(alias="zipRangeMin", ge=0, le=99999)] = None,
    zip_range_max: Annotated[int | None, Query(alias="zipRangeMax", ge=0, le=99999)] = None,
    city: Annotated[str | None, Query(max_length=100)] = None,
    state: Annotated[str | None, Query()] = None,
) -> LegacyFilterResult:
    """Every record matching the filters (query form)."""
    body = FilterBody(
        zip_range_min=zip_range_min, zip_range_max=zip_range_max, city=city, state=state
    )
    return await _filter(writes, settings, body)
