"""Request and response bodies of the HTTP API."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator
from pydantic.config import JsonDict

from regionstore_gateway.adapters.idempotency import IdempotencyKey
from regionstore_shared.schemas import (
    City,
    Customer,
    CustomerId,
    StateCode,
    UniqueId,
    ZipPrefix,
)
from regionstore_shared.status import NodeStatus, RegionStatus, SetBy

# Examples for the OpenAPI document: one customer, as written and as read.
_FIELDS: JsonDict = {
    "customer_unique_id": "861eff4711a542e4b93843c6dd7febb0",
    "customer_zip_code_prefix": 14409,
    "customer_city": "franca",
    "customer_state": "SP",
}
_ID = "06b8999e2fba1a1fbc88172c00ba8bc7"
_READ: JsonDict = {
    "customer_id": _ID,
    **_FIELDS,
    "region": "region_1",
    "served_by": "region_1",
    "fallback": False,
    "version": 7532539960507760640,
}
_COMMAND_ID = "9aff62b7-ccbb-4fe5-8a5c-0a8a441407b5"


class CustomerFields(BaseModel):
    """A full customer body for PUT; ``customer_id`` comes from the path."""

    model_config = ConfigDict(
        extra="forbid", str_strip_whitespace=True, json_schema_extra={"examples": [_FIELDS]}
    )

    customer_id: CustomerId | None = Field(
        default=None, description="Optional; must equal the id in the path when given."
    )
    customer_unique_id: UniqueId
    customer_zip_code_prefix: ZipPrefix
    customer_city: City
    customer_state: StateCode


class CustomerPatch(BaseModel):
    """Any subset of the customer's fields; the id cannot change."""

    model_config = ConfigDict(
        extra="forbid",
        str_strip_whitespace=True,
        json_schema_extra={"examples": [{"customer_zip_code_prefix": 70040}]},
    )

    customer_unique_id: UniqueId | None = None
    customer_zip_code_prefix: ZipPrefix | None = None
    customer_city: City | None = None
    customer_state: StateCode | None = None


class Accepted(BaseModel):
    """A write Kafka has acknowledged: it will reach every region it targets."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "command_id": _COMMAND_ID,
                    "version": 7532539960507760640,
                    "customer_id": _ID,
                    "region": "region_1",
                    "location": f"/v1/customers/{_ID}",
                    "applied": False,
                }
            ]
        }
    )

    command_id: str
    version: int = Field(
        description="The version the gateway gave the write. The stores may hold it at a higher "
        "one: a write acknowledged after another is applied above it, whatever the clocks."
    )
    customer_id: str
    region: str | None = Field(description="Home region after this write (None for deletes).")
    location: str
    applied: bool = Field(
        description="True when ?wait=applied saw the home region (or its replica) hold this "
        "write, or a write acknowledged after it; never for a retry a newer write superseded."
    )


class CustomerOut(Customer):
    """A customer as read, with where it was read from."""

    model_config = ConfigDict(frozen=True, extra="forbid", json_schema_extra={"examples": [_READ]})

    region: str = Field(description="The customer's home region.")
    served_by: str = Field(description="The region whose store answered.")
    fallback: bool = Field(description="True when read from a replica because home was down.")
    version: int


class CustomerExport(BaseModel):
    """Everything regionstore holds about a customer (or a person): the right of access."""

    customer_ids: list[str] = Field(description="The customer ids the export covers.")
    regions: list[dict[str, Any]] = Field(
        description="Every region's copy: region, customer_id, version, deleted, fields."
    )
    parked: list[dict[str, Any]] = Field(
        description="Parked commands naming them, opened while the customer's key exists."
    )
    dead_letters: list[dict[str, Any]] = Field(description="Dead-lettered commands naming them.")
    audit_events: list[dict[str, Any]] = Field(description="Audit events naming them.")
    unreadable: list[str] = Field(
        description="Regions and topics that could not be read: the export is then incomplete."
    )
    complete: bool


class CustomerPage(BaseModel):
    """One page of a list query."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "items": [_READ],
                    "next_cursor": "eyJ2IjoyLCJvIjoiaWQiLCJrIjpbIjA2Yjg5OTllIl0sInEiOiIxMjM0In0",
                    "order": ["customer_id"],
                    "degraded_regions": [],
                    "unreachable_regions": [],
                    "incomplete": False,
                }
            ]
        }
    )

    items: list[CustomerOut]
    next_cursor: str | None = Field(
        description="Where the next page starts; null only at the end of the list. A page "
        "may hold fewer items than asked for, even none, and still have one (a zip range with "
        "a city: docs/reads.md)."
    )
    order: list[str] = Field(
        description="The fields the items are ordered by: customer_id; or the zip prefix, then "
        "customer_id, for a zip range; or customer_city (compared without case or accents), "
        "then customer_id, for a city without a zip range."
    )
    degraded_regions: list[str] = Field(description="Regions read from a replica instead.")
    unreachable_regions: list[str] = Field(description="Regions whose data could not be read.")
    incomplete: bool = Field(description="True when some matching data could not be reached.")


class StatusBody(BaseModel):
    """A new status for a region, case-insensitive."""

    model_config = ConfigDict(json_schema_extra={"examples": [{"status": "unavailable"}]})

    status: NodeStatus

    @field_validator("status", mode="before")
    @classmethod
    def _normalise(cls, value: object) -> object:
        return value.strip().lower() if isinstance(value, str) else value


