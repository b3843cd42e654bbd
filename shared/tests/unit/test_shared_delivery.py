"""deliver: every record handed to the producer, each acknowledgement awaited together, and what
became of each record; raise_unless_acknowledged: the first failure, raised."""

from __future__ import annotations

import asyncio
from typing import Any, cast

import pytest
from aiokafka.errors import KafkaConnectionError, NotLeaderForPartitionError
from aiokafka.structs import RecordMetadata, TopicPartition

from regionstore_shared.delivery import (
    Delivery,
    Outcome,
    Outgoing,
    deliver,
    raise_unless_acknowledged,
)

TOPIC = "t"


class ScriptedProducer:
    """Settles each send as scripted: an offset (acknowledged), an error the send raises
    (``("refuse", error)``), an error the acknowledgement fails with, or None (never settled)."""

    def __init__(self, *script: object) -> None:
        self.script = list(script)
        self.calls: list[dict[str, Any]] = []

    async def send(self, topic: str, **record: Any) -> asyncio.Future[object]:
        self.calls.append({"topic": topic, **record})
        outcome = self.script.pop(0)
        if isinstance(outcome, tuple):
            raise outcome[1]
        future: asyncio.Future[object] = asyncio.get_running_loop().create_future()
        if isinstance(outcome, int):
            partition = TopicPartition(topic, 0)
            future.set_result(RecordMetadata(topic, 0, partition, outcome, -1, 0, -1))
        elif isinstance(outcome, BaseException):
            future.set_exception(outcome)
        return future


async def delivered(producer: ScriptedProducer, *records: Outgoing, **kw: Any) -> list[Delivery]:
    return await deliver(cast(Any, producer), TOPIC, list(records), **kw)


class TestDeliver:
    async def test_an_acknowledged_record_is_accepted_at_its_position(self) -> None:
        (delivery,) = await delivered(ScriptedProducer(7), Outgoing(b"v", b"k"))
        assert (delivery.outcome, delivery.position) == (Outcome.ACCEPTED, 7)

    async def test_a_record_the_producer_refuses_is_not_sent_and_the_rest_still_go(
        self,
    ) -> None:
        refused = KafkaConnectionError()
        producer = ScriptedProducer(("refuse", refused), 3)
        first, second = await delivered(producer, Outgoing(b"a", b"k"), Outgoing(b"b", b"k"))
        assert (first.outcome, first.error) == (Outcome.NOT_SENT, refused)
        assert second.outcome is Outcome.ACCEPTED
        assert len(producer.calls) == 2

    async def test_a_failed_acknowledgement_is_an_unknown_outcome(self) -> None:
        failed = NotLeaderForPartitionError()
        (delivery,) = await delivered(ScriptedProducer(failed), Outgoing(b"v", b"k"))
        assert (delivery.outcome, delivery.error, delivery.waiting) == (
            Outcome.UNKNOWN,
            failed,
            False,
        )

    async def test_no_acknowledgement_within_the_bound_is_unknown_and_still_waiting(
        self,
    ) -> None:
        (delivery,) = await delivered(ScriptedProducer(None), Outgoing(b"v", b"k"), timeout_s=0)
        assert (delivery.outcome, delivery.waiting) == (Outcome.UNKNOWN, True)
        assert isinstance(delivery.error, TimeoutError)

    async def test_headers_and_partition_are_passed_only_when_given(self) -> None:
        producer = ScriptedProducer(1, 2)
        await delivered(
            producer,
            Outgoing(b"a", b"k"),
            Outgoing(b"b", None, headers=[("h", b"1")], partition=4),
        )
        assert producer.calls == [
            {"topic": TOPIC, "value": b"a", "key": b"k"},
            {"topic": TOPIC, "value": b"b", "key": None, "headers": [("h", b"1")], "partition": 4},
        ]


class TestRaiseUnlessAcknowledged:
    def test_all_acknowledged_raises_nothing(self) -> None:
        raise_unless_acknowledged([Delivery(Outcome.ACCEPTED), Delivery(Outcome.ACCEPTED)])

    def test_the_first_failure_is_raised(self) -> None:
        first, second = KafkaConnectionError(), NotLeaderForPartitionError()
        with pytest.raises(KafkaConnectionError) as raised:
            raise_unless_acknowledged(
                [
                    Delivery(Outcome.ACCEPTED),
                    Delivery(Outcome.NOT_SENT, first),
                    Delivery(Outcome.UNKNOWN, second),
                ]
            )
        assert raised.value is first
