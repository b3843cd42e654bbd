"""Customer routes: writes through Kafka, reads across regions."""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from collections.abc import Awaitable, Callable
from typing import Annotated, Any

from fastapi import APIRouter, Header, HTTPException, Path, Query, Response, status
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError

from regionstore_gateway.api.errors import (
    NOT_FOUND,
    UNREADABLE,
    field_error,
    message,
    write_responses,
)
from regionstore_gateway.audit_trail import AuditedSender
from regionstore_gateway.auth import PrincipalDep, requires_reader, requires_writer
from regionstore_gateway.deps import (
    AuditDep,
    IdempotencyDep,
    KeyHeader,
    SettingsDep,
    WaitQuery,
    WritesDep,
)
from regionstore_gateway.idempotency import IdempotencyStore, request_hash
from regionstore_gateway.keyed_writes import Answer, Sender, write_once
from regionstore_gateway.models import (
    Accepted,
    CustomerFields,
    CustomerOut,
    CustomerPage,
    CustomerPatch,
)
from regionstore_gateway.repository import CustomerFilter, Found, Lookup
from regionstore_gateway.writes import (
    CustomerExistsError,
    Writes,
    Written,
)
from regionstore_shared.regions import ZipOutOfRangeError
from regionstore_shared.schemas import UF_CODES, Command, Customer, CustomerId, UpsertCustomer

router = APIRouter(prefix="/v1/customers", tags=["customers"])

PathId = Annotated[str, Path(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")]
_ZIP = "customer_zip_code_prefix"
REPLAYED_HEADER = "Idempotent-Replayed"


def accepted(written: Written) -> Accepted:
    """The 202 body of an acknowledged write."""
    command = written.command
    region = command.home_region if isinstance(command, UpsertCustomer) else None
    return Accepted(
        command_id=str(command.command_id),
        version=command.version,
        customer_id=command.key,
        region=region,
        location=f"/v1/customers/{command.key}",
        applied=written.applied,
    )


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


def _customer(data: dict[str, Any]) -> Customer:
    try:
        return Customer.model_validate(data)
    except ValidationError as error:
        raise RequestValidationError(
            [{**e, "loc": ("body", *e["loc"])} for e in error.errors(include_url=False)]
        ) from error


async def prepare_upsert(writes: Writes, customer: Customer, *, create_only: bool) -> Command:
    """The upsert command for a request; 422 for a zip no region takes, 409 for create-only."""
    try:
        return await writes.prepare_upsert(customer, create_only=create_only)
    except ZipOutOfRangeError as error:
        raise field_error(("body", _ZIP), str(error)) from error
    except CustomerExistsError as error:
        raise HTTPException(
            status.HTTP_409_CONFLICT, f"customer {customer.customer_id} already exists"
        ) from error


def replay_header(answer: Answer, response: Response) -> None:
    """Tell the client an answer was replayed from the first request with its key."""
    if answer.replayed:
        response.headers[REPLAYED_HEADER] = "true"


async def _write(
    writes: Sender,
    keys: IdempotencyStore,
    response: Response,
    *,
    key: str | None,
    request: str,
    build: Callable[[], Awaitable[Command]],
    wait: bool,
) -> dict[str, Any]:
    answer = await write_once(
        writes,
        keys=keys,
        key=key,
        request=request,
        build=build,
        answer=lambda written: accepted(written).model_dump(mode="json"),
        wait=wait,
    )
    replay_header(answer, response)
    return answer.body


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
    writes: WritesDep,
    keys: IdempotencyDep,
    response: Response,
    wait: WaitQuery = None,
    if_none_match: Annotated[
        str | None,
        Header(
            description="'*' makes this create-only: 409 if the id exists, 503 (nothing "
            "published) if it was found nowhere but some region could not be read. A check "
            "before the write, not a lock: two concurrent create-only requests for one new id "
            "may both be accepted."
        ),
    ] = None,
    idempotency_key: KeyHeader = None,
) -> dict[str, Any]:
    """Create (or, without ``If-None-Match: *``, replace) a customer."""
    create_only = if_none_match is not None and if_none_match.strip() == "*"
    return await _write(
        writes,
        keys,
        response,
        key=idempotency_key,
        request=request_hash(
            "POST /v1/customers",
            customer=customer.model_dump(mode="json"),
            create_only=create_only,
        ),
        build=lambda: prepare_upsert(writes, customer, create_only=create_only),
        wait=wait is not None,
    )


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
    writes: WritesDep,
    keys: IdempotencyDep,
    response: Response,
    wait: WaitQuery = None,
    idempotency_key: KeyHeader = None,
) -> dict[str, Any]:
    """Create or replace a customer."""
    if body.customer_id is not None and body.customer_id != customer_id:
        raise field_error(("body", "customer_id"), "must equal the customer id in the path")
    customer = _customer({**body.model_dump(), "customer_id": customer_id})
    return await _write(
        writes,
        keys,
        response,
        key=idempotency_key,
        request=request_hash("PUT /v1/customers/{id}", customer=customer.model_dump(mode="json")),
        build=lambda: prepare_upsert(writes, customer, create_only=False),
        wait=wait is not None,
    )


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
    writes: WritesDep,
    keys: IdempotencyDep,
    response: Response,
    wait: WaitQuery = None,
    idempotency_key: KeyHeader = None,
) -> dict[str, Any]:
    """Change some fields; a zip in another region moves the customer there."""
    changes = body.model_dump(exclude_unset=True, exclude_none=True)

    async def merged() -> Command:
        found = _live_or_raise(writes, customer_id, await writes.lookup(customer_id))
        current = customer_out(found).model_dump(include=set(Customer.model_fields))
        customer = _customer({**current, **changes})
        return await prepare_upsert(writes, customer, create_only=False)

    return await _write(
        writes,
        keys,
        response,
        key=idempotency_key,
        request=request_hash("PATCH /v1/customers/{id}", customer_id=customer_id, patch=changes),
        build=merged,
        wait=wait is not None,
    )


