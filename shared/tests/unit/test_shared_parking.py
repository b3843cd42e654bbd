"""Parking: commands for a region that cannot take them go to its parking topic, unchanged."""

from __future__ import annotations

from typing import Any, cast

import pytest
from aiokafka.errors import KafkaTimeoutError

from regionstore_shared.apply import Envelope
from regionstore_shared.parking import KafkaParker
from regionstore_shared.schemas import Applier, encode_command
from regionstore_shared.settings import KafkaSettings
from shared.tests.fakes import FakeProducer, tombstone


def envelope(customer_id: str, version: int = 1) -> Envelope:
    command = tombstone(
        customer_id, version, [("region_2", Applier.WRITER), ("region_3", Applier.REPLICATOR)]
    )
    return Envelope(command, encode_command(command), "customers.commands")


def parker(producer: FakeProducer, settings: KafkaSettings | None = None) -> KafkaParker:
    return KafkaParker(cast(Any, producer), settings or KafkaSettings())


async def test_parks_every_command_in_the_region_pending_topic_in_order() -> None:
    producer = FakeProducer()
    envelopes = [envelope("c1"), envelope("c2"), envelope("c1", 2)]
    await parker(producer).park("region_2", envelopes, "marked_unavailable")
    assert [m["topic"] for m in producer.sent] == ["pending.region_2"] * 3
    assert [m["value"] for m in producer.sent] == [e.raw for e in envelopes]


async def test_a_parked_command_keeps_its_customer_key_and_says_why() -> None:
    producer = FakeProducer()
    await parker(producer).park("region_3", [envelope("c7")], "write_failed")
    (message,) = producer.sent
    # Keyed by customer: one customer's parked commands stay in one partition, in order.
    assert message["key"] == b"c7"
    assert message["headers"] == [("regionstore-park-reason", b"write_failed")]


async def test_a_parked_command_keeps_its_trace_headers() -> None:
    producer = FakeProducer()
    traceparent = b"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    traced = envelope("c7").traced((("traceparent", traceparent),))
    await parker(producer).park("region_3", [traced], "write_failed")
    (message,) = producer.sent
    assert message["headers"] == [
        ("regionstore-park-reason", b"write_failed"),
        ("traceparent", traceparent),
    ]


async def test_returns_only_once_kafka_acknowledged_every_command() -> None:
    producer = FakeProducer()
    await parker(producer).park("region_2", [envelope(f"c{i}") for i in range(5)], "x")
    assert len(producer.queued) == 5
    assert producer.sent == producer.queued


async def test_a_refused_acknowledgement_fails_the_park() -> None:
    producer = FakeProducer()
    producer.refuse = [KafkaTimeoutError("no ack")]
    with pytest.raises(KafkaTimeoutError):
        await parker(producer).park("region_2", [envelope("c1"), envelope("c2")], "x")


async def test_the_topic_follows_the_configured_prefix() -> None:
    producer = FakeProducer()
    settings = KafkaSettings(pending_topic_prefix="hints.")
    await parker(producer, settings).park("region_1", [envelope("c1")], "recent_failure")
    assert producer.sent[0]["topic"] == "hints.region_1"


async def test_nothing_to_park_sends_nothing() -> None:
    producer = FakeProducer()
    await parker(producer).park("region_1", [], "marked_unavailable")
    assert producer.queued == []
