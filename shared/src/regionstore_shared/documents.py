"""How customers and tombstones are laid out in a regional store.

``_id`` is the customer id. Bookkeeping fields start with ``_``: ``_v`` the (effective) version
that wrote the document, ``_cmd`` the command that did, ``_pos`` that command's position in its
partition of the command topic (which orders one customer's writes as they were acknowledged),
``_deleted`` for tombstones, ``_home`` the customer's home region (so a fan-out read takes
each customer from one region only), ``_city_key``/``_state`` for accent- and case-free filters.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Final

from pymongo.asynchronous.collection import AsyncCollection

from regionstore_shared.schemas import Command, Customer, UpsertCustomer, fold_text

Collection = AsyncCollection[dict[str, Any]]
"""A regional store's customers collection; the one spelling every module imports."""

VERSION: Final = "_v"
DELETED: Final = "_deleted"
HOME: Final = "_home"
CITY_KEY: Final = "_city_key"
COMMAND_ID: Final = "_cmd"
POSITION: Final = "_pos"
APPLIED_AT: Final = "_applied_at"

CUSTOMER_FIELDS: Final = (
    "customer_unique_id",
    "customer_zip_code_prefix",
    "customer_city",
    "customer_state",
)


def live_document(command: UpsertCustomer) -> dict[str, Any]:
    """The document an upsert leaves in a region that holds the customer."""
    customer = command.customer
    if customer is None:
        raise ValueError(f"command {command.command_id}: the customer is sealed, not opened")
    return {
        "_id": customer.customer_id,
        **customer.model_dump(include=set(CUSTOMER_FIELDS)),
        CITY_KEY: fold_text(customer.customer_city),
        HOME: command.home_region,
        VERSION: command.version,
        DELETED: False,
        COMMAND_ID: str(command.command_id),
        APPLIED_AT: datetime.now(UTC),
        **_position(command),
    }


def tombstone_document(command: Command) -> dict[str, Any]:
    """The document that marks a customer gone from a region, at the command's version.

    An upsert's tombstone (the customer lives elsewhere) keeps ``_home``, so a reader that finds
    only it knows the customer exists in a region it could not read; a delete's has none, nor
    has an erased upsert's (its customer is sealed with a destroyed key).
    """
    document: dict[str, Any] = {
        "_id": command.key,
        VERSION: command.version,
        DELETED: True,
        COMMAND_ID: str(command.command_id),
        APPLIED_AT: datetime.now(UTC),
        **_position(command),
    }
    if isinstance(command, UpsertCustomer) and command.is_open:
        document[HOME] = command.home_region
    return document


def _position(command: Command) -> dict[str, int]:
    return {} if command.position is None else {POSITION: command.position}


def holds_write(document: dict[str, Any], command_id: str, position: int) -> bool:
    """Whether ``document`` holds the write of ``command_id`` (at ``position`` in its partition
    of the command topic), or a write the partition took after it.

    One customer's commands share a partition, so a later position is a write acknowledged
    after this one: this one was applied before it, or was a retry that overlapped it. A
    document from before positions were recorded holds neither.
    """
    if document.get(COMMAND_ID) == command_id:
        return True
    held = document.get(POSITION)
    return held is not None and int(held) > position


def customer_from_document(document: dict[str, Any]) -> Customer:
    """The customer a live document holds."""
    return Customer(
        customer_id=document["_id"], **{field: document[field] for field in CUSTOMER_FIELDS}
    )
