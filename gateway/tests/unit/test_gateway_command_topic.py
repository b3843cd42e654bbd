"""Turning requests into commands: versions, targets, lookups and Kafka's answer."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Mapping
from typing import Any, cast

import pytest
from aiokafka.errors import KafkaConnectionError, NotLeaderForPartitionError
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import format_span_id, format_trace_id
from prometheus_client import REGISTRY
from pymongo.errors import AutoReconnect

from regionstore_gateway.adapters.command_topic import (
    CommandTopic,
    CustomerExistsError,
    CustomerUnreadableError,
    Delivery,
    KafkaUnavailableError,
    Outcome,
    OutcomeUnknownError,
    Published,
    ZipOutOfRangeError,
)
from regionstore_gateway.adapters.repository import CustomerRepository
from regionstore_gateway.settings import ApiSettings, GatewaySettings
from regionstore_shared.apply import Suspicion
from regionstore_shared.clock import HybridClock, version_millis
from regionstore_shared.documents import Collection
from regionstore_shared.schemas import (
    Action,
    Applier,
    Command,
    Customer,
    DeleteCustomer,
    UpsertCustomer,
    decode_command,
    encode_command,
)
from regionstore_shared.settings import KafkaSettings
from regionstore_shared.status import NodeStatus
from regionstore_shared.topics import partition_of
from regionstore_shared.tracing import CommandTracer
from regionstore_testing.keys import MemoryKeyring
from shared.tests.fakes import OnePartition, appended

Document = dict[str, Any]
CUSTOMER = "06b8999e2fba1a1fbc88172c00ba8bc7"
WALL_MS = 1_700_000_000_000
FUTURE_VERSION = (WALL_MS + 30_000) << 22 | 7 << 6 | 9  # 30 s ahead of our wall clock
SEND_FAILS = object()
NEVER = object()  # handed over, never acknowledged
NAMES = ("region_1", "region_2", "region_3")


class FakeProducer(OnePartition):
    """Hands back one future per send, resolved as scripted; SEND_FAILS makes send raise.

    ``on_send`` sees each decoded command as Kafka takes it (a writer applying it, say).
    """

    def __init__(self, outcomes: list[object]) -> None:
        self.outcomes = outcomes
        self.sent: list[tuple[str, bytes, bytes]] = []
        self.headers: list[list[tuple[str, bytes]] | None] = []
        self.on_send: Callable[[Command], None] | None = None

    async def send(
        self,
        topic: str,
        *,
        value: bytes,
        key: bytes,
        headers: list[tuple[str, bytes]] | None = None,
    ) -> asyncio.Future[object]:
        outcome = self.outcomes.pop(0)
        if outcome is SEND_FAILS:
            raise KafkaConnectionError("no broker")
        self.sent.append((topic, value, key))
        self.headers.append(headers)
        if self.on_send is not None:
            self.on_send(decode_command(value))
        future: asyncio.Future[object] = asyncio.get_running_loop().create_future()
        if isinstance(outcome, BaseException):
            future.set_exception(outcome)
        elif outcome is not NEVER:
            future.set_result(appended(topic, len(self.sent) - 1))
        return future

    def commands(self) -> list[Command]:
        return [decode_command(value) for _, value, _ in self.sent]


class FakeCollection:
    """A regional store in a dict answering point reads, each recorded.

    ``fail_with`` fails every read; ``late`` holds every read until it is cancelled.
    """

    def __init__(self) -> None:
        self.docs: dict[str, Document] = {}
        self.queries: list[Document] = []
        self.fail_with: Exception | None = None
        self.late = False

    async def find_one(
        self, query: Document, projection: Mapping[str, int] | None = None
    ) -> Document | None:
        self.queries.append(query)
        if self.late:
            await asyncio.Event().wait()
        if self.fail_with is not None:
            raise self.fail_with
        doc = self.docs.get(query["_id"])
        return None if doc is None else dict(doc)


class FakeBoard:
    def __init__(self) -> None:
        self.statuses: dict[str, NodeStatus] = {}

    async def all(self) -> dict[str, NodeStatus]:
        return dict(self.statuses)


class Gateway:
    """A Writes over three fake regions, a fake status board and a scripted producer."""

    def __init__(
        self,
        settings: GatewaySettings,
        outcomes: list[object] | None = None,
        producer: FakeProducer | None = None,
    ) -> None:
        self.stores = {name: FakeCollection() for name in NAMES}
        self.board = FakeBoard()
        self.producer = producer or FakeProducer(list(outcomes or []))
        repository = CustomerRepository(
            cast("Mapping[str, Collection]", self.stores),
            settings.region_map,
            Suspicion(3.0),
            read_deadline_s=settings.api.read_deadline_ms / 1000,
        )
        self.writes = CommandTopic(
            settings=settings,
            producer=cast(Any, self.producer),
            board=cast(Any, self.board),
            repository=repository,
            clock=HybridClock(1, wall_ms=lambda: WALL_MS),
            keyring=MemoryKeyring(),
        )

    def live(self, region: str, version: int, home: str = "region_1") -> None:
        self.stores[region].docs[CUSTOMER] = {
            "_id": CUSTOMER,
            "_v": version,
            "_deleted": False,
            "_home": home,
            "customer_unique_id": "861eff4711a542e4b93843c6dd7febb0",
            "customer_zip_code_prefix": 14409,
            "customer_city": "franca",
            "customer_state": "SP",
        }

    def tombstone(
        self, region: str, version: int, home: str | None = None, command_id: str = ""
    ) -> None:
        """A delete's tombstone, or with ``home`` an upsert's (the customer lives there)."""
        doc: Document = {"_id": CUSTOMER, "_v": version, "_deleted": True, "_cmd": command_id}
        if home is not None:
            doc["_home"] = home
        self.stores[region].docs[CUSTOMER] = doc

    def reads(self) -> int:
        return sum(len(store.queries) for store in self.stores.values())

    def apply_to(self, region: str) -> None:
        """Let every published command land in ``region`` as soon as Kafka takes it."""

        def land(command: Command) -> None:
            self.stores[region].docs[command.key] = {
                "_id": command.key,
                "_v": command.version,
                "_cmd": str(command.command_id),
            }

        self.producer.on_send = land


@pytest.fixture
def settings(monkeypatch: pytest.MonkeyPatch) -> GatewaySettings:
    for name in list(os.environ):
        if name.upper().startswith("REGIONSTORE_"):
            monkeypatch.delenv(name)
    return GatewaySettings(api=ApiSettings(wait_applied_timeout_s=0.05, read_deadline_ms=10))


@pytest.fixture
def gateway(settings: GatewaySettings) -> Gateway:
    return Gateway(settings)


def make_writes(settings: GatewaySettings, producer: FakeProducer) -> CommandTopic:
    return Gateway(settings, producer=producer).writes


async def upsert(
    writes: CommandTopic, customer: Customer, *, create_only: bool, wait: bool
) -> Published:
    command = await writes.prepare_upsert(customer, create_only=create_only)
    return await writes.send(command, wait=wait)


def published(outcome: Outcome) -> float:
    """The gateway's count of commands published with this outcome, so far."""
    value = REGISTRY.get_sample_value(
        "regionstore_commands_published_total", {"outcome": outcome.value}
    )
    assert value is not None
    return value