class StatusChangeOut(BaseModel):
    """A status change of a region, as the audit trail recorded it."""

    at: datetime = Field(description="When it was asked for (UTC).")
    key_id: str = Field(
        description="The id of the API key that asked for it; `detector` for the failure detector."
    )
    key_name: str | None = Field(default=None, description="The name of that key, when it has one.")
    status: RegionStatus
    by: SetBy = Field(description="`operator` (an API key) or `detector` (automatic).")
    reason: str | None = Field(default=None, description="Why the detector changed it.")
    outcome: Literal["done", "failed", "unknown"] = Field(
        default="done",
        description="'done' unless the trail's follow-up says the change failed (nothing "
        "changed) or that its outcome is unknown.",
    )


class RegionOut(BaseModel):
    """A region as the console shows it."""

    name: str
    status: RegionStatus = Field(
        description="`available`; `unavailable`, set by an operator (maintenance: never undone "
        "automatically); or `down`, set by the failure detector (back to `available` once the "
        "store is healthy again, or when an operator says so). Writes for a region that is not "
        "available are parked and its reads served by its replica."
    )
    set_by: SetBy | None = Field(
        default=None,
        description="Who set the status: `operator` or `detector`; null if nobody set it yet "
        "(available by default).",
    )
    set_by_key: str | None = Field(
        default=None, description="The API key id of the operator who set it."
    )
    since: datetime | None = Field(default=None, description="When the status was set (UTC).")
    reason: str | None = Field(default=None, description="Why the detector set it.")
    zip_min: int
    zip_max: int
    replicas: list[str]
    pending: int | None = Field(description="Parked commands not replayed yet; None if unknown.")
    applied: int | None = Field(
        default=None,
        description="Documents the writer, the replicator and recovery have changed in this "
        "region so far (a running total; rates come from successive reads); None if unknown.",
    )
    recent_changes: list[StatusChangeOut] = Field(
        default_factory=list,
        description="The last status changes from the audit trail, newest first (what this "
        "gateway has read of it: while Kafka cannot be reached, the ones read before).",
    )


class RegionList(BaseModel):
    """Every region, and how far the consumers that write them are behind."""

    regions: list[RegionOut]
    lag: dict[str, int | None] = Field(
        description="Commands accepted but not yet applied, per consumer: 'writer' (home "
        "regions) and 'replicator' (replicas); None if unknown. Parked ones count in `pending`."
    )


class BatchUpsert(BaseModel):
    """Create or replace one customer."""

    model_config = ConfigDict(extra="forbid")

    op: Literal["upsert"] = "upsert"
    customer: Customer
    idempotency_key: IdempotencyKey | None = None


class BatchDelete(BaseModel):
    """Delete one customer."""

    model_config = ConfigDict(extra="forbid")

    op: Literal["delete"]
    customer_id: CustomerId
    idempotency_key: IdempotencyKey | None = None


BatchItem = Annotated[BatchUpsert | BatchDelete, Field(discriminator="op")]


class BatchItemResult(BaseModel):
    """The outcome of one batch item, in request order."""

    index: int
    status: Literal["accepted", "rejected", "unknown", "failed"] = Field(
        description="accepted: Kafka acknowledged it. rejected: invalid (see errors). unknown: "
        "sent but not acknowledged in time, it may or may not be applied (command_id says which "
        "command; retry it with the same idempotency_key). failed: certainly not taken."
    )
    customer_id: str | None = None
    command_id: str | None = None
    version: int | None = None
    region: str | None = None
    errors: list[dict[str, object]] | None = None


class BatchResult(BaseModel):
    """Per-item outcomes and their counts."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "accepted": 1,
                    "rejected": 1,
                    "unknown": 0,
                    "failed": 0,
                    "results": [
                        {
                            "index": 0,
                            "status": "accepted",
                            "customer_id": _ID,
                            "command_id": _COMMAND_ID,
                            "version": 7532539960507760640,
                            "region": "region_1",
                        },
                        {
                            "index": 1,
                            "status": "rejected",
                            "customer_id": "c-2",
                            "errors": [
                                {
                                    "loc": ["body", "items", 1, "customer", "customer_state"],
                                    "msg": "Value error, must be one of the 27 Brazilian UF codes",
                                    "type": "value_error",
                                }
                            ],
                        },
                    ],
                }
            ]
        }
    )

    accepted: int
    rejected: int
    unknown: int
    failed: int
    results: list[BatchItemResult]


class OutcomeUnknown(BaseModel):
    """A 504: the command left for Kafka but its acknowledgement did not come in time."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "detail": "Kafka did not acknowledge the write in time; outcome unknown",
                    "outcome": "unknown",
                    "command_id": _COMMAND_ID,
                    "version": 7532539960507760640,
                }
            ]
        }
    )

    detail: str
    outcome: Literal["unknown"] = "unknown"
    command_id: str = Field(description="The command that may or may not be applied.")
    version: int


class NotAccepted(BaseModel):
    """A 503: nothing was published; the write certainly was not accepted."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "detail": "Kafka did not take the write; not accepted: nothing was written",
                    "outcome": "not_accepted",
                }
            ]
        }
    )

    detail: str
    outcome: Literal["not_accepted"] = "not_accepted"


class ErrorMessage(BaseModel):
    """An error answer that is not about one field (401, 403, 404, 409, 429, some 503s)."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [{"detail": "customer 06b8999e2fba1a1fbc88172c00ba8bc7 not found"}]
        }
    )

    detail: str
