"""The audit trail as an operator reads it: who changed a region's status or deleted a customer,
when, and what became of it.

The gateway records an action before taking it, and publishes a follow-up when the action then
failed or its outcome is unknown (see ``regionstore_shared.audit_trail``). A history folds each
follow-up into its action, so every line says ``done``, ``failed`` or ``unknown``; a live line is
printed as the event arrives, and a follow-up that comes later gets its own line.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition

from regionstore_shared.audit_trail import AuditAction, AuditEvent
from regionstore_shared.clients import kafka_connection
from regionstore_shared.settings import KafkaSettings
from regionstore_tools.gateway import ToolError

Outcome = Literal["done", "failed", "unknown"]

_DURATION = re.compile(r"(\d+)\s*([smhd])")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}
CLOSE_WITHIN_S = 5.0
"""How long a reader waits for its consumer to stop."""


def parse_since(text: str, now: datetime) -> datetime:
    """``30m``, ``2h``, ``7d`` (ago) or an RFC 3339 time; a ToolError for anything else."""
    duration = _DURATION.fullmatch(text.strip())
    if duration is not None:
        return now - timedelta(**{_UNITS[duration[2]]: int(duration[1])})
    try:
        at = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ToolError(
            f"--since {text!r}: give a duration (90s, 30m, 2h, 7d) or a time "
            "(2026-12-06T10:00:00Z)",
            2,
        ) from None
    return at if at.tzinfo is not None else at.replace(tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class Entry:
    """An action of the trail with what became of it (a history line)."""

    event: AuditEvent
    outcome: Outcome
    error: str | None = None

    def as_json(self) -> dict[str, Any]:
        """The event as recorded, with its outcome (and the follow-up's error)."""
        body = self.event.model_dump(mode="json", exclude_none=True)
        body["outcome"] = self.outcome
        if self.error is not None:
            body["error"] = self.error
        return body


def matches(event: AuditEvent, region: str | None) -> bool:
    """Every event, or only the status changes of ``region``."""
    return region is None or (event.action is AuditAction.REGION_STATUS and event.target == region)


def fold(events: Iterable[AuditEvent]) -> list[Entry]:
    """Actions in trail order, each with its follow-up's outcome; a follow-up of an action
    before the events read is its own entry."""
    entries: list[Entry] = []
    index: dict[str, int] = {}
    for event in events:
        if event.follows is None:
            index[str(event.event_id)] = len(entries)
            entries.append(Entry(event, "done"))
            continue
        error = _error(event)
        position = index.get(str(event.follows))
        if position is None:
            entries.append(Entry(event, event.outcome or "unknown", error))
            continue
        entries[position] = Entry(entries[position].event, event.outcome or "unknown", error)
    return entries


def _error(event: AuditEvent) -> str | None:
    error = event.detail.get("error")
    return str(error) if error is not None else None


def timestamp(at: datetime) -> str:
    """RFC 3339 in UTC to the millisecond, as the logs write it."""
    return at.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _who(event: AuditEvent) -> str:
    if event.key_name:
        return f"{event.key_name} ({event.key_id}, {event.role})"
    return f"{event.key_id} ({event.role})"


def _what(event: AuditEvent) -> str:
    if event.action is AuditAction.REGION_STATUS:
        return f"{event.target} set {event.detail.get('status')}"
    if event.action is AuditAction.CUSTOMER_DELETE:
        command, version = event.detail.get("command_id"), event.detail.get("version")
        return f"customer {event.target} deleted (command {command}, version {version})"
    if event.action is AuditAction.CUSTOMER_REPAIR:
        detail = event.detail
        return (
            f"repair of {detail.get('customers')} customers in {event.target} "
            f"({detail.get('republished')} published again, {detail.get('tombstoned')} "
            "tombstoned)"
        )
    return f"{event.action} {event.target}"


def entry_line(entry: Entry) -> str:
    """A history line: when, what, who, and what became of it."""
    event = entry.event
    if event.follows is not None:
        head = f"{timestamp(event.at)}  follow-up of {event.follows} ({_what(event)})"
    else:
        head = f"{timestamp(event.at)}  {_what(event)}  by {_who(event)}"
    return f"{head}  {entry.outcome}{f': {entry.error}' if entry.error else ''}"


def live_line(event: AuditEvent) -> str:
    """A line for an event as it arrives: an action (its outcome follows only if it failed or
    is unknown), or a follow-up saying what became of an earlier one."""
    if event.follows is None:
        return f"{timestamp(event.at)}  {_what(event)}  by {_who(event)}"
    error = _error(event)
    outcome = f"{event.outcome or 'unknown'}{f': {error}' if error else ''}"
    head = f"{timestamp(event.at)}  {_what(event)}  by {_who(event)}"
    return f"{head}  {outcome} (follows {event.follows})"


def decode(records: Iterable[ConsumerRecord[bytes, bytes]]) -> list[AuditEvent]:
    """The events among records; anything else on the topic is skipped."""
    events = []
    for record in records:
        try:
            events.append(AuditEvent.model_validate_json(record.value or b""))
        except ValueError:
            continue
    return events


class AuditReader:
    """Reads the audit topic's one partition, in no consumer group (nothing is committed)."""

    def __init__(
        self,
        settings: KafkaSettings,
        consumer: AIOKafkaConsumer,
        *,
        stall_s: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._topic = settings.audit_topic
        self._partition = TopicPartition(settings.audit_topic, 0)
        self._consumer = consumer
        self._stall_s = stall_s
        self._clock = clock

    async def start(self) -> None:
        """Connect."""
        await self._consumer.start()

    async def close(self) -> None:
        """Disconnect; a broker that does not answer holds the exit up for a few seconds only."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(CLOSE_WITHIN_S):
                await self._consumer.stop()

    async def history(self, since: datetime) -> list[AuditEvent]:
        """Every event recorded from ``since`` to now, in trail order."""
        consumer, tp = self._consumer, self._partition
        if self._topic not in await consumer.topics():
            raise ToolError(f"there is no audit trail yet (no topic {self._topic})")
        consumer.assign([tp])
        end = (await consumer.end_offsets([tp]))[tp]
        found = (await consumer.offsets_for_times({tp: int(since.timestamp() * 1000)}))[tp]
        consumer.seek(tp, found.offset if found is not None else end)
        events: list[AuditEvent] = []
        progress = self._clock()
        while await consumer.position(tp) < end:
            records = (await consumer.getmany(tp, timeout_ms=1000)).get(tp, [])
            if records:
                progress = self._clock()
            elif self._clock() - progress > self._stall_s:
                raise ToolError(f"the audit trail sent nothing for {self._stall_s:g} s")
            events += decode(records)
        return events

    async def next_events(self) -> list[AuditEvent]:
        """The events recorded since the last read (after :meth:`history`); waits up to a
        second for some."""
        batch = await self._consumer.getmany(self._partition, timeout_ms=1000)
        return decode(batch.get(self._partition, []))


def audit_reader(settings: KafkaSettings, client_id: str) -> AuditReader:
    """A reader with its own consumer."""
    consumer = AIOKafkaConsumer(
        **kafka_connection(settings),
        client_id=f"{client_id}-audit",
        group_id=None,
        enable_auto_commit=False,
        request_timeout_ms=settings.request_timeout_ms,
    )
    return AuditReader(settings, consumer)