@router.delete(
    "/{customer_id}",
    dependencies=[requires_writer],
    status_code=status.HTTP_202_ACCEPTED,
    response_model=Accepted,
    responses=write_responses(),
)
async def delete_customer(
    customer_id: PathId,
    writes: WritesDep,
    keys: IdempotencyDep,
    audit: AuditDep,
    principal: PrincipalDep,
    response: Response,
    wait: WaitQuery = None,
    idempotency_key: KeyHeader = None,
) -> dict[str, Any]:
    """Delete a customer: a versioned tombstone in every region that may hold it.

    The delete is recorded in the audit trail just before its command is published; 503 when
    the trail cannot be written (nothing was published).
    """

    async def tombstone() -> Command:
        return writes.delete_command(customer_id)

    return await _write(
        AuditedSender(writes, audit, principal),
        keys,
        response,
        key=idempotency_key,
        request=request_hash("DELETE /v1/customers/{id}", customer_id=customer_id),
        build=tombstone,
        wait=wait is not None,
    )


@router.get(
    "/{customer_id}",
    dependencies=[requires_reader],
    response_model=CustomerOut,
    responses={404: NOT_FOUND, 503: UNREADABLE},
)
async def get_customer(customer_id: PathId, writes: WritesDep) -> CustomerOut:
    """One customer, from its home region or, when home is down, a replica."""
    lookup = await writes.repository.lookup(customer_id, await writes.statuses())
    return customer_out(_live_or_raise(writes, customer_id, lookup))