def customer(zip_prefix: int = 14409, customer_id: str = CUSTOMER) -> Customer:
    return Customer(
        customer_id=customer_id,
        customer_unique_id="861eff4711a542e4b93843c6dd7febb0",
        customer_zip_code_prefix=zip_prefix,
        customer_city="franca",
        customer_state="SP",
    )


class TestLookup:
    async def test_a_fresh_clock_issues_versions_at_wall_time(self, gateway: Gateway) -> None:
        version = gateway.writes.upsert_command(customer()).version
        assert version_millis(version) == WALL_MS
        assert version < FUTURE_VERSION

    async def test_the_found_version_is_observed(self, gateway: Gateway) -> None:
        gateway.live("region_1", FUTURE_VERSION)
        lookup = await gateway.writes.lookup(CUSTOMER)
        assert lookup.newest[CUSTOMER].version == FUTURE_VERSION
        assert gateway.writes.upsert_command(customer()).version > FUTURE_VERSION
        assert gateway.writes.delete_command(CUSTOMER).version > FUTURE_VERSION

    async def test_a_found_tombstones_version_is_observed(self, gateway: Gateway) -> None:
        for region in NAMES:
            gateway.tombstone(region, FUTURE_VERSION)
        lookup = await gateway.writes.lookup(CUSTOMER)
        assert lookup.newest[CUSTOMER].deleted
        assert gateway.writes.upsert_command(customer()).version > FUTURE_VERSION

    async def test_the_newest_copy_is_the_one_observed(self, gateway: Gateway) -> None:
        gateway.live("region_1", 5)
        gateway.tombstone("region_2", FUTURE_VERSION)
        gateway.live("region_3", 5)
        found = (await gateway.writes.lookup(CUSTOMER)).newest[CUSTOMER]
        assert (found.served_by, found.deleted) == ("region_2", True)
        assert gateway.writes.delete_command(CUSTOMER).version > FUTURE_VERSION

    async def test_not_found_leaves_the_clock_alone(self, gateway: Gateway) -> None:
        lookup = await gateway.writes.lookup(CUSTOMER)
        assert (lookup.newest, lookup.unreachable) == ({}, set())
        assert version_millis(gateway.writes.upsert_command(customer()).version) == WALL_MS

    async def test_reads_one_id_in_every_readable_region(self, gateway: Gateway) -> None:
        gateway.board.statuses = {"region_2": NodeStatus.UNAVAILABLE}
        lookup = await gateway.writes.lookup(CUSTOMER)
        assert lookup.unreachable == {"region_2"}
        assert gateway.stores["region_1"].queries == [{"_id": CUSTOMER}]
        assert gateway.stores["region_2"].queries == []
        assert gateway.stores["region_3"].queries == [{"_id": CUSTOMER}]


