"""The latest status changes of every region, read back from the audit trail for the console.

Every gateway tails ``audit.events`` on its own (no consumer group: it assigns the topic's one
partition, starts a bounded number of events before the end, then follows), so every gateway
shows the same trail, whichever of them took the change. The changes live in memory only; while
Kafka cannot be reached the tail keeps what it has and the region list shows that.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Literal

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from pydantic import ValidationError

from regionstore_shared.audit_trail import DETECTOR, AuditAction, AuditEvent
from regionstore_shared.clients import kafka_connection
from regionstore_shared.settings import KafkaSettings
from regionstore_shared.status import RegionStatus, SetBy

log = logging.getLogger(__name__)


Outcome = Literal["done", "failed", "unknown"]


@dataclass(frozen=True, slots=True)
class StatusChange:
    """One region status change as the trail recorded it, with what became of it."""

    event_id: str
    at: datetime
    key_id: str
    status: RegionStatus
    by: SetBy = SetBy.OPERATOR
    reason: str | None = None
    key_name: str | None = None
    outcome: Outcome = "done"
    """``done`` until a follow-up says the change ``failed`` or its outcome is ``unknown``
    (the trail records a change before making it)."""


class RecentChanges:
    """The last ``keep`` status changes per region, newest first, from events in trail order.

    A follow-up event marks its change ``failed`` or ``unknown``; the change stays listed, so
    an attempt that did not happen is shown as such rather than hidden.
    """

    def __init__(self, keep: int) -> None:
        self._keep = keep
        self._changes: dict[str, deque[StatusChange]] = {}
        self._changed = asyncio.Condition()
        self._generation = 0

    def of(self, region: str) -> list[StatusChange]:
        """A region's recent changes, newest first."""
        return list(self._changes.get(region, ()))

    def apply(self, events: Iterable[AuditEvent]) -> bool:
        """Take events in trail order; whether any changed what is shown."""
        changed = False
        for event in events:
            if event.action is not AuditAction.REGION_STATUS:
                continue
            changed = self._apply(event) or changed
        return changed

    def _apply(self, event: AuditEvent) -> bool:
        changes = self._changes.setdefault(event.target, deque(maxlen=self._keep))
        if event.follows is not None:
            return self._settle(changes, str(event.follows), event.outcome or "unknown")
        try:
            status = RegionStatus(str(event.detail.get("status")))
        except ValueError:
            return False
        by = SetBy.DETECTOR if event.role == DETECTOR.role else SetBy.OPERATOR
        reason = event.detail.get("reason")
        changes.appendleft(
            StatusChange(
                str(event.event_id),
                event.at,
                event.key_id,
                status,
                by,
                str(reason) if reason is not None else None,
                event.key_name,
            )
        )
        return True

    @staticmethod
    def _settle(changes: deque[StatusChange], event_id: str, outcome: Outcome) -> bool:
        for index, change in enumerate(changes):
            if change.event_id == event_id:
                changes[index] = replace(change, outcome=outcome)
                return True
        return False

    @property
    def generation(self) -> int:
        """Bumped whenever what is shown changes."""
        return self._generation

    async def bump(self) -> None:
        """Wake everyone waiting for a change."""
        async with self._changed:
            self._generation += 1
            self._changed.notify_all()

    async def wait(self, seen: int, within_s: float) -> int:
        """Return the generation once it moves past ``seen``, or after ``within_s`` seconds."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(within_s), self._changed:
                await self._changed.wait_for(lambda: self._generation != seen)
        return self._generation


def decode(records: Sequence[ConsumerRecord[bytes, bytes]]) -> list[AuditEvent]:
    """The events among records; anything else on the topic is skipped, with a warning."""
    events: list[AuditEvent] = []
    for record in records:
        try:
            events.append(AuditEvent.model_validate_json(record.value or b""))
        except ValidationError as error:
            log.warning(
                "audit record skipped",
                extra={"offset": record.offset, "error": str(error.errors()[:1])},
            )
    return events


class StatusHistory:
    """Follows the audit topic into a RecentChanges, reconnecting whenever Kafka fails."""

    def __init__(
        self,
        settings: KafkaSettings,
        client_id: str,
        recent: RecentChanges,
        *,
        tail_events: int,
        retry_s: float = 1.0,
        max_retry_s: float = 30.0,
        open_consumer: Callable[[], AIOKafkaConsumer] | None = None,
    ) -> None:
        self._settings = settings
        self._client_id = f"{client_id}-audit-tail"
        self._recent = recent
        self._tail_events = tail_events
        self._retry_s = retry_s
        self._max_retry_s = max_retry_s
        self._partition = TopicPartition(settings.audit_topic, 0)
        self._next: int | None = None
        self._task: asyncio.Task[None] | None = None
        self._open_consumer = open_consumer or self._consumer

    def _consumer(self) -> AIOKafkaConsumer:
        return AIOKafkaConsumer(
            **kafka_connection(self._settings),
            client_id=self._client_id,
            group_id=None,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            request_timeout_ms=self._settings.request_timeout_ms,
            fetch_max_wait_ms=self._settings.held_fetch_ms,
        )

    def start(self) -> None:
        """Follow in the background: start-up does not wait for the trail, nor for Kafka."""
        self._task = asyncio.create_task(self._follow(), name="audit-tail")

    async def stop(self) -> None:
        """Stop following."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _follow(self) -> None:
        pause = self._retry_s
        while True:
            consumer = self._open_consumer()
            try:
                await consumer.start()
                consumer.assign([self._partition])
                await self._seek(consumer)
                pause = self._retry_s
                while True:
                    batches = await consumer.getmany(self._partition, timeout_ms=1000)
                    records = batches.get(self._partition, [])
                    if not records:
                        continue
                    self._next = records[-1].offset + 1
                    if self._recent.apply(decode(records)):
                        await self._recent.bump()
            except Exception as error:
                # aiokafka rides out broker outages inside getmany; this is for a start or a
                # seek that failed, or anything unexpected: start over where we were.
                log.warning("audit tail restarting", extra={"error": repr(error), "in_s": pause})
            finally:
                await consumer.stop()
            await asyncio.sleep(pause)
            pause = min(pause * 2, self._max_retry_s)

    async def _seek(self, consumer: AIOKafkaConsumer) -> None:
        if self._next is not None:
            consumer.seek(self._partition, self._next)
            return
        first = (await consumer.beginning_offsets([self._partition]))[self._partition]
        end = (await consumer.end_offsets([self._partition]))[self._partition]
        consumer.seek(self._partition, max(first, end - self._tail_events))
