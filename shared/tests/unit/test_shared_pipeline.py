"""The consume-apply-commit loop: commit only what was applied, rewind what was not."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiokafka import TopicPartition
from prometheus_client import REGISTRY

from regionstore_shared.apply import Envelope, RegionUnavailableError, Rejected
from regionstore_shared.logs import Outages
from regionstore_shared.pipeline import DeadLetters as KafkaDeadLetters
from regionstore_shared.pipeline import decode_records, run_batches
from regionstore_shared.schemas import (
    Action,
    DeleteCustomer,
    Role,
    Target,
    encode_command,
)

TP = TopicPartition("pending.region_1", 0)
TP2 = TopicPartition("pending.region_1", 1)


@dataclass
class Record:
    topic: str
    partition: int
    offset: int
    key: bytes
    value: bytes
    headers: list[tuple[str, bytes]] = field(default_factory=list)


def delete_record(offset: int) -> Record:
    command = DeleteCustomer(
        command_id=uuid.uuid4(),
        version=offset + 1,
        issued_at_ms=0,
        targets=(Target(region="region_1", role=Role.HOME, action=Action.TOMBSTONE),),
        customer_id=f"c{offset}",
    )
    return Record(TP.topic, TP.partition, offset, command.key.encode(), encode_command(command))


class FakeConsumer:
    def __init__(
        self,
        batches: list[list[Record] | dict[TopicPartition, list[Record]]],
        stop: asyncio.Event,
    ) -> None:
        self.batches = batches
        self.stop = stop
        self.commits: list[dict[TopicPartition, int]] = []
        self.seeks: list[tuple[TopicPartition, int]] = []

    async def getmany(self, timeout_ms: int) -> dict[TopicPartition, list[Record]]:
        if not self.batches:
            self.stop.set()
            return {}
        batch = self.batches.pop(0)
        return batch if isinstance(batch, dict) else {TP: batch}

    async def commit(self, offsets: dict[TopicPartition, Any]) -> None:
        self.commits.append({tp: meta.offset for tp, meta in offsets.items()})

    def seek(self, tp: TopicPartition, offset: int) -> None:
        self.seeks.append((tp, offset))

    def assignment(self) -> set[TopicPartition]:
        return {TP, TP2}

    def highwater(self, tp: TopicPartition) -> int | None:
        return None


class Applier:
    def __init__(self, fail_on_call: int | None) -> None:
        self.calls = 0
        self.fail_on_call = fail_on_call

    async def apply(self, envelopes: Sequence[Envelope], select: Any) -> None:
        self.calls += 1
        # Yield once, as a store round trip would: the next poll runs meanwhile.
        await asyncio.sleep(0)
        if self.calls == self.fail_on_call:
            raise RegionUnavailableError("region_1", "write_failed")


class DeadLetters:
    def __init__(self) -> None:
        self.sent: list[int] = []

    async def send(self, record: Record, error: str) -> None:
        assert "invalid command" in error
        self.sent.append(record.offset)


def poison_record(offset: int, tp: TopicPartition = TP) -> Record:
    return Record(tp.topic, tp.partition, offset, b"k", b'{"not": "a command"}')


def select(command: Any) -> Iterable[Target]:
    return list(command.targets)


async def _run(
    consumer: FakeConsumer,
    applier: Applier,
    stop: asyncio.Event,
    dead_letters: DeadLetters | None = None,
    outages: Outages | None = None,
) -> None:
    await run_batches(
        consumer,  # type: ignore[arg-type]
        group="g",
        applier=applier,  # type: ignore[arg-type]
        select=select,
        dead_letters=dead_letters or DeadLetters(),  # type: ignore[arg-type]
        stop=stop,
        role="recovery",
        outages=outages,
    )


async def test_each_applied_batch_commits_past_its_last_record() -> None:
    stop = asyncio.Event()
    consumer = FakeConsumer([[delete_record(0), delete_record(1)], [delete_record(2)]], stop)
    await _run(consumer, Applier(fail_on_call=None), stop)
    assert consumer.commits == [{TP: 2}, {TP: 3}]
    assert consumer.seeks == []


async def test_a_failed_batch_is_not_committed_and_is_rewound_to_its_first_record() -> None:
    stop = asyncio.Event()
    consumer = FakeConsumer([[delete_record(0)], [delete_record(5), delete_record(6)]], stop)
    with pytest.raises(RegionUnavailableError):
        await _run(consumer, Applier(fail_on_call=2), stop)
    assert consumer.commits == [{TP: 1}]
    assert consumer.seeks == [(TP, 5)]


async def test_a_failure_rewinds_the_batch_polled_ahead_too() -> None:
    stop = asyncio.Event()
    consumer = FakeConsumer(
        [
            [delete_record(0)],
            {TP: [delete_record(1)]},
            {TP: [delete_record(2)], TP2: [delete_record(7)]},
        ],
        stop,
    )
    with pytest.raises(RegionUnavailableError):
        await _run(consumer, Applier(fail_on_call=2), stop)
    assert consumer.commits == [{TP: 1}]
    # TP from the failed batch's first record; TP2, only in the batch polled ahead, from its own.
    assert sorted(consumer.seeks) == [(TP, 1), (TP2, 7)]


async def test_poison_is_dead_lettered_once_its_batch_is_handled_and_committed() -> None:
    stop = asyncio.Event()
    consumer = FakeConsumer([[delete_record(0), poison_record(1)], [poison_record(2)]], stop)
    dead_letters = DeadLetters()
    await _run(consumer, Applier(fail_on_call=None), stop, dead_letters)
    assert dead_letters.sent == [1, 2]
    assert consumer.commits == [{TP: 2}, {TP: 3}]


async def test_poison_polled_ahead_of_a_failed_batch_is_not_dead_lettered_yet() -> None:
    stop = asyncio.Event()
    consumer = FakeConsumer([[delete_record(0)], [poison_record(1)]], stop)
    dead_letters = DeadLetters()
    with pytest.raises(RegionUnavailableError):
        await _run(consumer, Applier(fail_on_call=1), stop, dead_letters)
    assert dead_letters.sent == []
    assert consumer.commits == []
    assert consumer.seeks == [(TP, 0)]


class StoppingApplier(Applier):
    """Asks the loop to stop while applying its first batch."""

    def __init__(self, stop: asyncio.Event) -> None:
        super().__init__(fail_on_call=None)
        self.stop = stop

    async def apply(self, envelopes: Sequence[Envelope], select: Any) -> None:
        await super().apply(envelopes, select)
        self.stop.set()


async def test_a_batch_polled_ahead_of_a_stop_is_rewound_not_skipped() -> None:
    stop = asyncio.Event()
    consumer = FakeConsumer([[delete_record(0)], [delete_record(1), delete_record(2)]], stop)
    applier = StoppingApplier(stop)
    await _run(consumer, applier, stop)
    assert applier.calls == 1
    assert consumer.commits == [{TP: 1}]
    assert consumer.seeks == [(TP, 1)]


async def test_a_commit_reports_kafka_ok() -> None:
    stop = asyncio.Event()
    outages = Outages()
    outages.failed("kafka", "Unable connect to node with id 1")
    consumer = FakeConsumer([[delete_record(0)]], stop)
    await _run(consumer, Applier(fail_on_call=None), stop, outages=outages)
    assert consumer.commits == [{TP: 1}]
    assert not outages.is_down("kafka")


async def test_a_failed_batch_does_not_report_kafka_ok() -> None:
    stop = asyncio.Event()
    outages = Outages()
    outages.failed("kafka", "Unable connect to node with id 1")
    consumer = FakeConsumer([[delete_record(0)]], stop)
    with pytest.raises(RegionUnavailableError):
        await _run(consumer, Applier(fail_on_call=1), stop, outages=outages)
    assert outages.is_down("kafka")


def test_decoded_envelopes_remember_their_topic() -> None:
    batch = decode_records({TP: [delete_record(0)]})
    (envelope,) = batch.envelopes
    assert envelope.topic == "pending.region_1"


class FakeFuture:
    def __init__(self, sent: list[dict[str, Any]], message: dict[str, Any]) -> None:
        self._sent = sent
        self._message = message

    def __await__(self) -> Any:
        async def acked() -> None:
            self._sent.append(self._message)

        return acked().__await__()


class FakeProducer:
    """Records a message once its send is awaited: acknowledged, like Kafka's future."""

    def __init__(self) -> None:
        self.sent: list[dict[str, Any]] = []

    async def send(self, topic: str, **message: Any) -> FakeFuture:
        return FakeFuture(self.sent, {"topic": topic, **message})


def _deadlettered(region: str, source_topic: str) -> float:
    value = REGISTRY.get_sample_value(
        "regionstore_commands_deadlettered_total",
        {"source_topic": source_topic, "region": region},
    )
    return value or 0.0


async def test_refused_commands_are_dead_lettered_with_region_and_reason() -> None:
    producer = FakeProducer()
    dead_letters = KafkaDeadLetters(producer, "customers.deadletter")
    record = delete_record(7)
    envelope = Envelope(decode_records({TP: [record]}).envelopes[0].command, record.value, TP.topic)
    before = _deadlettered("region_2", TP.topic)

    await dead_letters.send_commands(
        "region_2", [Rejected(envelope, "WriteError 121: Document failed validation")]
    )

    (message,) = producer.sent
    assert message["topic"] == "customers.deadletter"
    assert message["value"] == record.value  # the original bytes, unchanged
    assert message["key"] == b"c7"
    assert dict(message["headers"]) == {
        "regionstore-error": b"WriteError 121: Document failed validation",
        "regionstore-region": b"region_2",
        "regionstore-command-id": str(envelope.command.command_id).encode(),
        "regionstore-source-topic": TP.topic.encode(),
    }
    assert _deadlettered("region_2", TP.topic) == before + 1
