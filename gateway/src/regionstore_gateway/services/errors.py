"""Domain errors the services raise; api/errors.py answers each with its HTTP status.

The write path's own errors (Kafka's, create-only's) stay where they are raised, in writes.py,
and are named here too, so a service's caller finds every refusal in one place.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from fastapi.exceptions import RequestValidationError

from regionstore_gateway.adapters.command_topic import (
    CustomerExistsError,
    CustomerUnreadableError,
    KafkaUnavailableError,
    OutcomeUnknownError,
)


class DomainError(Exception):
    """A request the gateway refuses for a reason of its own: nothing was written."""


class CustomerNotFound(DomainError):
    """No live customer has this id: never written, or deleted."""

    def __init__(self, customer_id: str) -> None:
        super().__init__(f"customer {customer_id} not found")
        self.customer_id = customer_id


class RegionsUnreachable(DomainError):
    """The regions that may hold the customer cannot be read now."""


class TooManyMatches(DomainError):
    """A query for every match matches more than an answer may carry, or needs more index
    entries read than an answer may cost (``scanned``)."""

    def __init__(self, limit: int, *, scanned: int | None = None) -> None:
        reason = (
            f"matches more than {limit} records"
            if scanned is None
            else f"needs more than {scanned} index entries of one region read"
        )
        super().__init__(reason)
        self.limit = limit


class RegionNotFound(DomainError):
    """No region (node) by that name."""

    def __init__(self, region: str, *, noun: str = "region") -> None:
        super().__init__(f"unknown {noun} {region!r}")
        self.region = region


class InvalidInput(RequestValidationError):
    """A 422 naming the fields at fault, in FastAPI's validation shape (so answered by it)."""

    def __init__(self, errors: Sequence[Any]) -> None:
        super().__init__(errors)

    @classmethod
    def field(
        cls, loc: Sequence[str | int], message: str, kind: str = "value_error"
    ) -> InvalidInput:
        """A 422 for one field."""
        return cls([{"loc": tuple(loc), "msg": message, "type": kind}])


__all__ = [
    "CustomerExistsError",
    "CustomerNotFound",
    "CustomerUnreadableError",
    "DomainError",
    "InvalidInput",
    "KafkaUnavailableError",
    "OutcomeUnknownError",
    "RegionNotFound",
    "RegionsUnreachable",
    "TooManyMatches",
]
