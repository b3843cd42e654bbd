"""The consume-apply-commit loop shared by every service that reads commands from Kafka."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import TypeAlias

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from aiokafka.structs import OffsetAndMetadata
from pydantic import ValidationError

from regionstore_shared import metrics
from regionstore_shared.apply import BatchApplier, Envelope, Rejected, TargetSelector
from regionstore_shared.logs import Outages
from regionstore_shared.schemas import decode_command

log = logging.getLogger(__name__)

Record: TypeAlias = "ConsumerRecord[bytes, bytes]"


ERROR_HEADER = "regionstore-error"
REGION_HEADER = "regionstore-region"
COMMAND_ID_HEADER = "regionstore-command-id"
SOURCE_TOPIC_HEADER = "regionstore-source-topic"


class DeadLetters:
    """Sends messages that can never be applied to the dead-letter topic, error in the headers.

    Two kinds: records that do not decode to a command (:meth:`send`), and commands a region
    refused for good (:meth:`send_commands`, the applier's dead-letter sink).
    """

    def __init__(self, producer: AIOKafkaProducer, topic: str) -> None:
        self._producer = producer
        self._topic = topic

    async def send(self, record: Record, error: str) -> None:
        """Forward a record unchanged, with where it came from and why it failed."""
        headers = [
            (ERROR_HEADER, error[:4000].encode()),
            (SOURCE_TOPIC_HEADER, record.topic.encode()),
            ("regionstore-source-partition", str(record.partition).encode()),
            ("regionstore-source-offset", str(record.offset).encode()),
        ]
        await self._producer.send_and_wait(
            self._topic, value=record.value, key=record.key, headers=headers
        )
        metrics.COMMANDS_DEADLETTERED.labels(source_topic=record.topic, region="").inc()
        log.error(
            "message dead-lettered",
            extra={
                "topic": record.topic,
                "partition": record.partition,
                "offset": record.offset,
                "error": error[:500],
            },
        )

    async def send_commands(self, region: str, rejected: Sequence[Rejected]) -> None:
        """Forward each refused command's original bytes, with the region and the store's
        reason; return once Kafka acknowledged all of them."""
        sent = []
        for failure in rejected:
            envelope = failure.envelope
            headers = [
                (ERROR_HEADER, failure.error[:4000].encode()),
                (REGION_HEADER, region.encode()),
                (COMMAND_ID_HEADER, str(envelope.command.command_id).encode()),
                (SOURCE_TOPIC_HEADER, envelope.topic.encode()),
            ]
            sent.append(
                await self._producer.send(
                    self._topic,
                    value=envelope.raw,
                    key=envelope.command.key.encode(),
                    headers=headers,
                )
            )
        await asyncio.gather(*sent)
        for failure in rejected:
            envelope = failure.envelope
            metrics.COMMANDS_DEADLETTERED.labels(source_topic=envelope.topic, region=region).inc()
            log.error(
                "command dead-lettered",
                extra={
                    "region": region,
                    "command_id": str(envelope.command.command_id),
                    "customer_id": envelope.command.key,
                    "version": envelope.command.version,
                    "topic": envelope.topic,
                    "error": failure.error[:500],
                },
            )


@dataclass(slots=True)
class Batch:
    """One poll's records, decoded: what to apply and what to dead-letter."""

    records: dict[TopicPartition, list[Record]]
    envelopes: list[Envelope] = field(default_factory=list)
    rejects: list[tuple[Record, str]] = field(default_factory=list)

    @property
    def count(self) -> int:
        """Records polled, rejects included."""
        return sum(len(records) for records in self.records.values())


def decode_records(records: dict[TopicPartition, list[Record]]) -> Batch:
    """Decode a poll's records; the undecodable ones are set aside with the reason."""
    batch = Batch(records)
    for partition in records.values():
        for record in partition:
            if record.value is None:
                batch.rejects.append((record, "empty message"))
                continue
            try:
                command = decode_command(record.value)
                batch.envelopes.append(Envelope(command, record.value, record.topic))
            except ValidationError as error:
                batch.rejects.append((record, f"invalid command: {error}"))
    return batch


async def _poll(consumer: AIOKafkaConsumer, timeout_ms: int) -> Batch | None:
    records = await consumer.getmany(timeout_ms=timeout_ms)
    return decode_records(records) if records else None


async def run_batches(
    consumer: AIOKafkaConsumer,
    *,
    group: str,
    applier: BatchApplier,
    select: TargetSelector,
    dead_letters: DeadLetters,
    stop: asyncio.Event,
    role: str,
    on_batch: Callable[[int], Awaitable[None]] | None = None,
    outages: Outages | None = None,
    poll_timeout_ms: int = 500,
) -> None:
    """Consume until ``stop`` is set: decode, apply or park, then commit what was handled.

    Offsets are committed only after the whole batch is written or parked, so a crash at any
    point replays at most the uncommitted batches, which the version guard makes harmless.
    The next batch is polled and decoded while the current one is written (the stores, not
    this process, are then the ones working); it is applied only after the current one is
    committed, and rewound with it if the current one fails. A commit is the consumer's proof
    that Kafka works: it is reported to ``outages`` as ``kafka`` being ok.
    """
    ahead: asyncio.Task[Batch | None] | None = None
    try:
        while not stop.is_set():
            if ahead is None:
                batch = await _poll(consumer, poll_timeout_ms)
            else:
                batch, ahead = await ahead, None
            if batch is None:
                continue
            ahead = asyncio.create_task(_poll(consumer, poll_timeout_ms))
            try:
                with metrics.BATCH_SECONDS.labels(role=role).time():
                    for record, error in batch.rejects:
                        await dead_letters.send(record, error)
                    if batch.envelopes:
                        await applier.apply(batch.envelopes, select)
            except BaseException:
                following, ahead = await _cancel(ahead), None
                _rewind(consumer, [batch] if following is None else [batch, following])
                raise
            await consumer.commit(
                {
                    tp: OffsetAndMetadata(records[-1].offset + 1, "")
                    for tp, records in batch.records.items()
                }
            )
            if outages is not None:
                outages.ok("kafka")
            await _update_lag(consumer, group)
            if on_batch is not None:
                await on_batch(batch.count)
    finally:
        # A batch polled ahead and never applied is rewound, so no later poll skips it.
        if ahead is not None and (following := await _cancel(ahead)) is not None:
            _rewind(consumer, [following])


async def _cancel(task: asyncio.Task[Batch | None]) -> Batch | None:
    """Stop a poll in flight; the batch it already returned, if it had finished."""
    if task.done():
        return None if task.cancelled() or task.exception() else task.result()
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError, Exception):
        await task
    return None


def _rewind(consumer: AIOKafkaConsumer, batches: list[Batch]) -> None:
    """Seek every partition back to the first record of the earliest batch that holds it.

    Nothing of these batches is committed; whoever consumes next (this consumer after a
    pause, or another after a rebalance) starts with them again.
    """
    first: dict[TopicPartition, int] = {}
    for batch in batches:
        for tp, records in batch.records.items():
            first.setdefault(tp, records[0].offset)
    assigned = consumer.assignment()
    for tp, offset in first.items():
        if tp in assigned:
            consumer.seek(tp, offset)


async def _update_lag(consumer: AIOKafkaConsumer, group: str) -> None:
    for tp in consumer.assignment():
        end = consumer.highwater(tp)
        if end is None:
            continue
        lag = max(0, end - await consumer.position(tp))
        metrics.CONSUMER_LAG.labels(group=group, topic=tp.topic, partition=str(tp.partition)).set(
            lag
        )
