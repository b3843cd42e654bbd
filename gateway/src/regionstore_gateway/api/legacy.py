"""The original system's routes, kept as thin aliases over the /v1 API and its services."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Response, status
from pydantic import BaseModel, ConfigDict, Field

from regionstore_gateway.adapters.idempotency import request_hash
from regionstore_gateway.api.customers import answered, customer_out
from regionstore_gateway.api.errors import status_change_responses, write_responses
from regionstore_gateway.auth import (
    PrincipalDep,
    requires_operator,
    requires_reader,
    requires_writer,
)
from regionstore_gateway.bodies import StatusBody
from regionstore_gateway.deps import CustomersDep, KeyHeader, RegionsDep, SettingsDep
from regionstore_gateway.services.customers import validate_filter
from regionstore_gateway.services.errors import InvalidInput, TooManyMatches
from regionstore_gateway.services.paging import Listing
from regionstore_gateway.services.publishing import WriteRequest
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
    customers: CustomersDep,
    response: Response,
    idempotency_key: KeyHeader = None,
) -> dict[str, object]:
    """Accept a customer (same as POST /v1/customers)."""
    request = (
        request_hash("POST /create-customer", customer=customer.model_dump(mode="json"))
        if idempotency_key is not None
        else ""
    )
    answer = await customers.upsert(customer, WriteRequest(idempotency_key, request))
    return _accepted(answered(answer, response))


def _accepted(body: dict[str, Any]) -> dict[str, object]:
    # From the 202 body (or a record this route stored before, in this very shape).
    return {
        "message": "customer accepted",
        "customer_id": body["customer_id"],
        "command_id": body["command_id"],
        "version": body["version"],
    }


@router.post("/node-status", dependencies=[requires_operator], responses=status_change_responses())
async def node_status(
    body: NodeStatusBody, regions: RegionsDep, principal: PrincipalDep
) -> dict[str, str]:
    """Set a node's status (same as PUT /v1/regions/{node_id}/status, audited the same way)."""
    await regions.set_status(body.node_id, body.status, principal, noun="node")
    return {"node_id": body.node_id, "status": body.status.value}


@router.get("/node-statuses", dependencies=[requires_reader])
async def node_statuses(regions: RegionsDep) -> dict[str, str]:
    """Every node's status, by node id."""
    return {region: value.value for region, value in (await regions.statuses()).items()}


async def _filter(
    customers: CustomersDep, settings: SettingsDep, body: FilterBody, given_in: str
) -> LegacyFilterResult:
    regions = settings.region_map.names
    min_, max_ = body.zip_range_min, body.zip_range_max
    query = validate_filter(regions, min_, max_, body.city, body.state, None)
    try:
        return _result(await customers.every(query))
    except TooManyMatches as error:
        raise InvalidInput.field(
            (given_in,),
            f"{error}: narrow zipRangeMin, zipRangeMax, city or state, "
            "or page through GET /v1/customers",
            "too_many_records",
        ) from None


def _result(listing: Listing) -> LegacyFilterResult:
    rows = [customer_out(found) for found in listing.rows]
    records = [LegacyRecord(**row.model_dump(exclude={"fallback", "version"})) for row in rows]
    return LegacyFilterResult(
        records=records,
        count=len(records),
        degraded_regions=listing.degraded,
        incomplete=bool(listing.unreachable),
    )


@router.post("/filter-records", dependencies=[requires_reader], response_model=LegacyFilterResult)
async def filter_records_post(
    body: FilterBody, customers: CustomersDep, settings: SettingsDep
) -> LegacyFilterResult:
    """Every record matching the filters (body form); more than `max_filter_records` is a 422."""
    return await _filter(customers, settings, body, "body")


@router.get("/filter-records", dependencies=[requires_reader], response_model=LegacyFilterResult)
async def filter_records_get(
    customers: CustomersDep,
    settings: SettingsDep,
    zip_range_min: Annotated[int | None, Query(alias="zipRangeMin", ge=0, le=99999)] = None,
    zip_range_max: Annotated[int | None, Query(alias="zipRangeMax", ge=0, le=99999)] = None,
    city: Annotated[str | None, Query(max_length=100)] = None,
    state: Annotated[str | None, Query()] = None,
) -> LegacyFilterResult:
    """Every record matching the filters (query form); more than `max_filter_records` is a 422."""
    body = FilterBody(
        zip_range_min=zip_range_min, zip_range_max=zip_range_max, city=city, state=state
    )
    return await _filter(customers, settings, body, "query")
