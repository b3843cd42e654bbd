"""The audit trail: who changed a region's status or deleted a customer, what, and when.

Every such action is recorded as one JSON event on the Kafka topic ``audit.events`` (one
partition, so the trail has one total order; unlimited retention), keyed by its target, produced
with acks=all. An event names the caller by the id of its API key, never the key itself.

Ordering: the event is published, and acknowledged, **before** the action. A trail that cannot
be written refuses the action (503 with ``Retry-After``, nothing done), which keeps "a refusal
means the write was not taken" and leaves no action without its record. The other order would
let an action happen, and be answered, with no trace of who did it whenever Kafka failed
between the two. The price is that an event may stand for an action that then did not happen:
when the action fails, a follow-up event with ``"outcome": "failed"`` (or ``"unknown"`` when
the action may or may not have happened, e.g. a delete whose Kafka acknowledgement timed out)
and ``"follows": <event_id>`` is published, best effort. A reader takes an event without a
follow-up as done.

A delete's event is published just before its command is produced, so it carries the command's
id and version; a retry of a command whose outcome was unknown (same ``Idempotency-Key``)
publishes a new event for the same command. A retry answered from the key's record produces
nothing and records nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Literal, Protocol

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError
from pydantic import BaseModel, ConfigDict, Field

from regionstore_gateway.writes import (
    Delivery,
    Outcome,
    OutcomeUnknownError,
    Writes,
    Written,
    delivery_of,
)
from regionstore_shared.schemas import Command, DeleteCustomer
from regionstore_shared.status import StatusStoreUnavailableError

log = logging.getLogger(__name__)

Detail = Mapping[str, str | int | None]


class AuditAction(StrEnum):
    """What was done."""

    REGION_STATUS = "region.status"
    """A region's status was set; ``target`` is the region, ``detail.status`` the new status."""
    CUSTOMER_DELETE = "customer.delete"
    """A customer was deleted; ``target`` is its id, ``detail`` the command's id and version."""


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


def delete_detail(command: DeleteCustomer) -> Detail:
    """What a delete's event records of its command."""
    return {"command_id": str(command.command_id), "version": command.version}


class AuditUnavailableError(Exception):
    """The trail did not acknowledge an action's event, so the action was not taken."""

    def __init__(self, event: AuditEvent, cause: BaseException | None) -> None:
        super().__init__(
            f"the audit trail cannot be written (Kafka did not acknowledge the event: "
            f"{cause!r}); {event.action} of {event.target} was not done"
        )
        self.event = event


class AuditTrail:
    """Publishes audit events with the gateway's producer (acks=all, idempotent)."""

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
        pending: list[asyncio.Future[object] | BaseException] = []
        for event in events:
            try:
                pending.append(
                    await self._producer.send(
                        self._topic, value=event.encode(), key=event.target.encode()
                    )
                )
            except KafkaError as error:
                pending.append(error)
        futures = [p for p in pending if not isinstance(p, BaseException)]
        if futures:
            # The futures belong to the producer: waited for, never cancelled.
            await asyncio.wait(futures, timeout=self._timeout_s)
        return [delivery_of(p) for p in pending]

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

    @contextlib.asynccontextmanager
    async def action(self, event: AuditEvent) -> AsyncIterator[AuditEvent]:
        """Record ``event``, then run the action in the block; a failed action is followed up.

        Raises AuditUnavailableError, before the block runs, when the event is not recorded.
        """
        await self.record(event)
        try:
            yield event
        except Exception as error:
            self.follow_up(event, _outcome(error), error)
            raise


@dataclass(frozen=True, slots=True)
class AuditedSender:
    """Sends commands like Writes.send, each delete only once its audit event is recorded."""

    writes: Writes
    trail: AuditTrail
    actor: Actor
    request_id: str | None = None

    async def send(self, command: Command, *, wait: bool) -> Written:
        """Record the delete's event, then publish the command."""
        if not isinstance(command, DeleteCustomer):
            return await self.writes.send(command, wait=wait)
        event = new_event(
            self.actor,
            AuditAction.CUSTOMER_DELETE,
            command.key,
            delete_detail(command),
            request_id=self.request_id,
        )
        async with self.trail.action(event):
            return await self.writes.send(command, wait=wait)


class AuditedBatch:
    """The audit events of a batch's deletes: recorded together before the batch is published,
    followed up for each delete Kafka did not acknowledge."""

    def __init__(self, trail: AuditTrail, actor: Actor, request_id: str | None = None) -> None:
        self._trail = trail
        self._actor = actor
        self._request_id = request_id
        self._events: dict[uuid.UUID, AuditEvent] = {}

    async def record(self, commands: Sequence[Command]) -> list[AuditUnavailableError | None]:
        """Per command, None when it may be published, else why it may not.

        Only deletes are audited; their events go out together, in one round trip.
        """
        deletes = [c for c in commands if isinstance(c, DeleteCustomer)]
        events = [
            new_event(
                self._actor,
                AuditAction.CUSTOMER_DELETE,
                c.key,
                delete_detail(c),
                request_id=self._request_id,
            )
            for c in deletes
        ]
        refused: dict[uuid.UUID, AuditUnavailableError] = {}
        for command, event, delivery in zip(
            deletes, events, await self._trail.publish(events) if events else [], strict=True
        ):
            if delivery.outcome is Outcome.ACCEPTED:
                self._events[command.command_id] = event
                continue
            error = delivery.error or RuntimeError("not acknowledged")
            if delivery.outcome is Outcome.UNKNOWN:
                self._trail.follow_up(event, "failed", error)
            refused[command.command_id] = AuditUnavailableError(event, error)
        return [refused.get(c.command_id) for c in commands]

    def settle(self, commands: Sequence[Command], deliveries: Sequence[Delivery]) -> None:
        """Follow up, best effort, every recorded delete that Kafka did not acknowledge."""
        for command, delivery in zip(commands, deliveries, strict=True):
            event = self._events.get(command.command_id)
            if event is None or delivery.outcome is Outcome.ACCEPTED:
                continue
            outcome: Literal["failed", "unknown"] = (
                "failed" if delivery.outcome is Outcome.NOT_SENT else "unknown"
            )
            self._trail.follow_up(event, outcome, delivery.error or RuntimeError(outcome))


def _outcome(error: Exception) -> Literal["failed", "unknown"]:
    if isinstance(error, OutcomeUnknownError):
        return "unknown"
    if isinstance(error, StatusStoreUnavailableError) and not error.certainly_unchanged:
        return "unknown"
    return "failed"


def _now() -> datetime:
    return datetime.now(UTC)
