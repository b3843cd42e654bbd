"""Customer routes: parse the request, call the customer service, shape the answer."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any

from fastapi import APIRouter, Header, Path, Query, Response, status

from regionstore_gateway.adapters.idempotency import request_hash
from regionstore_gateway.adapters.repository import Found
from regionstore_gateway.api.errors import NOT_FOUND, UNREADABLE, message, write_responses
from regionstore_gateway.auth import (
    PrincipalDep,
    requires_operator,
    requires_reader,
    requires_writer,
)
from regionstore_gateway.bodies import (
    Accepted,
    CustomerExport,
    CustomerFields,
    CustomerOut,
    CustomerPage,
    CustomerPatch,
)
from regionstore_gateway.deps import CustomersDep, ExportsDep, KeyHeader, SettingsDep, WaitQuery
from regionstore_gateway.services.customers import parse_customer, validate_filter
from regionstore_gateway.services.errors import InvalidInput
from regionstore_gateway.services.publishing import Answer, WriteRequest
from regionstore_shared.schemas import Customer, CustomerId, UniqueId

router = APIRouter(prefix="/v1/customers", tags=["customers"])

PathId = Annotated[str, Path(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")]
REPLAYED_HEADER = "Idempotent-Replayed"
CreateOnlyHeader = Annotated[
    str | None,
    Header(
        description="'*' makes this create-only: 409 if the id exists, 503 (nothing "
        "published) if it was found nowhere but some region could not be read. A check "
        "before the write, not a lock: two concurrent create-only requests for one new id "
        "may both be accepted.",
    ),
]


def customer_out(found: Found) -> CustomerOut:
    """A read row with where it came from."""
    document = found.document
    home = str(document["_home"])
    return CustomerOut(
        customer_id=document["_id"],
        customer_unique_id=document["customer_unique_id"],
        customer_zip_code_prefix=document["customer_zip_code_prefix"],
        customer_city=document["customer_city"],
        customer_state=document["customer_state"],
        region=home,
        served_by=found.served_by,
        fallback=found.served_by != home,
        version=found.version,
    )


def answered(answer: Answer, response: Response) -> dict[str, Any]:
    """The answer's body; the client is told when it was replayed from an earlier request."""
    if answer.replayed:
        response.headers[REPLAYED_HEADER] = "true"
    return answer.body


def _write(key: str | None, wait: WaitQuery, request: Callable[[], str]) -> WriteRequest:
    # The request's hash tells a retry from another request under the same key: only a keyed
    # write needs it, so it is made only then.
    return WriteRequest(key, request() if key is not None else "", wait=wait is not None)


@router.post(
    "",
    dependencies=[requires_writer],
    status_code=status.HTTP_202_ACCEPTED,
    response_model=Accepted,
    responses={
        **write_responses(),
        409: message("If-None-Match: * was given and the customer already exists."),
    },
)
async def create_customer(
    customer: Customer,
    customers: CustomersDep,
    response: Response,
    wait: WaitQuery = None,
    if_none_match: CreateOnlyHeader = None,
    idempotency_key: KeyHeader = None,
) -> dict[str, Any]:
    """Create (or, without ``If-None-Match: *``, replace) a customer."""
    create_only = if_none_match is not None and if_none_match.strip() == "*"
    write = _write(
        idempotency_key,
        wait,
        lambda: request_hash(
            "POST /v1/customers",
            customer=customer.model_dump(mode="json"),
            create_only=create_only,
        ),
    )
    return answered(await customers.upsert(customer, write, create_only=create_only), response)


@router.put(
    "/{customer_id}",
    dependencies=[requires_writer],
    status_code=status.HTTP_202_ACCEPTED,
    response_model=Accepted,
    responses=write_responses(),
)
async def put_customer(
    customer_id: PathId,
    body: CustomerFields,
    customers: CustomersDep,
    response: Response,
    wait: WaitQuery = None,
    idempotency_key: KeyHeader = None,
) -> dict[str, Any]:
    """Create or replace a customer."""
    if body.customer_id is not None and body.customer_id != customer_id:
        raise InvalidInput.field(("body", "customer_id"), "must equal the customer id in the path")
    new = parse_customer({**body.model_dump(), "customer_id": customer_id})
    write = _write(
        idempotency_key,
        wait,
        lambda: request_hash("PUT /v1/customers/{id}", customer=new.model_dump(mode="json")),
    )
    return answered(await customers.upsert(new, write), response)