class TestUpsertCommand:
    @pytest.mark.parametrize(
        ("zip_prefix", "home", "replica", "tombstoned"),
        [
            (14409, "region_1", "region_3", "region_2"),
            (50000, "region_2", "region_1", "region_3"),
            (80000, "region_3", "region_2", "region_1"),
        ],
    )
    def test_carries_home_and_every_region_as_a_target(
        self, gateway: Gateway, zip_prefix: int, home: str, replica: str, tombstoned: str
    ) -> None:
        command = gateway.writes.upsert_command(customer(zip_prefix))
        assert command.home_region == home
        assert [(t.region, t.role, t.action) for t in command.targets] == [
            (home, Applier.WRITER, Action.UPSERT),
            (replica, Applier.REPLICATOR, Action.UPSERT),
            (tombstoned, Applier.REPLICATOR, Action.TOMBSTONE),
        ]
        assert command.key == CUSTOMER
        assert command.customer == customer(zip_prefix)

    def test_reads_nothing(self, gateway: Gateway) -> None:
        gateway.writes.upsert_command(customer())
        assert gateway.reads() == 0

    def test_versions_increase_per_command(self, gateway: Gateway) -> None:
        first = gateway.writes.upsert_command(customer())
        second = gateway.writes.upsert_command(customer())
        assert second.version > first.version
        assert first.command_id != second.command_id

    def test_a_zip_no_region_takes_is_rejected(self, gateway: Gateway) -> None:
        with pytest.raises(ZipOutOfRangeError):
            gateway.writes.upsert_command(customer(999))


class TestDeleteCommand:
    def test_tombstones_every_region(self, gateway: Gateway) -> None:
        command = gateway.writes.delete_command(CUSTOMER)
        assert [(t.region, t.role, t.action) for t in command.targets] == [
            ("region_1", Applier.WRITER, Action.TOMBSTONE),
            ("region_2", Applier.REPLICATOR, Action.TOMBSTONE),
            ("region_3", Applier.REPLICATOR, Action.TOMBSTONE),
        ]
        assert command.key == CUSTOMER
        assert gateway.reads() == 0

    def test_versions_increase_across_kinds(self, gateway: Gateway) -> None:
        upsert = gateway.writes.upsert_command(customer())
        delete = gateway.writes.delete_command(CUSTOMER)
        assert delete.version > upsert.version


