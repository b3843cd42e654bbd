"""The consume-apply-commit loop shared by every service that reads commands from Kafka."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import TypeAlias

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord
from aiokafka.structs import OffsetAndMetadata
from pydantic import ValidationError

from regionstore_shared import metrics
from regionstore_shared.apply import BatchApplier, Envelope, TargetSelector
from regionstore_shared.schemas import decode_command

log = logging.getLogger(__name__)

Record: TypeAlias = "ConsumerRecord[bytes, bytes]"


class DeadLetters:
    """Sends messages that can never be applied to the dead-letter topic, error in the headers."""

    def __init__(self, producer: AIOKafkaProducer, topic: str) -> None:
        self._producer = producer
        self._topic = topic

    async def send(self, record: Record, error: str) -> None:
        """Forward a record unchanged, with where it came from and why it failed."""
        headers = [
            ("regionstore-error", error[:4000].encode()),
            ("regionstore-source-topic", record.topic.encode()),
            ("regionstore-source-partition", str(record.partition).encode()),
            ("regionstore-source-offset", str(record.offset).encode()),
        ]
        await self._producer.send_and_wait(
            self._topic, value=record.value, key=record.key, headers=headers
        )
        metrics.COMMANDS_DEADLETTERED.labels(source_topic=record.topic).inc()
        log.error(
            "message dead-lettered",
            extra={
                "topic": record.topic,
                "partition": record.partition,
                "offset": record.offset,
                "error": error[:500],
            },
        )


async def decode_batch(records: list[Record], dead_letters: DeadLetters) -> list[Envelope]:
    """Decode records; the undecodable ones go to the dead-letter topic and are dropped here."""
    envelopes: list[Envelope] = []
    for record in records:
        if record.value is None:
            await dead_letters.send(record, "empty message")
            continue
        try:
            envelopes.append(Envelope(decode_command(record.value), record.value))
        except ValidationError as error:
            await dead_letters.send(record, f"invalid command: {error}")
    return envelopes


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
    poll_timeout_ms: int = 500,
) -> None:
    """Consume until ``stop`` is set: decode, apply or park, then commit what was handled.

    Offsets are committed only after the whole batch is written or parked, so a crash at any
    point replays at most the uncommitted batch, which the version guard makes harmless.
    """
    while not stop.is_set():
        batches = await consumer.getmany(timeout_ms=poll_timeout_ms)
        if not batches:
            continue
        records = [record for partition in batches.values() for record in partition]
        try:
            with metrics.BATCH_SECONDS.labels(role=role).time():
                envelopes = await decode_batch(records, dead_letters)
                if envelopes:
                    await applier.apply(envelopes, select)
        except BaseException:
            # Nothing of this batch is committed; rewind so whoever consumes next (this
            # consumer after a pause, or another after a rebalance) starts with it again.
            assigned = consumer.assignment()
            for tp, partition in batches.items():
                if tp in assigned:
                    consumer.seek(tp, partition[0].offset)
            raise
        await consumer.commit(
            {
                tp: OffsetAndMetadata(partition[-1].offset + 1, "")
                for tp, partition in batches.items()
            }
        )
        await _update_lag(consumer, group)
        if on_batch is not None:
            await on_batch(len(records))


async def _update_lag(consumer: AIOKafkaConsumer, group: str) -> None:
    for tp in consumer.assignment():
        end = consumer.highwater(tp)
        if end is None:
            continue
        lag = max(0, end - await consumer.position(tp))
        metrics.CONSUMER_LAG.labels(group=group, topic=tp.topic, partition=str(tp.partition)).set(
            lag
        )
