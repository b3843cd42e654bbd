"""The gateway's side of the audit trail (:mod:`regionstore_shared.audit_trail`): status
changes and deletes recorded before they are carried out.

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

Every event of a request carries its ``request_id``: the request's trace id when tracing is on
(find the trace by it), else an id drawn once for the request's events.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator, Sequence
from typing import Literal

from regionstore_gateway.adapters.command_topic import OutcomeUnknownError
from regionstore_shared import audit_trail
from regionstore_shared.audit_trail import (
    Actor,
    AuditAction,
    AuditEvent,
    AuditUnavailableError,
    Detail,
    new_event,
)
from regionstore_shared.delivery import Delivery, Outcome
from regionstore_shared.schemas import Command, DeleteCustomer
from regionstore_shared.status import StatusStoreUnavailableError
from regionstore_shared.tracing import current_trace_id

__all__ = [
    "Actor",
    "AuditAction",
    "AuditEvent",
    "AuditTrail",
    "AuditUnavailableError",
    "AuditedBatch",
    "new_event",
]


class AuditTrail(audit_trail.AuditTrail):
    """The shared trail, plus actions carried out inside a recorded event."""

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


def request_id() -> str:
    """The id of the request in progress, for its audit events: its trace id when it is
    traced, else a new random one (32 hex characters either way)."""
    return current_trace_id() or uuid.uuid4().hex


def delete_detail(command: DeleteCustomer) -> Detail:
    """What a delete's event records of its command."""
    return {"command_id": str(command.command_id), "version": command.version}


class AuditedBatch:
    """The audit events of a batch's deletes: recorded together before the batch is published,
    followed up for each delete Kafka did not acknowledge."""

    def __init__(self, trail: AuditTrail, actor: Actor) -> None:
        self._trail = trail
        self._actor = actor
        self._request_id = request_id()
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
