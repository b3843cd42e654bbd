"""Customer routes: writes through Kafka, reads across regions."""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from typing import Annotated, Any

from fastapi import APIRouter, Header, HTTPException, Path, Query, Response, status
from fastapi.exceptions import RequestValidationError
from pydantic import TypeAdapter, ValidationError

from regionstore_gateway.api.dependencies import WaitQuery, WritesDep
from regionstore_gateway.api.errors import field_error
from regionstore_gateway.deps import SettingsDep
from regionstore_gateway.models import (
    Accepted,
    BatchDelete,
    BatchItem,
    BatchItemResult,
    BatchResult,
    CustomerFields,
    CustomerOut,
    CustomerPage,
    CustomerPatch,
)
from regionstore_gateway.repository import CustomerFilter, Found, Lookup
from regionstore_gateway.writes import (
    Command,
    CustomerExistsError,
    KafkaUnavailableError,
    Writes,
    Written,
)
from regionstore_shared.regions import ZipOutOfRangeError
from regionstore_shared.schemas import UF_CODES, Customer, CustomerId, UpsertCustomer

router = APIRouter(prefix="/v1/customers", tags=["customers"])

PathId = Annotated[str, Path(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")]
_ITEM = TypeAdapter[BatchItem](BatchItem)
_ZIP = "customer_zip_code_prefix"


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


async def _write_upsert(
    writes: Writes, customer: Customer, *, create_only: bool, wait: bool
) -> Written:
    try:
        return await writes.upsert(customer, create_only=create_only, wait=wait)
    except ZipOutOfRangeError as error:
        raise field_error(("body", _ZIP), str(error)) from error
    except CustomerExistsError as error:
        raise HTTPException(
            status.HTTP_409_CONFLICT, f"customer {customer.customer_id} already exists"
        ) from error
    except KafkaUnavailableError as error:
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, str(error)) from error


@router.post("", status_code=status.HTTP_202_ACCEPTED, response_model=Accepted)
async def create_customer(
    customer: Customer,
    writes: WritesDep,
    wait: WaitQuery = None,
    if_none_match: Annotated[
        str | None, Header(description="'*' makes this create-only: 409 if the id exists.")
    ] = None,
) -> Accepted:
    """Create (or, without ``If-None-Match: *``, replace) a customer."""
    create_only = if_none_match is not None and if_none_match.strip() == "*"
    written = await _write_upsert(writes, customer, create_only=create_only, wait=wait is not None)
    return accepted(written)


@router.put("/{customer_id}", status_code=status.HTTP_202_ACCEPTED, response_model=Accepted)
async def put_customer(
    customer_id: PathId, body: CustomerFields, writes: WritesDep, wait: WaitQuery = None
) -> Accepted:
    """Create or replace a customer."""
    if body.customer_id is not None and body.customer_id != customer_id:
        raise field_error(("body", "customer_id"), "must equal the customer id in the path")
    customer = _customer({**body.model_dump(), "customer_id": customer_id})
    written = await _write_upsert(writes, customer, create_only=False, wait=wait is not None)
    return accepted(written)


@router.patch("/{customer_id}", status_code=status.HTTP_202_ACCEPTED, response_model=Accepted)
async def patch_customer(
    customer_id: PathId, body: CustomerPatch, writes: WritesDep, wait: WaitQuery = None
) -> Accepted:
    """Change some fields; a zip in another region moves the customer there."""
    found = _live_or_raise(writes, customer_id, await writes.lookup(customer_id))
    current = customer_out(found).model_dump(include=set(Customer.model_fields))
    customer = _customer({**current, **body.model_dump(exclude_unset=True, exclude_none=True)})
    written = await _write_upsert(writes, customer, create_only=False, wait=wait is not None)
    return accepted(written)


@router.delete("/{customer_id}", status_code=status.HTTP_202_ACCEPTED, response_model=Accepted)
async def delete_customer(
    customer_id: PathId, writes: WritesDep, wait: WaitQuery = None
) -> Accepted:
    """Delete a customer: a versioned tombstone in every region that may hold it."""
    try:
        written = await writes.delete(customer_id, wait=wait is not None)
    except KafkaUnavailableError as error:
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, str(error)) from error
    return accepted(written)


@router.post(":batch", status_code=status.HTTP_202_ACCEPTED, response_model=BatchResult)
async def batch(
    body: dict[str, list[Any]], writes: WritesDep, settings: SettingsDep, response: Response
) -> BatchResult:
    """Many upserts and deletes in one request, each validated and answered on its own."""
    items = body.get("items")
    if items is None or set(body) != {"items"}:
        raise field_error(("body", "items"), 'the body must be {"items": [...]}', "missing")
    limit = settings.api.max_batch_items
    if len(items) > limit:
        raise field_error(
            ("body", "items"), f"at most {limit} items per batch, got {len(items)}", "too_long"
        )
    results: list[BatchItemResult] = []
    valid: list[tuple[int, BatchItem]] = []
    for index, raw in enumerate(items):
        if isinstance(raw, dict) and "op" not in raw:
            raw = {**raw, "op": "upsert"}
        try:
            item = _ITEM.validate_python(raw)
        except ValidationError as error:
            errors = [
                {"loc": ["body", "items", index, *e["loc"]], "msg": e["msg"], "type": e["type"]}
                for e in error.errors(include_url=False)
            ]
            results.append(BatchItemResult(index=index, status="rejected", errors=errors))
            continue
        valid.append((index, item))
    commands = await _batch_commands(writes, valid, results)
    if commands:
        try:
            outcomes = await writes.publish([command for _, command in commands])
        except KafkaUnavailableError as error:
            raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, str(error)) from error
        for (index, command), outcome in zip(commands, outcomes, strict=True):
            results.append(_item_result(index, command, outcome))
    results.sort(key=lambda r: r.index)
    counts = {s: sum(r.status == s for r in results) for s in ("accepted", "rejected", "failed")}
    if not counts["accepted"] and items:
        response.status_code = status.HTTP_422_UNPROCESSABLE_CONTENT
    return BatchResult(**counts, results=results)


async def _batch_commands(
    writes: Writes, valid: list[tuple[int, BatchItem]], results: list[BatchItemResult]
) -> list[tuple[int, Command]]:
    commands: list[tuple[int, Command]] = []
    for index, item in valid:
        if isinstance(item, BatchDelete):
            commands.append((index, writes.delete_command(item.customer_id)))
            continue
        try:
            commands.append((index, writes.upsert_command(item.customer)))
        except ZipOutOfRangeError as error:
            loc = ["body", "items", index, "customer", _ZIP]
            results.append(
                BatchItemResult(
                    index=index,
                    status="rejected",
                    customer_id=item.customer.customer_id,
                    errors=[{"loc": loc, "msg": str(error), "type": "value_error"}],
                )
            )
    return commands


def _item_result(index: int, command: Command, error: BaseException | None) -> BatchItemResult:
    if error is not None:
        return BatchItemResult(
            index=index,
            status="failed",
            customer_id=command.key,
            errors=[{"loc": ["kafka"], "msg": repr(error), "type": "kafka_error"}],
        )
    return BatchItemResult(
        index=index,
        status="accepted",
        customer_id=command.key,
        command_id=str(command.command_id),
        version=command.version,
        region=command.home_region if isinstance(command, UpsertCustomer) else None,
    )


@router.get("/{customer_id}", response_model=CustomerOut)
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


@router.get("", response_model=CustomerPage)
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
