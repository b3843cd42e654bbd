"""Customer reads and writes: what to publish, what to answer, and when to refuse."""

from __future__ import annotations

import re
from typing import Any

from pydantic import ValidationError

from regionstore_gateway.adapters.audit_trail import Actor, AuditTrail
from regionstore_gateway.adapters.command_topic import CommandTopic
from regionstore_gateway.adapters.idempotency import IdempotencyStore
from regionstore_gateway.adapters.list_order import Key, Order
from regionstore_gateway.adapters.repository import (
    CustomerFilter,
    CustomerRepository,
    Found,
    Lookup,
)
from regionstore_gateway.bodies import BatchResult
from regionstore_gateway.services.backpressure import Backpressure
from regionstore_gateway.services.batch import write_batch
from regionstore_gateway.services.errors import (
    CustomerNotFound,
    InvalidInput,
    RegionsUnreachable,
    TooManyMatches,
)
from regionstore_gateway.services.keyed_batch import KeyedBatch, write_keyed_batch
from regionstore_gateway.services.paging import Listing, decode_cursor, listing
from regionstore_gateway.services.publishing import Answer, Publishing, WriteRequest
from regionstore_gateway.settings import GatewaySettings
from regionstore_shared.regions import ZipOutOfRangeError
from regionstore_shared.schemas import UF_CODES, Command, Customer
from regionstore_shared.status import StatusBoard

_ZIP = ("body", "customer_zip_code_prefix")
_UNIQUE_ID = re.compile(r"[0-9a-f]{32}")


def customer_of(found: Found) -> dict[str, Any]:
    """The customer's own fields in a read document."""
    document = found.document
    return {
        "customer_id": document["_id"],
        **{name: document[name] for name in Customer.model_fields if name != "customer_id"},
    }


def parse_customer(data: dict[str, Any]) -> Customer:
    """A customer from request fields; a 422 on the body for any field at fault."""
    try:
        return Customer.model_validate(data)
    except ValidationError as error:
        raise InvalidInput(
            [{**e, "loc": ("body", *e["loc"])} for e in error.errors(include_url=False)]
        ) from error


def validate_filter(
    regions: tuple[str, ...],
    zip_min: int | None,
    zip_max: int | None,
    city: str | None,
    state: str | None,
    region: str | None,
    unique_id: str | None = None,
) -> CustomerFilter:
    """A list filter, or a 422 naming the parameter at fault."""
    if zip_min is not None and zip_max is not None and zip_min > zip_max:
        raise InvalidInput.field(("query", "zip_max"), f"must be >= zip_min ({zip_min})")
    code = state.strip().upper() if state else None
    if code is not None and code not in UF_CODES:
        raise InvalidInput.field(("query", "state"), f"must be one of {', '.join(UF_CODES)}")
    if region is not None and region not in regions:
        raise InvalidInput.field(("query", "region"), f"must be one of {', '.join(regions)}")
    person = unique_id.strip().lower() if unique_id else None
    if person is not None and not _UNIQUE_ID.fullmatch(person):
        raise InvalidInput.field(("query", "unique_id"), "must be 32 hex characters")
    return CustomerFilter(
        zip_min=zip_min,
        zip_max=zip_max,
        city=city.strip() or None if city else None,
        state=code,
        region=region,
        unique_id=person,
    )