def _live_or_raise(writes: Writes, customer_id: str, lookup: Lookup) -> Found:
    """The customer's live document; 404 when unknown or deleted, 503 when it cannot be read."""
    found = lookup.newest.get(customer_id)
    if found is not None and not found.deleted:
        return found
    if found is not None and found.moved:
        # Only a tombstone pointing elsewhere was readable: the live copies are in regions
        # that could not be reached.
        raise HTTPException(
            status.HTTP_503_SERVICE_UNAVAILABLE,
            f"customer {customer_id} lives in {found.home}, which cannot be read now "
            f"(unreachable: {sorted(lookup.unreachable)})",
        )
    if found is None and not writes.repository.covered(lookup.unreachable):
        raise HTTPException(
            status.HTTP_503_SERVICE_UNAVAILABLE,
            f"regions {sorted(lookup.unreachable)} and their replicas are unreachable",
        )
    raise HTTPException(status.HTTP_404_NOT_FOUND, f"customer {customer_id} not found")


def _fingerprint(query: CustomerFilter) -> str:
    return hashlib.sha256(repr(query).encode()).hexdigest()[:12]


def encode_cursor(after: str, query: CustomerFilter) -> str:
    """An opaque cursor bound to the query it pages."""
    raw = json.dumps({"after": after, "q": _fingerprint(query)}).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str, query: CustomerFilter) -> str:
    """The id to continue after; 422 for a malformed cursor or one from another query."""
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        data = json.loads(base64.urlsafe_b64decode(padded.encode()))
        after, fingerprint = data["after"], data["q"]
    except (ValueError, KeyError, TypeError, binascii.Error) as error:
        raise field_error(("query", "cursor"), "is not a cursor this API issued") from error
    if fingerprint != _fingerprint(query) or not isinstance(after, str):
        raise field_error(("query", "cursor"), "belongs to a different query")
    return after


@router.get("", dependencies=[requires_reader], response_model=CustomerPage)
async def list_customers(
    writes: WritesDep,
    settings: SettingsDep,
    zip_min: Annotated[int | None, Query(ge=0, le=99999)] = None,
    zip_max: Annotated[int | None, Query(ge=0, le=99999)] = None,
    city: Annotated[
        str | None, Query(max_length=100, description="Prefix, any case/accents.")
    ] = None,
    state: Annotated[str | None, Query(description="UF code, any case.")] = None,
    region: Annotated[str | None, Query()] = None,
    limit: Annotated[int | None, Query(ge=1)] = None,
    cursor: Annotated[str | None, Query(max_length=512)] = None,
) -> CustomerPage:
    """Customers matching every filter, ordered by id, one page at a time."""
    query = validate_filter(settings.region_map.names, zip_min, zip_max, city, state, region)
    size = limit or settings.api.default_page_size
    if size > settings.api.max_page_size:
        raise field_error(
            ("query", "limit"), f"must be at most {settings.api.max_page_size}", "less_than_equal"
        )
    after = decode_cursor(cursor, query) if cursor else None
    page = await writes.repository.page(query, await writes.statuses(), after=after, limit=size)
    items = [customer_out(found) for found in page.rows]
    return CustomerPage(
        items=items,
        next_cursor=encode_cursor(items[-1].customer_id, query) if page.more and items else None,
        degraded_regions=page.degraded,
        unreachable_regions=page.unreachable,
        incomplete=bool(page.unreachable),
    )


def validate_filter(
    regions: tuple[str, ...],
    zip_min: int | None,
    zip_max: int | None,
    city: str | None,
    state: str | None,
    region: str | None,
) -> CustomerFilter:
    """A list filter, or a 422 naming the parameter at fault."""
    if zip_min is not None and zip_max is not None and zip_min > zip_max:
        raise field_error(("query", "zip_max"), f"must be >= zip_min ({zip_min})")
    code = state.strip().upper() if state else None
    if code is not None and code not in UF_CODES:
        raise field_error(("query", "state"), f"must be one of {', '.join(UF_CODES)}")
    if region is not None and region not in regions:
        raise field_error(("query", "region"), f"must be one of {', '.join(regions)}")
    return CustomerFilter(
        zip_min=zip_min,
        zip_max=zip_max,
        city=city.strip() or None if city else None,
        state=code,
        region=region,
    )


__all__ = ["CustomerId", "router"]
