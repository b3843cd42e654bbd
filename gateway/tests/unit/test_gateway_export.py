"""The export service over fakes: what it shows, what it names as unread, what it records."""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, cast

import pytest
from aiokafka import ConsumerRecord

from regionstore_gateway.services.export import ExportService, Record
from regionstore_gateway.settings import GatewaySettings
from regionstore_shared.audit_trail import AuditAction, AuditEvent
from regionstore_shared.domain import upsert_command
from regionstore_shared.personal import (
    CustomerKey,
    KeyName,
    KeyStore,
    KeysUnreadableError,
    seal_all,
)
from regionstore_shared.schemas import Customer, encode_command
from regionstore_shared.status import NodeStatus
from regionstore_testing.keys import MemoryKeyring

PERSON = "861eff4711a542e4b93843c6dd7febb0"
MARKER = "zzexportville"


@dataclass(frozen=True)
class Caller:
    key_id: str = "k1"
    role: str = "operator"
    name: str = "ops"


class FakeRepository:
    def __init__(self, copies: dict[str, list[dict[str, Any]]], unreachable: set[str]) -> None:
        self._copies = copies
        self._unreachable = unreachable

    async def copies(
        self,
        *,
        customer_ids: Sequence[str],
        unique_id: str | None,
        statuses: Mapping[str, NodeStatus],
    ) -> tuple[dict[str, list[dict[str, Any]]], set[str]]:
        return {
            region: [
                d
                for d in docs
                if d["_id"] in customer_ids or d.get("customer_unique_id") == unique_id
            ]
            for region, docs in self._copies.items()
        }, set(self._unreachable)


class FakeBoard:
    async def all(self) -> dict[str, NodeStatus]:
        return {}


class FakeAudit:
    def __init__(self) -> None:
        self.events: list[AuditEvent] = []

    async def record(self, event: AuditEvent) -> None:
        self.events.append(event)


class FakeTopics:
    def __init__(self, records: dict[str, list[Record]], unread: set[str]) -> None:
        self._records = records
        self._unread = unread

    async def read(self, topics: Sequence[str]) -> tuple[dict[str, list[Record]], set[str]]:
        return self._records, set(self._unread)


def record(topic: str, key: str, value: bytes, offset: int = 0) -> Record:
    return ConsumerRecord(topic, 0, offset, 0, 0, key.encode(), value, None, 0, 0, [])


@pytest.fixture
def settings() -> GatewaySettings:
    return GatewaySettings()


async def parked_upsert(settings: GatewaySettings, keys: MemoryKeyring, customer_id: str) -> Record:
    command = upsert_command(
        Customer(
            customer_id=customer_id,
            customer_unique_id=PERSON,
            customer_zip_code_prefix=75000,
            customer_city=MARKER,
            customer_state="GO",
        ),
        regions=settings.region_map,
        version=7,
        issued_at_ms=0,
    )
    (sealed,) = await seal_all([command], keys)
    return record(settings.kafka.pending_topic("region_3"), customer_id, encode_command(sealed))


def service(
    settings: GatewaySettings,
    keys: KeyStore,
    audit: FakeAudit,
    *,
    copies: dict[str, list[dict[str, Any]]] | None = None,
    unreachable: set[str] | None = None,
    records: dict[str, list[Record]] | None = None,
    unread: set[str] | None = None,
) -> ExportService:
    return ExportService(
        settings=settings,
        repository=cast(Any, FakeRepository(copies or {}, unreachable or set())),
        board=cast(Any, FakeBoard()),
        keyring=keys,
        audit=cast(Any, audit),
        topics=FakeTopics(records or {}, unread or set()),
    )


class TestExport:
    async def test_an_unknown_customer_has_nothing_to_show_and_is_recorded(
        self, settings: GatewaySettings
    ) -> None:
        audit = FakeAudit()
        answer = await service(settings, MemoryKeyring(), audit).export(
            Caller(), customer_id="nobody"
        )
        assert answer["regions"] == answer["parked"] == answer["dead_letters"] == []
        assert answer["complete"] is True
        (event,) = audit.events
        assert (event.action, event.target, event.key_id) == (
            AuditAction.CUSTOMER_EXPORT,
            "nobody",
            "k1",
        )

    async def test_copies_parked_commands_and_unread_regions_are_shown(
        self, settings: GatewaySettings
    ) -> None:
        keys, audit = MemoryKeyring(), FakeAudit()
        customer_id = uuid.uuid4().hex
        parked = await parked_upsert(settings, keys, customer_id)
        copies = {"region_2": [{"_id": customer_id, "_v": 7, "customer_city": MARKER}]}
        answer = await service(
            settings,
            keys,
            audit,
            copies=copies,
            unreachable={"region_3"},
            records={parked.topic: [parked]},
        ).export(Caller(), customer_id=customer_id)
        assert answer["regions"] == [
            {
                "region": "region_2",
                "customer_id": customer_id,
                "version": 7,
                "deleted": False,
                "fields": {"customer_city": MARKER},
            }
        ]
        (shown,) = answer["parked"]
        assert shown["customer"]["customer_city"] == MARKER
        assert shown["erased"] is False
        assert (answer["unreadable"], answer["complete"]) == (["region_3"], False)

    async def test_by_person_finds_ids_in_parked_commands_and_records_no_unique_id(
        self, settings: GatewaySettings
    ) -> None:
        keys, audit = MemoryKeyring(), FakeAudit()
        customer_id = uuid.uuid4().hex
        parked = await parked_upsert(settings, keys, customer_id)
        answer = await service(settings, keys, audit, records={parked.topic: [parked]}).export(
            Caller(), unique_id=PERSON
        )
        assert answer["customer_ids"] == [customer_id]
        (event,) = audit.events
        assert PERSON not in event.model_dump_json()

    async def test_an_erased_command_is_shown_without_its_fields(
        self, settings: GatewaySettings
    ) -> None:
        keys, audit = MemoryKeyring(), FakeAudit()
        customer_id = uuid.uuid4().hex
        parked = await parked_upsert(settings, keys, customer_id)
        await keys.destroy({customer_id: 8})
        unread = {settings.kafka.deadletter_topic}
        answer = await service(
            settings, keys, audit, records={parked.topic: [parked]}, unread=unread
        ).export(Caller(), customer_id=customer_id)
        (shown,) = answer["parked"]
        assert (shown["erased"], shown["customer"]) == (True, None)
        assert answer["unreadable"] == [settings.kafka.deadletter_topic]

    async def test_a_command_whose_key_was_not_read_is_unread_not_erased(
        self, settings: GatewaySettings
    ) -> None:
        keys, audit = MemoryKeyring(), FakeAudit()
        customer_id = uuid.uuid4().hex
        parked = await parked_upsert(settings, keys, customer_id)
        answer = await service(
            settings, Unreadable(), audit, records={parked.topic: [parked]}
        ).export(Caller(), customer_id=customer_id)
        (shown,) = answer["parked"]
        assert (shown["erased"], shown["customer"]) == (False, None)
        assert (answer["unreadable"], answer["complete"]) == ([settings.kafka.key_topic], False)


class Unreadable(MemoryKeyring):
    """A key topic that cannot be read to its end in time."""

    async def find(self, names: Iterable[KeyName]) -> dict[KeyName, CustomerKey]:
        raise KeysUnreadableError({}, names, "timed out")
