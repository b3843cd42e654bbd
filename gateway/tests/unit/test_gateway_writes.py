"""Turning requests into commands: where the customer was, versions, and Kafka's answer."""

from __future__ import annotations

import asyncio
import os
from typing import Any, cast

import pytest
from aiokafka.errors import KafkaConnectionError, NotLeaderForPartitionError

from regionstore_gateway.repository import CustomerRepository, Found, Lookup
from regionstore_gateway.settings import GatewaySettings
from regionstore_gateway.writes import KafkaUnavailableError, Writes
from regionstore_shared.apply import Suspicion
from regionstore_shared.clock import HybridClock
from regionstore_shared.schemas import (
    Action,
    Customer,
    DeleteCustomer,
    UpsertCustomer,
    decode_command,
)

CUSTOMER = "06b8999e2fba1a1fbc88172c00ba8bc7"
WALL_MS = 1_700_000_000_000
FUTURE_VERSION = (WALL_MS + 3_600_000) << 22 | 7 << 6 | 9  # an hour ahead of our wall clock
SEND_FAILS = object()


class FakeProducer:
    """Hands back one future per send, resolved as scripted; SEND_FAILS makes send raise."""

    def __init__(self, outcomes: list[object]) -> None:
        self.outcomes = outcomes
        self.sent: list[tuple[str, bytes, bytes]] = []

    async def send(self, topic: str, *, value: bytes, key: bytes) -> asyncio.Future[object]:
        outcome = self.outcomes.pop(0)
        if outcome is SEND_FAILS:
            raise KafkaConnectionError("no broker")
        self.sent.append((topic, value, key))
        future: asyncio.Future[object] = asyncio.get_running_loop().create_future()
        if isinstance(outcome, BaseException):
            future.set_exception(outcome)
        else:
            future.set_result("record metadata")
        return future


@pytest.fixture
def settings(monkeypatch: pytest.MonkeyPatch) -> GatewaySettings:
    for name in list(os.environ):
        if name.upper().startswith("REGIONSTORE_"):
            monkeypatch.delenv(name)
    return GatewaySettings()


def make_writes(settings: GatewaySettings, producer: FakeProducer | None = None) -> Writes:
    repository = CustomerRepository({}, settings.region_map, Suspicion(3.0))
    return Writes(
        settings=settings,
        producer=cast(Any, producer),
        board=cast(Any, None),
        repository=repository,
        clock=HybridClock(1, wall_ms=lambda: WALL_MS),
    )


def customer(zip_prefix: int = 14409, customer_id: str = CUSTOMER) -> Customer:
    return Customer(
        customer_id=customer_id,
        customer_unique_id="861eff4711a542e4b93843c6dd7febb0",
        customer_zip_code_prefix=zip_prefix,
        customer_city="franca",
        customer_state="SP",
    )


def live_in(home: str, version: int = 5, served_by: str | None = None) -> Lookup:
    document = {"_id": CUSTOMER, "_v": version, "_home": home, "_deleted": False}
    return Lookup(newest={CUSTOMER: Found(document, served_by or home)})


def tombstone(version: int = 5) -> Lookup:
    document = {"_id": CUSTOMER, "_v": version, "_deleted": True}
    return Lookup(newest={CUSTOMER: Found(document, "region_1")})


class TestPreviouslyIn:
    def test_a_live_customer_is_in_its_homes_placement(self, settings: GatewaySettings) -> None:
        writes = make_writes(settings)
        assert writes.previously_in(live_in("region_2"), CUSTOMER) == ("region_2", "region_1")

    def test_a_deleted_customer_is_nowhere(self, settings: GatewaySettings) -> None:
        assert make_writes(settings).previously_in(tombstone(), CUSTOMER) == ()

    def test_not_found_with_every_region_readable_is_nowhere(
        self, settings: GatewaySettings
    ) -> None:
        assert make_writes(settings).previously_in(Lookup(), CUSTOMER) == ()

    def test_not_found_with_one_region_down_but_covered_is_nowhere(
        self, settings: GatewaySettings
    ) -> None:
        lookup = Lookup(unreachable={"region_2"})
        assert make_writes(settings).previously_in(lookup, CUSTOMER) == ()

    def test_not_found_with_a_region_and_its_replica_down_may_be_anywhere(
        self, settings: GatewaySettings
    ) -> None:
        lookup = Lookup(unreachable={"region_1", "region_3"})
        assert make_writes(settings).previously_in(lookup, CUSTOMER) == (
            "region_1",
            "region_2",
            "region_3",
        )

    def test_the_found_version_is_observed(self, settings: GatewaySettings) -> None:
        writes = make_writes(settings)
        previous = writes.previously_in(live_in("region_1", FUTURE_VERSION), CUSTOMER)
        assert writes.upsert_command(customer(), previous).version > FUTURE_VERSION


