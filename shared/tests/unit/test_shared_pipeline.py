"""The consume-apply-commit loop: commit only what was applied, rewind what was not."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiokafka import ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import CommitFailedError, IllegalStateError
from prometheus_client import REGISTRY

from regionstore_shared.apply import Envelope, RegionUnavailableError, Rejected
from regionstore_shared.logs import Outages
from regionstore_shared.pipeline import DeadLetters as KafkaDeadLetters
from regionstore_shared.pipeline import PartitionOwnership, decode_records, run_batches
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


def delete_record(offset: int, tp: TopicPartition = TP) -> Record:
    command = DeleteCustomer(
        command_id=uuid.uuid4(),
        version=offset + 1,
        issued_at_ms=0,
        targets=(Target(region="region_1", role=Role.HOME, action=Action.TOMBSTONE),),
        customer_id=f"c{offset}",
    )
    return Record(tp.topic, tp.partition, offset, command.key.encode(), encode_command(command))


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
        self.assigned = {TP, TP2}
        self.commit_errors: list[Exception] = []
        self.end: int | None = None

    async def getmany(self, timeout_ms: int) -> dict[TopicPartition, list[Record]]:
        if not self.batches:
            self.stop.set()
            return {}
        batch = self.batches.pop(0)
        return batch if isinstance(batch, dict) else {TP: batch}

    async def commit(self, offsets: dict[TopicPartition, Any]) -> None:
        # aiokafka's checks: a partition not assigned, or a group that moved on.
        for tp in offsets:
            if tp not in self.assigned:
                raise IllegalStateError(f"Partition {tp} is not assigned")
        if self.commit_errors:
            raise self.commit_errors.pop(0)
        self.commits.append({tp: meta.offset for tp, meta in offsets.items()})

    def seek(self, tp: TopicPartition, offset: int) -> None:
        self.seeks.append((tp, offset))

    def assignment(self) -> set[TopicPartition]:
        return set(self.assigned)

    def highwater(self, tp: TopicPartition) -> int | None:
        assert tp in self.assigned, "Partition is not assigned"  # aiokafka asserts too
        return self.end

    async def position(self, tp: TopicPartition) -> int:
        if tp not in self.assigned:
            raise IllegalStateError(f"Partition {tp} is not assigned")
        return 0


class Applier:
    def __init__(self, fail_on_call: int | None) -> None:
        self.calls = 0
        self.fail_on_call = fail_on_call
        self.applied: list[list[str]] = []
        self.during: Callable[[], None] | None = None

    async def apply(self, envelopes: Sequence[Envelope], select: Any) -> None:
        self.calls += 1
        self.applied.append([envelope.command.key for envelope in envelopes])
        # Yield once, as a store round trip would: the next poll runs meanwhile.
        await asyncio.sleep(0)
        if self.during is not None:
            during, self.during = self.during, None
            during()
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
    ownership: PartitionOwnership | None = None,
) -> None:
    await run_batches(
        consumer,  # type: ignore[arg-type]
        group="g",
        applier=applier,  # type: ignore[arg-type]
        select=select,
        dead_letters=dead_letters or DeadLetters(),  # type: ignore[arg-type]
        stop=stop,
        role="recovery",
        ownership=ownership,
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


class TestRebalance:
    """A rebalance takes partitions away while the loop holds batches of them."""

    @staticmethod
    def revoke(
        consumer: FakeConsumer, ownership: PartitionOwnership, revoked: set[TopicPartition]
    ) -> Callable[[], None]:
        """What aiokafka does: call the listener, then hand the partitions to someone else."""

        def rebalance() -> None:
            ownership.on_partitions_revoked(revoked)
            consumer.assigned -= revoked

        return rebalance

    async def test_a_batch_mid_apply_finishes_and_commits_only_what_is_still_owned(
        self,
    ) -> None:
        stop = asyncio.Event()
        consumer = FakeConsumer([{TP: [delete_record(0)], TP2: [delete_record(5, TP2)]}], stop)
        ownership = PartitionOwnership("g")
        applier = Applier(fail_on_call=None)
        applier.during = self.revoke(consumer, ownership, {TP})
        await _run(consumer, applier, stop, ownership=ownership)
        assert applier.applied == [["c0", "c5"]]  # applying twice is harmless
        assert consumer.commits == [{TP2: 6}]

    async def test_the_batch_polled_ahead_forgets_revoked_partitions_unapplied(self) -> None:
        stop = asyncio.Event()
        consumer = FakeConsumer(
            [
                {TP2: [delete_record(0, TP2)]},
                {TP: [delete_record(1)], TP2: [delete_record(7, TP2)]},
            ],
            stop,
        )
        ownership = PartitionOwnership("g")
        applier = Applier(fail_on_call=None)
        # By the time the first batch is written, the second one has been polled.
        applier.during = self.revoke(consumer, ownership, {TP})
        await _run(consumer, applier, stop, ownership=ownership)
        assert applier.applied == [["c0"], ["c7"]]
        assert consumer.commits == [{TP2: 1}, {TP2: 8}]
        assert consumer.seeks == []  # the new owner starts from TP's committed offset

    async def test_poison_of_a_revoked_partition_is_left_to_its_new_owner(self) -> None:
        stop = asyncio.Event()
        consumer = FakeConsumer(
            [
                {TP2: [delete_record(0, TP2)]},
                {TP: [poison_record(1)], TP2: [poison_record(2, TP2)]},
            ],
            stop,
        )
        ownership = PartitionOwnership("g")
        applier = Applier(fail_on_call=None)
        applier.during = self.revoke(consumer, ownership, {TP})
        dead_letters = DeadLetters()
        await _run(consumer, applier, stop, dead_letters, ownership=ownership)
        assert dead_letters.sent == [2]
        assert consumer.commits == [{TP2: 1}, {TP2: 3}]

    async def test_a_partition_gone_without_a_callback_is_not_committed(self) -> None:
        stop = asyncio.Event()
        consumer = FakeConsumer([{TP: [delete_record(0)], TP2: [delete_record(5, TP2)]}], stop)
        applier = Applier(fail_on_call=None)

        def taken() -> None:
            consumer.assigned = {TP2}

        applier.during = taken
        await _run(consumer, applier, stop)
        assert consumer.commits == [{TP2: 6}]

    @pytest.mark.parametrize(
        "error",
        [
            CommitFailedError("the group has already rebalanced"),
            IllegalStateError("No partitions assigned"),
        ],
    )
    async def test_a_commit_refused_by_a_rebalance_is_skipped_and_the_loop_goes_on(
        self, error: Exception
    ) -> None:
        stop = asyncio.Event()
        outages = Outages()
        outages.failed("kafka", "Unable connect to node with id 1")
        consumer = FakeConsumer([[delete_record(0)], [delete_record(1)]], stop)
        consumer.commit_errors = [error]
        applier = Applier(fail_on_call=None)
        await _run(consumer, applier, stop, outages=outages)
        assert applier.applied == [["c0"], ["c1"]]
        assert consumer.commits == [{TP: 2}]
        assert not outages.is_down("kafka")  # by the second, successful commit

    async def test_a_partition_revoked_while_lag_is_measured_is_skipped(self) -> None:
        stop = asyncio.Event()
        consumer = FakeConsumer([{TP: [delete_record(0)], TP2: [delete_record(5, TP2)]}], stop)
        consumer.end = 10
        positions = consumer.position

        async def position_then_rebalance(tp: TopicPartition) -> int:
            # The first position asked for is the last partition this consumer keeps.
            position = await positions(tp)
            consumer.assigned = {tp}
            return position

        consumer.position = position_then_rebalance  # type: ignore[method-assign]
        await _run(consumer, Applier(fail_on_call=None), stop)
        assert consumer.commits == [{TP: 1, TP2: 6}]

    def test_it_is_an_aiokafka_rebalance_listener(self) -> None:
        assert isinstance(PartitionOwnership("g"), ConsumerRebalanceListener)


class TestBatchDrop:
    def test_drops_records_commands_and_rejects_of_the_partitions(self) -> None:
        batch = decode_records(
            {
                TP: [delete_record(0), poison_record(1)],
                TP2: [delete_record(5, TP2), poison_record(6, TP2)],
            }
        )
        assert batch.drop({TP}) == 2
        assert list(batch.records) == [TP2]
        assert [e.command.key for e in batch.envelopes] == ["c5"]
        assert [record.offset for record, _ in batch.rejects] == [6]
        assert batch.count == 2

    def test_dropping_a_partition_it_does_not_hold_changes_nothing(self) -> None:
        batch = decode_records({TP: [delete_record(0)]})
        assert batch.drop({TP2}) == 0
        assert batch.count == 1
        assert batch.offsets({TP, TP2})[TP].offset == 1


def _lag_partitions(group: str) -> set[str]:
    return {
        sample.labels["partition"]
        for metric in REGISTRY.collect()
        if metric.name == "regionstore_consumer_lag_messages"
        for sample in metric.samples
        if sample.labels["group"] == group
    }


async def test_a_consumer_reports_lag_only_for_the_partitions_it_owns() -> None:
    stop = asyncio.Event()
    consumer = FakeConsumer([{TP: [delete_record(0)], TP2: [delete_record(5, TP2)]}], stop)
    consumer.end = 10
    ownership = PartitionOwnership("lag-group")
    await _run_in_group(consumer, stop, ownership, "lag-group")
    assert _lag_partitions("lag-group") == {"0", "1"}
    ownership.on_partitions_revoked({TP, TP2})
    assert _lag_partitions("lag-group") == set()
    consumer.batches = [{TP: [delete_record(1)], TP2: [delete_record(6, TP2)]}]
    stop.clear()
    await _run_in_group(consumer, stop, ownership, "lag-group")  # lag set while rebalancing
    ownership.on_partitions_assigned({TP2})
    assert _lag_partitions("lag-group") == {"1"}


async def _run_in_group(
    consumer: FakeConsumer, stop: asyncio.Event, ownership: PartitionOwnership, group: str
) -> None:
    await run_batches(
        consumer,  # type: ignore[arg-type]
        group=group,
        applier=Applier(fail_on_call=None),  # type: ignore[arg-type]
        select=select,
        dead_letters=DeadLetters(),  # type: ignore[arg-type]
        stop=stop,
        role="recovery",
        ownership=ownership,
    )