class TestUpsert:
    async def test_a_plain_upsert_publishes_without_reading(
        self, settings: GatewaySettings
    ) -> None:
        gateway = Gateway(settings, [None])
        gateway.live("region_1", 5)
        written = await upsert(gateway.writes, customer(50000), create_only=False, wait=False)
        assert written.applied is False
        (command,) = gateway.producer.commands()
        assert encode_command(command) == encode_command(written.command)
        assert [t.region for t in command.targets] == ["region_2", "region_1", "region_3"]
        assert gateway.reads() == 0

    async def test_create_only_refuses_a_live_customer(self, settings: GatewaySettings) -> None:
        gateway = Gateway(settings, [None])
        gateway.live("region_3", 5)
        with pytest.raises(CustomerExistsError):
            await upsert(gateway.writes, customer(), create_only=True, wait=False)
        assert gateway.producer.sent == []

    async def test_create_only_refuses_when_only_a_moved_tombstone_is_readable(
        self, settings: GatewaySettings
    ) -> None:
        gateway = Gateway(settings, [None])
        gateway.live("region_1", 5, home="region_1")
        gateway.live("region_3", 5, home="region_1")
        gateway.tombstone("region_2", 5, home="region_1")
        gateway.board.statuses = {
            "region_1": NodeStatus.UNAVAILABLE,
            "region_3": NodeStatus.UNAVAILABLE,
        }
        with pytest.raises(CustomerExistsError):
            await upsert(gateway.writes, customer(), create_only=True, wait=False)
        assert gateway.producer.sent == []

    @pytest.mark.parametrize("unread", ["marked unavailable", "failing", "late"])
    async def test_create_only_never_takes_an_unread_region_for_an_absent_customer(
        self, settings: GatewaySettings, unread: str
    ) -> None:
        gateway = Gateway(settings, [None])
        if unread == "marked unavailable":
            gateway.board.statuses = {"region_2": NodeStatus.UNAVAILABLE}
        elif unread == "failing":
            gateway.stores["region_2"].fail_with = AutoReconnect("connection refused")
        else:
            gateway.stores["region_2"].late = True
        with pytest.raises(CustomerUnreadableError) as caught:
            await upsert(gateway.writes, customer(), create_only=True, wait=False)
        assert caught.value.regions == {"region_2"}
        assert "['region_2'] cannot be read now" in str(caught.value)
        assert gateway.producer.sent == []

    async def test_create_only_recreates_a_deleted_customer_above_its_tombstone(
        self, settings: GatewaySettings
    ) -> None:
        gateway = Gateway(settings, [None])
        for region in NAMES:
            gateway.tombstone(region, FUTURE_VERSION)
        written = await upsert(gateway.writes, customer(), create_only=True, wait=False)
        assert written.command.version > FUTURE_VERSION
        assert len(gateway.producer.sent) == 1

    async def test_create_only_for_a_new_customer(self, settings: GatewaySettings) -> None:
        gateway = Gateway(settings, [None])
        written = await upsert(gateway.writes, customer(), create_only=True, wait=False)
        assert isinstance(written.command, UpsertCustomer)
        assert gateway.reads() == len(NAMES)

    async def test_waits_until_home_holds_the_version(self, settings: GatewaySettings) -> None:
        gateway = Gateway(settings, [None])
        gateway.apply_to("region_2")
        written = await upsert(gateway.writes, customer(50000), create_only=False, wait=True)
        assert written.applied is True
        assert gateway.stores["region_2"].queries == [{"_id": CUSTOMER}]

    @pytest.mark.parametrize(("held_at", "applied"), [(1, True), (0, False)])
    async def test_another_write_counts_only_when_the_partition_took_it_after(
        self, settings: GatewaySettings, held_at: int, applied: bool
    ) -> None:
        # Appended at position 0: a write at 1 was acknowledged after it, so it was applied
        # before; one from before it (a retry that write superseded) never made it visible.
        gateway = Gateway(settings, [None])
        gateway.live("region_2", 5, home="region_2")
        gateway.stores["region_2"].docs[CUSTOMER] |= {"_cmd": "another", "_pos": held_at}
        written = await upsert(gateway.writes, customer(50000), create_only=False, wait=True)
        assert (written.position, written.applied) == (0, applied)

    async def test_waits_on_the_replica_when_home_is_marked_unavailable(
        self, settings: GatewaySettings
    ) -> None:
        gateway = Gateway(settings, [None])
        gateway.board.statuses = {"region_2": NodeStatus.UNAVAILABLE}
        gateway.apply_to("region_1")
        written = await upsert(gateway.writes, customer(50000), create_only=False, wait=True)
        assert written.applied is True
        assert gateway.stores["region_2"].queries == []
        assert gateway.stores["region_3"].queries == []  # its tombstone is never awaited

    async def test_never_waits_on_a_tombstone_region(self, settings: GatewaySettings) -> None:
        gateway = Gateway(settings, [None])
        gateway.board.statuses = {
            "region_2": NodeStatus.UNAVAILABLE,
            "region_1": NodeStatus.UNAVAILABLE,
        }
        gateway.apply_to("region_3")
        written = await upsert(gateway.writes, customer(50000), create_only=False, wait=True)
        assert written.applied is False
        assert gateway.reads() == 0

    async def test_not_applied_within_the_timeout(self, settings: GatewaySettings) -> None:
        gateway = Gateway(settings, [None])
        written = await upsert(gateway.writes, customer(), create_only=False, wait=True)
        assert written.applied is False
        assert len(gateway.stores["region_1"].queries) > 1


