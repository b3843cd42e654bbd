"""The right of access: everything regionstore holds about a customer, or about a person.

An export reads every region's copy (tombstones included), every parked command and dead
letter that names the customer (opened with the customer's key while it exists), and the
audit events that name it. It is recorded in the audit trail first, by the caller's key id and
the customer id, never with the customer's fields; a trail that cannot be written refuses it.

An unknown customer is answered like a known one with nothing to show. A region or topic that
could not be read is named in ``unreadable``, and the export is then ``complete: false``.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeAlias

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from aiokafka.errors import KafkaError
from pydantic import ValidationError

from regionstore_gateway.adapters.audit_trail import AuditTrail
from regionstore_gateway.adapters.repository import CustomerRepository, Document
from regionstore_gateway.settings import GatewaySettings
from regionstore_shared.audit_trail import Actor, AuditAction, AuditEvent, new_event
from regionstore_shared.clients import kafka_admin, kafka_connection
from regionstore_shared.documents import DELETED, VERSION
from regionstore_shared.personal import (
    CustomerKey,
    ErasedError,
    KeyName,
    KeyStore,
    KeysUnreadableError,
    key_name,
    opened,
)
from regionstore_shared.schemas import Command, UpsertCustomer, decode_command
from regionstore_shared.settings import KafkaSettings
from regionstore_shared.status import StatusBoard

Record: TypeAlias = "ConsumerRecord[bytes, bytes]"
Keys: TypeAlias = Mapping[KeyName, CustomerKey]


class TopicReader(Protocol):
    """Reads whole topics as they stand: their records, and the topics it could not read."""

    async def read(self, topics: Sequence[str]) -> tuple[dict[str, list[Record]], set[str]]: ...


@dataclass(slots=True)
class _Found:
    ids: set[str]
    commands: dict[str, list[dict[str, Any]]] = field(default_factory=dict)


class ExportService:
    """Builds exports and records them in the audit trail."""

    def __init__(
        self,
        *,
        settings: GatewaySettings,
        repository: CustomerRepository,
        board: StatusBoard,
        keyring: KeyStore,
        audit: AuditTrail,
        topics: TopicReader,
    ) -> None:
        self._settings = settings
        self._repository = repository
        self._board = board
        self._keyring = keyring
        self._audit = audit
        self._topics = topics

    async def export(
        self, actor: Actor, *, customer_id: str | None = None, unique_id: str | None = None
    ) -> dict[str, Any]:
        """The export of one customer id, or of every customer id of ``unique_id``.

        Raises AuditUnavailableError, nothing read, when the trail cannot record it.
        """
        target = customer_id if customer_id is not None else _pseudonym(unique_id or "")
        detail: dict[str, str | int | None] = {
            "by": "customer_id" if customer_id is not None else "customer_unique_id"
        }
        await self._audit.record(new_event(actor, AuditAction.CUSTOMER_EXPORT, target, detail))
        kafka = self._settings.kafka
        parked = [kafka.pending_topic(r) for r in self._settings.region_map.names]
        statuses = await self._board.all()
        (copies, unreadable), (records, unread) = await asyncio.gather(
            self._repository.copies(
                customer_ids=[customer_id] if customer_id is not None else [],
                unique_id=unique_id,
                statuses=statuses,
            ),
            self._topics.read([*parked, kafka.deadletter_topic, kafka.audit_topic]),
        )
        found = _Found({customer_id} if customer_id is not None else set())
        found.ids.update(str(d["_id"]) for docs in copies.values() for d in docs)
        commands = {t: _commands(records.get(t, [])) for t in [*parked, kafka.deadletter_topic]}
        unknown: frozenset[KeyName] = frozenset()
        try:
            keys = await self._keyring.find(_keys(commands.values()))
        except KeysUnreadableError as error:
            # A command whose key was not read is shown unopened and not erased, and the key
            # topic is named unreadable: the export says it is incomplete.
            keys, unknown = error.found, error.unknown
            unread = unread | {kafka.key_topic}
        for topic, decoded in commands.items():
            found.commands[topic] = [
                _command_out(record, command, keys, unknown)
                for record, command in decoded
                if command.key in found.ids or _of_person(command, keys, unique_id)
            ]
        found.ids.update(c["customer_id"] for cs in found.commands.values() for c in cs)
        audit = [
            event.model_dump(mode="json", exclude_none=True)
            for event in _events(records.get(kafka.audit_topic, []))
            if event.target in found.ids
        ]
        unreadable_all = sorted(unreadable | unread)
        return {
            "customer_ids": sorted(found.ids),
            "regions": [
                _copy_out(region, document)
                for region, documents in sorted(copies.items())
                for document in documents
                if str(document["_id"]) in found.ids
            ],
            "parked": [c for t in parked for c in found.commands[t]],
            "dead_letters": found.commands[kafka.deadletter_topic],
            "audit_events": audit,
            "unreadable": unreadable_all,
            "complete": not unreadable_all,
        }


def _pseudonym(unique_id: str) -> str:
    """What the trail records of an export by person: a hash, never the unique id."""
    return "unique:" + hashlib.sha256(unique_id.encode()).hexdigest()[:16]


def _commands(records: Iterable[Record]) -> list[tuple[Record, Command]]:
    decoded: list[tuple[Record, Command]] = []
    for record in records:
        if record.value is None:
            continue
        try:
            decoded.append((record, decode_command(record.value)))
        except ValidationError:
            continue
    return decoded


def _keys(commands: Iterable[list[tuple[Record, Command]]]) -> set[KeyName]:
    return {
        name
        for decoded in commands
        for _, command in decoded
        if isinstance(command, UpsertCustomer) and (name := key_name(command)) is not None
    }


def _open(command: Command, keys: Keys) -> Command:
    if not isinstance(command, UpsertCustomer):
        return command
    try:
        return opened(command, keys)
    except ErasedError:
        return command


def _of_person(command: Command, keys: Keys, unique_id: str | None) -> bool:
    if unique_id is None:
        return False
    command = _open(command, keys)
    return (
        isinstance(command, UpsertCustomer)
        and command.customer is not None
        and command.customer.customer_unique_id == unique_id
    )


def _command_out(
    record: Record, command: Command, keys: Keys, unknown: frozenset[KeyName]
) -> dict[str, Any]:
    name = key_name(command) if isinstance(command, UpsertCustomer) else None
    command = _open(command, keys)
    customer = command.customer if isinstance(command, UpsertCustomer) else None
    return {
        "topic": record.topic,
        "partition": record.partition,
        "offset": record.offset,
        "command_id": str(command.command_id),
        "kind": command.kind,
        "customer_id": command.key,
        "version": command.version,
        "customer": None if customer is None else customer.model_dump(mode="json"),
        "erased": isinstance(command, UpsertCustomer) and customer is None and name not in unknown,
    }


def _copy_out(region: str, document: Document) -> dict[str, Any]:
    fields = {k: v for k, v in document.items() if not k.startswith("_")}
    return {
        "region": region,
        "customer_id": str(document["_id"]),
        "version": document.get(VERSION),
        "deleted": bool(document.get(DELETED)),
        "fields": fields,
    }


def _events(records: Iterable[Record]) -> list[AuditEvent]:
    events: list[AuditEvent] = []
    for record in records:
        if record.value is None:
            continue
        try:
            events.append(AuditEvent.model_validate_json(record.value))
        except ValidationError:
            continue
    return events


class KafkaTopicReader:
    """Reads topics from their first offset to their end at the time of asking, within a
    deadline; a topic not read whole by then is reported, never cut short silently."""

    def __init__(self, settings: KafkaSettings, client_id: str, *, within_s: float) -> None:
        self._settings = settings
        self._client_id = f"{client_id}-export"
        self._within_s = within_s

    async def read(self, topics: Sequence[str]) -> tuple[dict[str, list[Record]], set[str]]:
        records: dict[str, list[Record]] = {t: [] for t in topics}
        left: set[TopicPartition] = set()
        try:
            async with asyncio.timeout(self._within_s):
                partitions = await self._partitions(topics)
                left = set(partitions)
                consumer = AIOKafkaConsumer(
                    **kafka_connection(self._settings),
                    client_id=self._client_id,
                    enable_auto_commit=False,
                    auto_offset_reset="earliest",
                    request_timeout_ms=self._settings.request_timeout_ms,
                )
                await consumer.start()
                try:
                    consumer.assign(partitions)
                    ends = await consumer.end_offsets(partitions)
                    await consumer.seek_to_beginning(*partitions)
                    left = {tp for tp in partitions if ends[tp] > 0}
                    while left:
                        polled = await consumer.getmany(*left, timeout_ms=500)
                        for tp, batch in polled.items():
                            records[tp.topic].extend(r for r in batch if r.offset < ends[tp])
                        left = {tp for tp in left if await consumer.position(tp) < ends[tp]}
                finally:
                    await consumer.stop()
        except (KafkaError, TimeoutError):
            return records, {tp.topic for tp in left} or set(topics)
        return records, set()

    async def _partitions(self, topics: Sequence[str]) -> list[TopicPartition]:
        admin = kafka_admin(self._settings, self._client_id)
        await admin.start()
        try:
            described = await admin.describe_topics(list(topics))
        finally:
            await admin.close()
        return sorted(
            TopicPartition(t["topic"], p["partition"])
            for t in described
            if t["error_code"] == 0
            for p in t["partitions"]
        )