@router.patch(
    "/{customer_id}",
    dependencies=[requires_writer],
    status_code=status.HTTP_202_ACCEPTED,
    response_model=Accepted,
    responses={**write_responses(), 404: NOT_FOUND},
)
async def patch_customer(
    customer_id: PathId,
    body: CustomerPatch,
    customers: CustomersDep,
    response: Response,
    wait: WaitQuery = None,
    idempotency_key: KeyHeader = None,
) -> dict[str, Any]:
    """Change some fields; a zip in another region moves the customer there."""
    changes = body.model_dump(exclude_unset=True, exclude_none=True)
    write = _write(
        idempotency_key,
        wait,
        lambda: request_hash("PATCH /v1/customers/{id}", customer_id=customer_id, patch=changes),
    )
    return answered(await customers.patch(customer_id, changes, write), response)


@router.delete(
    "/{customer_id}",
    dependencies=[requires_writer],
    status_code=status.HTTP_202_ACCEPTED,
    response_model=Accepted,
    responses=write_responses(),
)
async def delete_customer(
    customer_id: PathId,
    customers: CustomersDep,
    principal: PrincipalDep,
    response: Response,
    wait: WaitQuery = None,
    idempotency_key: KeyHeader = None,
) -> dict[str, Any]:
    """Delete a customer: a versioned tombstone in every region that may hold it.

    The delete is recorded in the audit trail just before its command is published; 503 when
    the trail cannot be written (nothing was published).
    """
    write = _write(
        idempotency_key,
        wait,
        lambda: request_hash("DELETE /v1/customers/{id}", customer_id=customer_id),
    )
    return answered(await customers.delete(customer_id, principal, write), response)


EXPORT_RESPONSES: dict[int | str, Any] = {
    503: message("The audit trail cannot record the export: nothing was read.")
}


@router.get(
    ":export",
    dependencies=[requires_operator],
    response_model=CustomerExport,
    responses=EXPORT_RESPONSES,
)
async def export_person(
    customer_unique_id: Annotated[UniqueId, Query()],
    exports: ExportsDep,
    principal: PrincipalDep,
) -> dict[str, Any]:
    """Everything held about a person: every customer id of ``customer_unique_id``, as
    ``/v1/customers/{id}/export`` gives one. Recorded in the audit trail first."""
    return await exports.export(principal, unique_id=customer_unique_id)


@router.get(
    "/{customer_id}/export",
    dependencies=[requires_operator],
    response_model=CustomerExport,
    responses=EXPORT_RESPONSES,
)
async def export_customer(
    customer_id: PathId, exports: ExportsDep, principal: PrincipalDep
) -> dict[str, Any]:
    """Everything held about a customer: every region's copy with its version, the parked and
    dead-lettered commands naming it, the audit events naming it; ``unreadable`` names what
    could not be read. An unknown customer has nothing to show. Recorded in the audit trail
    first (by the caller's key id and the customer id)."""
    return await exports.export(principal, customer_id=customer_id)


@router.get(
    "/{customer_id}",
    dependencies=[requires_reader],
    response_model=CustomerOut,
    responses={404: NOT_FOUND, 503: UNREADABLE},
)
async def get_customer(customer_id: PathId, customers: CustomersDep) -> CustomerOut:
    """One customer, from its home region or, when home is down, a replica."""
    return customer_out(await customers.get(customer_id))


@router.get("", dependencies=[requires_reader], response_model=CustomerPage)
async def list_customers(
    customers: CustomersDep,
    settings: SettingsDep,
    zip_min: Annotated[int | None, Query(ge=0, le=99999)] = None,
    zip_max: Annotated[int | None, Query(ge=0, le=99999)] = None,
    city: Annotated[
        str | None, Query(max_length=100, description="Prefix, any case/accents.")
    ] = None,
    state: Annotated[str | None, Query(description="UF code, any case.")] = None,
    region: Annotated[str | None, Query()] = None,
    unique_id: Annotated[
        str | None,
        Query(
            max_length=64,
            description="The customers of one person (customer_unique_id, 32 hex characters), "
            "whatever their home region.",
        ),
    ] = None,
    limit: Annotated[int | None, Query(ge=1)] = None,
    cursor: Annotated[str | None, Query(max_length=512)] = None,
) -> CustomerPage:
    """Customers matching every filter, one page at a time, in the order ``order`` states:
    by customer_id; by zip prefix then customer_id for a zip range; by city then customer_id
    for a city prefix; a zip range with a city by either. Each page costs what it holds,
    however many customers match; only a null ``next_cursor`` ends the list."""
    query = validate_filter(
        settings.region_map.names, zip_min, zip_max, city, state, region, unique_id
    )
    page = await customers.page(query, limit=limit, cursor=cursor)
    return CustomerPage(
        items=[customer_out(found) for found in page.rows],
        next_cursor=page.next_cursor,
        order=page.order.api_fields,
        degraded_regions=page.degraded,
        unreachable_regions=page.unreachable,
        incomplete=bool(page.unreachable),
    )


__all__ = ["CustomerId", "router"]