class TestDelete:
    async def test_publishes_a_tombstone_for_every_region_without_reading(
        self, settings: GatewaySettings
    ) -> None:
        gateway = Gateway(settings, [None])
        gateway.live("region_1", 5)
        written = await gateway.writes.send(gateway.writes.delete_command(CUSTOMER), wait=False)
        (command,) = gateway.producer.commands()
        assert isinstance(command, DeleteCustomer)
        assert encode_command(command) == encode_command(written.command)
        assert [t.region for t in command.targets] == list(NAMES)
        assert all(t.action is Action.TOMBSTONE for t in command.targets)
        assert gateway.reads() == 0

    async def test_is_seen_once_a_region_the_customer_lived_in_holds_its_tombstone(
        self, settings: GatewaySettings
    ) -> None:
        gateway = Gateway(settings, [None])
        gateway.live("region_2", 5, home="region_2")
        gateway.live("region_1", 5, home="region_2")

        def land(command: Command) -> None:
            gateway.tombstone("region_1", command.version, command_id=str(command.command_id))

        gateway.producer.on_send = land
        written = await gateway.writes.send(gateway.writes.delete_command(CUSTOMER), wait=True)
        assert written.applied is True

    async def test_is_seen_at_once_for_a_customer_live_nowhere(
        self, settings: GatewaySettings
    ) -> None:
        # Nothing to tombstone: the consumers route such a delete nowhere.
        gateway = Gateway(settings, [None])
        written = await gateway.writes.send(gateway.writes.delete_command(CUSTOMER), wait=True)
        assert written.applied is True
        assert gateway.reads() == len(NAMES)

    async def test_is_not_seen_while_a_live_copy_is_the_newest(
        self, settings: GatewaySettings
    ) -> None:
        gateway = Gateway(settings, [None])
        gateway.live("region_1", 5)
        written = await gateway.writes.send(gateway.writes.delete_command(CUSTOMER), wait=True)
        assert written.applied is False
        assert len(gateway.stores["region_1"].queries) > 1

    async def test_is_not_seen_when_a_region_and_its_replica_cannot_be_read(
        self, settings: GatewaySettings
    ) -> None:
        # region_1's customers live in region_1 and region_3 only: finding nothing elsewhere
        # proves nothing.
        gateway = Gateway(settings, [None])
        gateway.board.statuses = {
            "region_1": NodeStatus.UNAVAILABLE,
            "region_3": NodeStatus.UNAVAILABLE,
        }
        written = await gateway.writes.send(gateway.writes.delete_command(CUSTOMER), wait=True)
        assert written.applied is False
        assert gateway.stores["region_1"].queries == []


class TestAfter:
    async def test_a_command_carries_the_offset_its_partition_certainly_reached(
        self, settings: GatewaySettings
    ) -> None:
        producer = FakeProducer([None, None, None])
        writes = make_writes(settings, producer)
        first = writes.upsert_command(customer())
        assert first.after is None  # nothing seen acknowledged yet
        await writes.publish([first, writes.delete_command("x")])  # offsets 0 and 1
        later = writes.upsert_command(customer())
        assert later.after == 2
        assert decode_command(encode_command(later)).after == 2

    async def test_every_partitions_offset_is_known_once_the_partitions_are(
        self, settings: GatewaySettings
    ) -> None:
        producer = FakeProducer([None, None])
        writes = make_writes(settings, producer)
        assert writes.reached_offsets() == ()  # the partitions are not known before a send
        await writes.publish([writes.delete_command("x"), writes.delete_command("y")])
        assert writes.reached_offsets() == (2,)

    async def test_a_producer_that_places_keys_otherwise_gets_no_offset_vouched_for(
        self, settings: GatewaySettings
    ) -> None:
        producer = FakeProducer([None] * 8)

        async def two_partitions(topic: str) -> set[int]:
            return {0, 1}

        producer.partitions_for = two_partitions  # type: ignore[method-assign]
        writes = make_writes(settings, producer)
        # The fake appends everything to partition 0: a customer of partition 1 says so.
        keys = [f"{n:032x}" for n in range(8)]
        assert {partition_of(k, 2) for k in keys} == {0, 1}
        await writes.publish([writes.delete_command(k) for k in keys])
        assert all(writes.delete_command(k).after is None for k in keys)
        assert writes.reached_offsets() == ()


