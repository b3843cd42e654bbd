"""Request and response bodies of the HTTP API."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from regionstore_gateway.idempotency import IdempotencyKey
from regionstore_shared.schemas import (
    City,
    Customer,
    CustomerId,
    StateCode,
    UniqueId,
    ZipPrefix,
)
from regionstore_shared.status import NodeStatus


class CustomerFields(BaseModel):
    """A full customer body for PUT; ``customer_id`` comes from the path."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    customer_id: CustomerId | None = Field(
        default=None, description="Optional; must equal the id in the path when given."
    )
    customer_unique_id: UniqueId
    customer_zip_code_prefix: ZipPrefix
    customer_city: City
    customer_state: StateCode


class CustomerPatch(BaseModel):
    """Any subset of the customer's fields; the id cannot change."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    customer_unique_id: UniqueId | None = None
    customer_zip_code_prefix: ZipPrefix | None = None
    customer_city: City | None = None
    customer_state: StateCode | None = None


class Accepted(BaseModel):
    """A write Kafka has acknowledged: it will reach every region it targets."""

    command_id: str
    version: int
    customer_id: str
    region: str | None = Field(description="Home region after this write (None for deletes).")
    location: str
    applied: bool = Field(
        description="True when ?wait=applied saw the write in the home region (or its replica)."
    )


class CustomerOut(Customer):
    """A customer as read, with where it was read from."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    region: str = Field(description="The customer's home region.")
    served_by: str = Field(description="The region whose store answered.")
    fallback: bool = Field(description="True when read from a replica because home was down.")
    version: int


class CustomerPage(BaseModel):
    """One page of a list query."""

    items: list[CustomerOut]
    next_cursor: str | None
    degraded_regions: list[str] = Field(description="Regions read from a replica instead.")
    unreachable_regions: list[str] = Field(description="Regions whose data could not be read.")
    incomplete: bool = Field(description="True when some matching data could not be reached.")


class StatusBody(BaseModel):
    """A new status for a region, case-insensitive."""

    status: NodeStatus

    @field_validator("status", mode="before")
    @classmethod
    def _normalise(cls, value: object) -> object:
        return value.strip().lower() if isinstance(value, str) else value


class RegionOut(BaseModel):
    """A region as the console shows it."""

    name: str
    status: NodeStatus
    zip_min: int
    zip_max: int
    replicas: list[str]
    pending: int | None = Field(description="Parked commands not replayed yet; None if unknown.")


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

    accepted: int
    rejected: int
    unknown: int
    failed: int
    results: list[BatchItemResult]


class OutcomeUnknown(BaseModel):
    """A 504: the command left for Kafka but its acknowledgement did not come in time."""

    detail: str
    outcome: Literal["unknown"] = "unknown"
    command_id: str = Field(description="The command that may or may not be applied.")
    version: int


class NotAccepted(BaseModel):
    """A 503: nothing was published; the write certainly was not accepted."""

    detail: str
    outcome: Literal["not_accepted"] = "not_accepted"