class CustomerService:
    """Reads customers across the regions and turns write requests into published commands.

    Reads go to the repository; writes, and the read a PATCH merges into (whose version the
    clock must observe), go through the command topic, and are published by
    :class:`Publishing`. A write is refused first, before anything is read, claimed or
    published, while the consumers are too far behind (Backpressure).
    """

    def __init__(
        self,
        *,
        settings: GatewaySettings,
        topic: CommandTopic,
        repository: CustomerRepository,
        board: StatusBoard,
        keys: IdempotencyStore,
        audit: AuditTrail,
        backpressure: Backpressure,
    ) -> None:
        self._settings = settings
        self._topic = topic
        self._repository = repository
        self._board = board
        self._publishing = Publishing(topic=topic, keys=keys, audit=audit)
        self._backpressure = backpressure

    async def get(self, customer_id: str) -> Found:
        """The customer's live document, from home or, when home is down, a replica."""
        statuses = await self._board.all()
        lookup = await self._repository.lookup(customer_id, statuses)
        return self._live(customer_id, lookup)

    async def page(
        self, query: CustomerFilter, *, limit: int | None = None, cursor: str | None = None
    ) -> Listing:
        """One page of the customers matching ``query``, after the one ``cursor`` ends."""
        api = self._settings.api
        size = limit or api.default_page_size
        if size > api.max_page_size:
            raise InvalidInput.field(
                ("query", "limit"), f"must be at most {api.max_page_size}", "less_than_equal"
            )
        order, after = (
            decode_cursor(cursor, [w.order for w in query.plans()], query)
            if cursor
            else (None, None)
        )
        statuses = await self._board.all()
        page = await self._repository.page(query, statuses, after=after, limit=size, order=order)
        return listing(page, query).counted()

    async def every(self, query: CustomerFilter) -> Listing:
        """Every customer matching ``query`` by id, read page by page, with every region missed.

        More than ``max_filter_records`` is refused (:class:`TooManyMatches`) as soon as read,
        and so is a filter whose walks read more than ``max_filter_scan`` index entries of one
        region: a zip range and a city that the zip range holds few of.
        """
        api = self._settings.api
        statuses = await self._board.all()
        rows: list[Found] = []
        degraded: set[str] = set()
        unreachable: set[str] = set()
        after: Key | None = None
        order: Order | None = None
        examined = 0
        while True:
            wanted = min(api.max_page_size, api.max_filter_records + 1 - len(rows))
            page = await self._repository.page(
                query, statuses, after=after, limit=wanted, order=order
            )
            rows += page.rows
            examined += page.examined
            if len(rows) > api.max_filter_records:
                raise TooManyMatches(api.max_filter_records)
            if examined > api.max_filter_scan:
                raise TooManyMatches(api.max_filter_records, scanned=api.max_filter_scan)
            degraded.update(page.degraded)
            unreachable.update(page.unreachable)
            if page.next_after is None:
                rows.sort(key=lambda found: str(found.document["_id"]))
                return Listing(
                    rows, None, Order.ID, sorted(degraded), sorted(unreachable)
                ).counted()
            after, order = page.next_after, page.order

    async def upsert(
        self, customer: Customer, write: WriteRequest, *, create_only: bool = False
    ) -> Answer:
        """Create or replace a customer; create-only refuses one that exists."""
        self._backpressure.check()
        held = await self._publishing.records([write.item])
        made = None if held else await self._upsert(customer, create_only)
        return await self._publishing.publish_one(write, held, made)

    async def patch(self, customer_id: str, changes: dict[str, Any], write: WriteRequest) -> Answer:
        """Change some fields of a live customer; a zip in another region moves it there.

        A retry under a key seen before publishes the first attempt's merge, never merges again.
        """
        self._backpressure.check()
        held = await self._publishing.records([write.item])
        if held:
            return await self._publishing.publish_one(write, held, None)
        current = self._live(customer_id, await self._topic.lookup(customer_id))
        merged = parse_customer({**customer_of(current), **changes})
        return await self._publishing.publish_one(write, held, await self._upsert(merged, False))

    async def delete(self, customer_id: str, actor: Actor, write: WriteRequest) -> Answer:
        """Tombstone a customer everywhere, once the audit trail has recorded the delete."""
        self._backpressure.check()
        held = await self._publishing.records([write.item])
        made = None if held else self._topic.delete_command(customer_id)
        return await self._publishing.publish_one(write, held, made, actor)

    async def batch(self, items: list[Any], actor: Actor) -> BatchResult:
        """Many upserts and deletes, each answered alone; a 422 for too many of them."""
        self._check_batch_size(items)
        self._backpressure.check()
        return await write_batch(self._topic, self._publishing, actor, items)

    async def keyed_batch(self, items: list[Any], actor: Actor, key: str) -> KeyedBatch:
        """A batch under one idempotency key for all its items (see keyed_batch)."""
        self._check_batch_size(items)
        self._backpressure.check()
        return await write_keyed_batch(self._topic, self._publishing, actor, items, key)

    def _check_batch_size(self, items: list[Any]) -> None:
        limit = self._settings.api.max_batch_items
        if len(items) > limit:
            raise InvalidInput.field(
                ("body", "items"), f"at most {limit} items per batch, got {len(items)}", "too_long"
            )

    async def _upsert(self, customer: Customer, create_only: bool) -> Command:
        try:
            return await self._topic.prepare_upsert(customer, create_only=create_only)
        except ZipOutOfRangeError as error:
            raise InvalidInput.field(_ZIP, str(error)) from error

    def _live(self, customer_id: str, lookup: Lookup) -> Found:
        """The live document; not found when unknown or deleted, unless it may be unread."""
        found = lookup.newest.get(customer_id)
        if found is not None and not found.deleted:
            return found
        if found is not None and found.moved:
            # Only a tombstone pointing elsewhere was readable: the live copies are in regions
            # that could not be reached.
            raise RegionsUnreachable(
                f"customer {customer_id} lives in {found.home}, which cannot be read now "
                f"(unreachable: {sorted(lookup.unreachable)})"
            )
        if found is None and not self._repository.covered(lookup.unreachable):
            raise RegionsUnreachable(
                f"regions {sorted(lookup.unreachable)} and their replicas are unreachable"
            )
        raise CustomerNotFound(customer_id)
