"""The consume-apply-commit loop: commit only what was applied, rewind what was not."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any

import pytest
from aiokafka import ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import CommitFailedError, IllegalStateError
from prometheus_client import REGISTRY

from regionstore_shared.apply import Envelope, RegionUnavailableError, Rejected
from regionstore_shared.logs import Outages
from regionstore_shared.pipeline import DeadLetters as KafkaDeadLetters
from regionstore_shared.pipeline import (
    FixedTargets,
    PartitionOwnership,
    decode_records,
    run_batches,
)
from regionstore_shared.schemas import Target
from shared.tests.fakes import (
    TP,
    TP2,
    FakeApplier,
    FakeConsumer,
    FakeDeadLetters,
    FakeProducer,
    delete_record,
    poison_record,
)


def select(command: Any) -> Iterable[Target]:
    return list(command.targets)


async def _run(
    consumer: FakeConsumer,
    applier: FakeApplier,
    stop: asyncio.Event,
    dead_letters: FakeDeadLetters | None = None,
    outages: Outages | None = None,
    ownership: PartitionOwnership | None = None,
    commit_interval_ms: int = 0,
) -> None:
    await run_batches(
        consumer,
        group="g",
        applier=applier,  # type: ignore[arg-type]
        routing=FixedTargets(select),
        dead_letters=dead_letters or FakeDeadLetters(),  # type: ignore[arg-type]
        stop=stop,
        role="recovery",
        ownership=ownership,
        outages=outages,
        commit_interval_ms=commit_interval_ms,
    )


async def test_each_applied_batch_commits_past_its_last_record() -> None:
    stop = asyncio.Event()
    consumer = FakeConsumer([[delete_record(0), delete_record(1)], [delete_record(2)]], stop)
    await _run(consumer, FakeApplier(fail_on_call=None), stop)
    assert consumer.commits == [{TP: 2}, {TP: 3}]
    assert consumer.seeks == []


class TestCommitInterval:
    async def test_batches_applied_within_the_interval_are_committed_together(self) -> None:
        stop = asyncio.Event()
        polls = [
            [delete_record(0), delete_record(1)],
            {TP2: [delete_record(4)]},
            [delete_record(2)],
        ]
        consumer = FakeConsumer(polls, stop)
        applier = FakeApplier(fail_on_call=None)
        await _run(consumer, applier, stop, commit_interval_ms=60_000)
        assert applier.calls == 3
        assert consumer.commits == [{TP: 3, TP2: 5}]

    async def test_a_poll_that_finds_nothing_commits_what_was_applied(self) -> None:
        stop = asyncio.Event()
        consumer = FakeConsumer([[delete_record(0)], {}, [delete_record(1)]], stop)
        await _run(consumer, FakeApplier(fail_on_call=None), stop, commit_interval_ms=60_000)
        assert consumer.commits == [{TP: 1}, {TP: 2}]

    async def test_a_failure_rewinds_to_the_first_batch_not_committed(self) -> None:
        stop = asyncio.Event()
        consumer = FakeConsumer([[delete_record(0)], [delete_record(5), delete_record(6)]], stop)
        with pytest.raises(RegionUnavailableError):
            await _run(consumer, FakeApplier(fail_on_call=2), stop, commit_interval_ms=60_000)
        assert consumer.commits == []
        assert consumer.seeks == [(TP, 0)]

    async def test_a_failed_commit_rewinds_every_batch_it_held(self) -> None:
        stop = asyncio.Event()
        consumer = FakeConsumer([[delete_record(0)], [delete_record(1)]], stop)
        consumer.commit_errors.append(RuntimeError("broker gone"))
        with pytest.raises(RuntimeError, match="broker gone"):
            await _run(consumer, FakeApplier(fail_on_call=None), stop, commit_interval_ms=60_000)
        assert consumer.commits == []
        assert consumer.seeks == [(TP, 0)]


async def test_a_failed_batch_is_not_committed_and_is_rewound_to_its_first_record() -> None:
    stop = asyncio.Event()
    consumer = FakeConsumer([[delete_record(0)], [delete_record(5), delete_record(6)]], stop)
    with pytest.raises(RegionUnavailableError):
        await _run(consumer, FakeApplier(fail_on_call=2), stop)
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
        await _run(consumer, FakeApplier(fail_on_call=2), stop)
    assert consumer.commits == [{TP: 1}]
    # TP from the failed batch's first record; TP2, only in the batch polled ahead, from its own.
    assert sorted(consumer.seeks) == [(TP, 1), (TP2, 7)]


async def test_poison_is_dead_lettered_once_its_batch_is_handled_and_committed() -> None:
    stop = asyncio.Event()
    consumer = FakeConsumer([[delete_record(0), poison_record(1)], [poison_record(2)]], stop)
    dead_letters = FakeDeadLetters()
    await _run(consumer, FakeApplier(fail_on_call=None), stop, dead_letters)
    assert dead_letters.sent == [1, 2]
    assert consumer.commits == [{TP: 2}, {TP: 3}]


async def test_poison_polled_ahead_of_a_failed_batch_is_not_dead_lettered_yet() -> None:
    stop = asyncio.Event()
    consumer = FakeConsumer([[delete_record(0)], [poison_record(1)]], stop)
    dead_letters = FakeDeadLetters()
    with pytest.raises(RegionUnavailableError):
        await _run(consumer, FakeApplier(fail_on_call=1), stop, dead_letters)
    assert dead_letters.sent == []
    assert consumer.commits == []
    assert consumer.seeks == [(TP, 0)]


class StoppingApplier(FakeApplier):
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
    await _run(consumer, FakeApplier(fail_on_call=None), stop, outages=outages)
    assert consumer.commits == [{TP: 1}]
    assert not outages.is_down("kafka")


async def test_a_failed_batch_does_not_report_kafka_ok() -> None:
    stop = asyncio.Event()
    outages = Outages()
    outages.failed("kafka", "Unable connect to node with id 1")
    consumer = FakeConsumer([[delete_record(0)]], stop)
    with pytest.raises(RegionUnavailableError):
        await _run(consumer, FakeApplier(fail_on_call=1), stop, outages=outages)
    assert outages.is_down("kafka")


def test_decoded_envelopes_remember_their_topic() -> None:
    batch = decode_records({TP: [delete_record(0)]})
    (envelope,) = batch.envelopes
    assert envelope.topic == "pending.region_1"


TRACEPARENT = b"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


def test_decoded_envelopes_keep_their_trace_headers_only() -> None:
    record = delete_record(0)
    record.headers = [("traceparent", TRACEPARENT), ("other", b"x")]
    (envelope,) = decode_records({TP: [record]}).envelopes
    assert envelope.trace == (("traceparent", TRACEPARENT),)
    assert envelope.trace_id == "0af7651916cd43dd8448eb211c80319c"


async def test_a_dead_letter_keeps_the_command_trace_headers() -> None:
    producer = FakeProducer()
    record = delete_record(7)
    record.headers = [("traceparent", TRACEPARENT)]
    (envelope,) = decode_records({TP: [record]}).envelopes
    await KafkaDeadLetters(producer, "customers.deadletter").send_commands(
        "region_2", [Rejected(envelope, "WriteError 121: Document failed validation")]
    )
    (message,) = producer.sent
    assert ("traceparent", TRACEPARENT) in message["headers"]


async def test_an_undecodable_record_is_dead_lettered_with_its_trace_headers() -> None:
    producer = FakeProducer()
    record = poison_record(3)
    record.headers = [("traceparent", TRACEPARENT)]
    await KafkaDeadLetters(producer, "customers.deadletter").send(record, "invalid command")  # type: ignore[arg-type]
    (message,) = producer.sent
    assert ("traceparent", TRACEPARENT) in message["headers"]


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
    ) -> Callable[[], Awaitable[None]]:
        """What aiokafka does: call the listener, then hand the partitions to someone else."""

        async def rebalance() -> None:
            await ownership.on_partitions_revoked(revoked)
            consumer.assigned -= revoked

        return rebalance

    async def test_a_batch_mid_apply_finishes_and_commits_only_what_is_still_owned(
        self,
    ) -> None:
        stop = asyncio.Event()
        consumer = FakeConsumer([{TP: [delete_record(0)], TP2: [delete_record(5, TP2)]}], stop)
        ownership = PartitionOwnership("g")
        applier = FakeApplier(fail_on_call=None)
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
        applier = FakeApplier(fail_on_call=None)
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
        applier = FakeApplier(fail_on_call=None)
        applier.during = self.revoke(consumer, ownership, {TP})
        dead_letters = FakeDeadLetters()
        await _run(consumer, applier, stop, dead_letters, ownership=ownership)
        assert dead_letters.sent == [2]
        assert consumer.commits == [{TP2: 1}, {TP2: 3}]

    async def test_a_partition_gone_without_a_callback_is_not_committed(self) -> None:
        stop = asyncio.Event()
        consumer = FakeConsumer([{TP: [delete_record(0)], TP2: [delete_record(5, TP2)]}], stop)
        applier = FakeApplier(fail_on_call=None)

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
        applier = FakeApplier(fail_on_call=None)
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
        await _run(consumer, FakeApplier(fail_on_call=None), stop)
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
    await ownership.on_partitions_revoked({TP, TP2})
    assert _lag_partitions("lag-group") == set()
    consumer.batches = [{TP: [delete_record(1)], TP2: [delete_record(6, TP2)]}]
    stop.clear()
    await _run_in_group(consumer, stop, ownership, "lag-group")  # lag set while rebalancing
    await ownership.on_partitions_assigned({TP2})
    assert _lag_partitions("lag-group") == {"1"}


async def _run_in_group(
    consumer: FakeConsumer, stop: asyncio.Event, ownership: PartitionOwnership, group: str
) -> None:
    await run_batches(
        consumer,
        group=group,
        applier=FakeApplier(fail_on_call=None),  # type: ignore[arg-type]
        routing=FixedTargets(select),
        dead_letters=FakeDeadLetters(),  # type: ignore[arg-type]
        stop=stop,
        role="recovery",
        ownership=ownership,
    )