class TestPublish:
    async def test_every_command_acknowledged(self, settings: GatewaySettings) -> None:
        producer = FakeProducer([None, None])
        writes = make_writes(settings, producer)
        commands: list[Command] = [
            writes.upsert_command(customer()),
            writes.delete_command("x"),
        ]
        assert await writes.publish(commands) == [
            Delivery(Outcome.ACCEPTED, position=0, partition=0),
            Delivery(Outcome.ACCEPTED, position=1, partition=0),
        ]
        topic, value, key = producer.sent[0]
        assert (topic, key) == ("customers.commands", CUSTOMER.encode())
        assert isinstance(decode_command(value), UpsertCustomer)
        assert isinstance(decode_command(producer.sent[1][1]), DeleteCustomer)

    async def test_a_delete_kafka_refused_destroys_no_key(self, settings: GatewaySettings) -> None:
        # The customer's earlier write may still be parked: with its key gone it would be
        # applied as erased, and a refusal must change nothing.
        producer = FakeProducer([None, SEND_FAILS, None, None])
        writes = make_writes(settings, producer)
        (created,) = await writes.publish([writes.upsert_command(customer())])
        assert created.outcome is Outcome.ACCEPTED
        keyring = writes._keyring
        assert isinstance(keyring, MemoryKeyring)
        key = keyring.current(CUSTOMER)
        assert key is not None
        (refused,) = await writes.publish([writes.delete_command(CUSTOMER)])
        assert refused.outcome is Outcome.NOT_SENT
        assert keyring.current(CUSTOMER) == key
        (deleted,) = await writes.publish([writes.delete_command(CUSTOMER)])
        assert deleted.outcome is Outcome.ACCEPTED
        assert keyring.current(CUSTOMER) is None
        # A write after the delete's acknowledgement makes a new key.
        (again,) = await writes.publish([writes.upsert_command(customer())])
        assert again.outcome is Outcome.ACCEPTED
        assert keyring.current(CUSTOMER) not in (None, key)

    async def test_a_delete_whose_keys_could_not_be_destroyed_is_unknown(
        self, settings: GatewaySettings
    ) -> None:
        producer = FakeProducer([None, None])
        writes = make_writes(settings, producer)
        await writes.publish([writes.upsert_command(customer())])
        keyring = writes._keyring
        assert isinstance(keyring, MemoryKeyring)
        keyring.refuse = KafkaConnectionError()
        (deleted,) = await writes.publish([writes.delete_command(CUSTOMER)])
        # Acknowledged, but answered so that it is sent again, which destroys the keys.
        assert deleted.outcome is Outcome.UNKNOWN
        assert keyring.current(CUSTOMER) is not None

    async def test_a_key_topic_kafka_refuses_sends_nothing(self, settings: GatewaySettings) -> None:
        producer = FakeProducer([])
        writes = make_writes(settings, producer)
        keyring = writes._keyring
        assert isinstance(keyring, MemoryKeyring)
        keyring.refuse = KafkaConnectionError()
        (refused,) = await writes.publish([writes.upsert_command(customer())])
        assert refused.outcome is Outcome.NOT_SENT
        assert producer.sent == []

    async def test_untraced_commands_carry_no_headers(self, settings: GatewaySettings) -> None:
        producer = FakeProducer([None])
        writes = make_writes(settings, producer)
        await writes.publish([writes.upsert_command(customer())])
        assert producer.headers == [None]

    async def test_traced_commands_carry_the_publish_span_as_their_parent(
        self, settings: GatewaySettings
    ) -> None:
        exporter = InMemorySpanExporter()
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(exporter))
        producer = FakeProducer([None, None])
        writes = CommandTopic(
            settings=settings,
            producer=cast(Any, producer),
            board=cast(Any, FakeBoard()),
            repository=cast(Any, None),
            clock=HybridClock(1, wall_ms=lambda: WALL_MS),
            keyring=MemoryKeyring(),
            tracer=CommandTracer(provider.get_tracer("test")),
        )
        await writes.publish([writes.upsert_command(customer()), writes.delete_command("x")])
        (span,) = exporter.get_finished_spans()
        assert span.name == "publish customers.commands"
        assert span.attributes is not None
        assert span.attributes["messaging.batch.message_count"] == 2
        parent = (
            f"00-{format_trace_id(span.context.trace_id)}-{format_span_id(span.context.span_id)}"
        )
        for headers in producer.headers:
            assert headers is not None
            assert dict(headers)["traceparent"].decode().startswith(parent)

    async def test_a_failed_delivery_is_an_unknown_outcome(self, settings: GatewaySettings) -> None:
        # The idempotent producer retries a buffered record until it gives up; an earlier
        # attempt may have been appended, so a failure does not prove it was not.
        failure = NotLeaderForPartitionError()
        writes = make_writes(settings, FakeProducer([None, failure]))
        commands = [writes.upsert_command(customer()) for _ in range(2)]
        assert await writes.publish(commands) == [
            Delivery(Outcome.ACCEPTED, position=0, partition=0),
            Delivery(Outcome.UNKNOWN, failure),
        ]

    async def test_no_acknowledgement_in_time_is_an_unknown_outcome(
        self, settings: GatewaySettings
    ) -> None:
        quick = settings.model_copy(update={"kafka": KafkaSettings(request_timeout_ms=1000)})
        writes = make_writes(quick, FakeProducer([NEVER]))
        (delivery,) = await writes.publish([writes.upsert_command(customer())])
        assert delivery.outcome is Outcome.UNKNOWN
        assert isinstance(delivery.error, TimeoutError)

    async def test_a_send_refused_outright_was_not_sent(self, settings: GatewaySettings) -> None:
        writes = make_writes(settings, FakeProducer([SEND_FAILS]))
        (delivery,) = await writes.publish([writes.upsert_command(customer())])
        assert delivery.outcome is Outcome.NOT_SENT
        assert isinstance(delivery.error, KafkaConnectionError)

    async def test_a_later_send_refused_still_reports_the_earlier_acknowledged_ones(
        self, settings: GatewaySettings
    ) -> None:
        producer = FakeProducer([None, SEND_FAILS])
        writes = make_writes(settings, producer)
        commands = [writes.upsert_command(customer()) for _ in range(2)]
        first, second = await writes.publish(commands)
        assert first == Delivery(Outcome.ACCEPTED, position=0, partition=0)
        assert second.outcome is Outcome.NOT_SENT

    async def test_counts_every_command_by_outcome(self, settings: GatewaySettings) -> None:
        failure = NotLeaderForPartitionError()
        writes = make_writes(settings, FakeProducer([None, None, failure, SEND_FAILS]))
        commands = [writes.upsert_command(customer()) for _ in range(4)]
        before = {outcome: published(outcome) for outcome in Outcome}

        await writes.publish(commands)

        assert {outcome: published(outcome) - before[outcome] for outcome in Outcome} == {
            Outcome.ACCEPTED: 2,
            Outcome.UNKNOWN: 1,
            Outcome.NOT_SENT: 1,
        }


class TestSend:
    async def test_acknowledged(self, settings: GatewaySettings) -> None:
        writes = make_writes(settings, FakeProducer([None]))
        command = writes.delete_command(CUSTOMER)
        assert await writes.send(command, wait=False) == Published(command, False, position=0)

    async def test_unknown_outcome_raises_with_the_command(self, settings: GatewaySettings) -> None:
        writes = make_writes(settings, FakeProducer([NotLeaderForPartitionError()]))
        command = writes.upsert_command(customer())
        with pytest.raises(OutcomeUnknownError, match="did not acknowledge") as caught:
            await writes.send(command, wait=True)
        assert caught.value.command == command

    async def test_not_sent_raises_kafka_unavailable(self, settings: GatewaySettings) -> None:
        writes = make_writes(settings, FakeProducer([SEND_FAILS]))
        with pytest.raises(KafkaUnavailableError, match="did not take"):
            await writes.send(writes.upsert_command(customer()), wait=False)