class TestUpsertCommand:
    def test_carries_home_and_targets(self, settings: GatewaySettings) -> None:
        command = make_writes(settings).upsert_command(customer(50000), ("region_1", "region_3"))
        assert command.home_region == "region_2"
        assert [(t.region, t.action) for t in command.targets] == [
            ("region_2", Action.UPSERT),
            ("region_1", Action.UPSERT),
            ("region_3", Action.TOMBSTONE),
        ]
        assert command.key == CUSTOMER

    def test_versions_increase_per_command(self, settings: GatewaySettings) -> None:
        writes = make_writes(settings)
        first = writes.upsert_command(customer(), ())
        second = writes.upsert_command(customer(), ())
        assert second.version > first.version
        assert first.command_id != second.command_id


class TestDeleteCommand:
    def test_a_live_customer_is_tombstoned_in_its_placement(
        self, settings: GatewaySettings
    ) -> None:
        command = make_writes(settings).delete_command(CUSTOMER, live_in("region_3"))
        assert [t.region for t in command.targets] == ["region_3", "region_2"]
        assert all(t.action is Action.TOMBSTONE for t in command.targets)

    def test_an_unknown_customer_is_tombstoned_everywhere(self, settings: GatewaySettings) -> None:
        command = make_writes(settings).delete_command(CUSTOMER, Lookup())
        assert [t.region for t in command.targets] == ["region_1", "region_2", "region_3"]

    def test_the_delete_outranks_what_was_found(self, settings: GatewaySettings) -> None:
        command = make_writes(settings).delete_command(
            CUSTOMER, live_in("region_1", FUTURE_VERSION)
        )
        assert command.version > FUTURE_VERSION


class TestPublish:
    async def test_every_command_acknowledged(self, settings: GatewaySettings) -> None:
        producer = FakeProducer([None, None])
        writes = make_writes(settings, producer)
        commands: list[UpsertCustomer | DeleteCustomer] = [
            writes.upsert_command(customer(), ()),
            writes.delete_command("x", Lookup()),
        ]
        assert await writes.publish(commands) == [None, None]
        topic, value, key = producer.sent[0]
        assert (topic, key) == ("customers.commands", CUSTOMER.encode())
        assert isinstance(decode_command(value), UpsertCustomer)
        assert isinstance(decode_command(producer.sent[1][1]), DeleteCustomer)

    async def test_some_acknowledged_reports_each(self, settings: GatewaySettings) -> None:
        failure = NotLeaderForPartitionError()
        writes = make_writes(settings, FakeProducer([None, failure]))
        commands = [writes.upsert_command(customer(), ()) for _ in range(2)]
        assert await writes.publish(commands) == [None, failure]

    async def test_none_acknowledged_raises(self, settings: GatewaySettings) -> None:
        writes = make_writes(settings, FakeProducer([NotLeaderForPartitionError()]))
        with pytest.raises(KafkaUnavailableError, match="Kafka did not acknowledge the write"):
            await writes.publish([writes.upsert_command(customer(), ())])

    async def test_a_send_refused_outright_raises(self, settings: GatewaySettings) -> None:
        writes = make_writes(settings, FakeProducer([SEND_FAILS]))
        with pytest.raises(KafkaUnavailableError):
            await writes.publish([writes.upsert_command(customer(), ())])

    async def test_a_later_send_refused_still_reports_the_earlier_acknowledged_ones(
        self, settings: GatewaySettings
    ) -> None:
        # The first command is queued and then acknowledged by Kafka: it will be applied. The
        # batch answer must not call it failed ("not a single command was acknowledged" is the
        # only case publish may raise).
        producer = FakeProducer([None, SEND_FAILS])
        writes = make_writes(settings, producer)
        commands = [writes.upsert_command(customer(), ()) for _ in range(2)]
        outcomes = await writes.publish(commands)
        assert outcomes[0] is None
        assert isinstance(outcomes[1], KafkaConnectionError)
