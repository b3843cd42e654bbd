"""The audit trail: who changed a region's status or deleted a customer, what, and when.

Every such action is recorded as one JSON event on the Kafka topic ``audit.events`` (one
partition, so the trail has one total order; unlimited retention), keyed by its target, produced
with acks=all. An event names the caller by the id of its API key, never the key itself; the
failure detector, which changes statuses on its own, is named ``detector`` (key id and role).

Ordering: the event is published, and acknowledged, **before** the action. A trail that cannot
be written refuses the action (nothing done), which leaves no action without its record. The
price is that an event may stand for an action that then did not happen: when the action fails,
a follow-up event with ``"outcome": "failed"`` (or ``"unknown"`` when the action may or may not
have happened) and ``"follows": <event_id>`` is published, best effort. A reader takes an event
without a follow-up as done.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Literal, Protocol

from aiokafka import AIOKafkaProducer
from pydantic import BaseModel, ConfigDict, Field

from regionstore_shared.delivery import Delivery, Outcome, Outgoing, deliver

log = logging.getLogger(__name__)

Detail = Mapping[str, str | int | None]


class AuditAction(StrEnum):
    """What was done."""

    REGION_STATUS = "region.status"
    """A region's status was set; ``target`` is the region, ``detail.status`` the new status
    (and, when the detector set it, ``detail.reason``)."""
    CUSTOMER_DELETE = "customer.delete"
    """A customer was deleted; ``target`` is its id, ``detail`` the command's id and version."""
    CUSTOMER_REPAIR = "customer.repair"
    """The anti-entropy repair is about to repair customers; ``target`` names the regions it
    repairs (comma-separated), ``detail`` how many customers, commands published again and
    tombstones written."""
    CUSTOMER_EXPORT = "customer.export"
    """A customer's data was exported; ``target`` is its id (or, for an export by person, a
    hash of the unique id), ``detail.by`` which of the two was asked for."""


class Actor(Protocol):
    """Who asks: the caller's API key id (public), role and key name."""

    @property
    def key_id(self) -> str: ...

    @property
    def role(self) -> str: ...

    @property
    def name(self) -> str: ...


class AuditEvent(BaseModel):
    """One entry of the audit trail."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    schema_version: Literal[1] = 1
    event_id: uuid.UUID = Field(default_factory=uuid.uuid4)
    at: datetime = Field(description="When the action was asked for (UTC).")
    key_id: str = Field(description="The caller's API key id; never the key.")
    key_name: str | None = Field(
        default=None, description="The name the caller's key was given, when it has one."
    )
    role: str
    action: AuditAction
    target: str = Field(description="The region name or the customer id.")
    detail: dict[str, str | int | None]
    request_id: str | None = None
    outcome: Literal["failed", "unknown"] | None = Field(
        default=None,
        description="Only on a follow-up: the action of event ``follows`` failed, or may or "
        "may not have happened.",
    )
    follows: uuid.UUID | None = None

    def encode(self) -> bytes:
        """The event as it is published: JSON, without the fields that are not set."""
        return self.model_dump_json(exclude_none=True).encode()

    def followed_by(self, outcome: Literal["failed", "unknown"], error: str) -> AuditEvent:
        """The follow-up saying what became of this event's action."""
        return self.model_copy(
            update={
                "event_id": uuid.uuid4(),
                "at": _now(),
                "outcome": outcome,
                "follows": self.event_id,
                "detail": {**self.detail, "error": error},
            }
        )


def new_event(
    actor: Actor,
    action: AuditAction,
    target: str,
    detail: Detail,
    *,
    request_id: str | None = None,
) -> AuditEvent:
    """An event for an action ``actor`` is about to take."""
    return AuditEvent(
        at=_now(),
        key_id=actor.key_id,
        key_name=actor.name or None,
        role=str(actor.role),
        action=action,
        target=target,
        detail=dict(detail),
        request_id=request_id,
    )


@dataclass(frozen=True, slots=True)
class SystemActor:
    """A process that acts on its own, named in the trail where a key id would be."""

    key_id: str
    role: str
    name: str = ""
    """Empty: the trail names a process by its key id alone (no ``key_name``)."""


#: The failure detector, as the trail names it.
DETECTOR = SystemActor(key_id="detector", role="detector")
#: The anti-entropy repair running in the background, as the trail names it.
REPAIR = SystemActor(key_id="repair", role="repair")


class AuditUnavailableError(Exception):
    """The trail did not acknowledge an action's event, so the action was not taken."""

    def __init__(self, event: AuditEvent, cause: BaseException | None) -> None:
        super().__init__(
            f"the audit trail cannot be written (Kafka did not acknowledge the event: "
            f"{cause!r}); {event.action} of {event.target} was not done"
        )
        self.event = event


class AuditTrail:
    """Publishes audit events with a service's producer (acks=all, idempotent)."""

    def __init__(self, producer: AIOKafkaProducer, topic: str, *, timeout_s: float) -> None:
        self._producer = producer
        self._topic = topic
        self._timeout_s = timeout_s
        self._follow_ups: set[asyncio.Task[None]] = set()

    async def publish(self, events: Sequence[AuditEvent]) -> list[Delivery]:
        """Publish events together and say, per event, whether Kafka acknowledged it.

        Events are handed to the producer first and their acknowledgements awaited together,
        bounded, so a batch of them costs one round trip, not one each.
        """
        outgoing = [Outgoing(event.encode(), event.target.encode()) for event in events]
        return await deliver(self._producer, self._topic, outgoing, timeout_s=self._timeout_s)

    async def record(self, event: AuditEvent) -> None:
        """Publish one event; raise AuditUnavailableError unless it was acknowledged."""
        (delivery,) = await self.publish([event])
        if delivery.outcome is Outcome.ACCEPTED:
            return
        error = delivery.error or RuntimeError("not acknowledged")
        if delivery.outcome is Outcome.UNKNOWN:
            # The event may still land: say that its action was not taken.
            self.follow_up(event, "failed", error)
        raise AuditUnavailableError(event, error)

    def follow_up(
        self, event: AuditEvent, outcome: Literal["failed", "unknown"], error: BaseException
    ) -> None:
        """Say, best effort and without holding up the answer, what became of the action."""
        task = asyncio.create_task(self._follow_up(event.followed_by(outcome, repr(error))))
        self._follow_ups.add(task)
        task.add_done_callback(self._follow_ups.discard)

    async def _follow_up(self, event: AuditEvent) -> None:
        (delivery,) = await self.publish([event])
        if delivery.outcome is not Outcome.ACCEPTED:
            log.warning(
                "audit follow-up not recorded",
                extra={"follows": str(event.follows), "error": repr(delivery.error)},
            )

    async def close(self) -> None:
        """Wait, bounded, for follow-ups still on their way."""
        if self._follow_ups:
            await asyncio.wait(self._follow_ups, timeout=self._timeout_s)


def _now() -> datetime:
    return datetime.now(UTC)
