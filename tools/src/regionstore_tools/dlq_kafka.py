"""The dead-letter and redrive topics, read whole, and the command topic written, over Kafka.

The command line reads Kafka directly (``REGIONSTORE_KAFKA__*``), as ``audit`` reads the stores:
dead letters are few and kept forever, so each command reads the dead-letter topic from its
first record to its end, without a consumer group.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Iterator

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from aiokafka.errors import KafkaError

from regionstore_shared.clients import kafka_admin, kafka_connection, kafka_producer
from regionstore_shared.schemas import Command, encode_command
from regionstore_shared.settings import CommonSettings
from regionstore_shared.topics import ensure_topics
from regionstore_tools.dlq import REDRIVEN_FROM_HEADER, DeadLetter, Redrive, decode_redrive
from regionstore_tools.gateway import ToolError

CLIENT_ID = "regionstore-cli"
# Exit status when Kafka cannot be read or written, as ``audit``'s for an unreadable store.
UNREACHABLE = 2


class KafkaDeadLetterLog:
    """Dead letters and redrives in Kafka; use as ``async with``. Every Kafka failure is a
    ToolError naming the broker."""

    def __init__(self, settings: CommonSettings, *, read_within_s: float = 60.0) -> None:
        self._settings = settings
        self._kafka = settings.kafka
        self._read_within_s = read_within_s
        self._producer: AIOKafkaProducer | None = None

    async def __aenter__(self) -> KafkaDeadLetterLog:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        if self._producer is not None:
            await self._producer.stop()

    async def dead_letters(self) -> list[DeadLetter]:
        return [
            DeadLetter(
                partition=record.partition,
                offset=record.offset,
                timestamp_ms=record.timestamp,
                key=record.key,
                value=record.value,
                headers=tuple(record.headers),
            )
            for record in await self._read(self._kafka.deadletter_topic)
        ]

    async def redrives(self) -> dict[str, Redrive]:
        found = {}
        for record in await self._read(self._kafka.redrive_topic):
            if (redrive := decode_redrive(record.value)) is not None:
                found[redrive.dead_letter] = redrive
        return found

    async def publish(self, command: Command, letter: DeadLetter) -> str:
        producer = await self._started_producer()
        republished = command.model_copy(update={"republished": True})
        with self._reported("publish to"):
            sent = await producer.send_and_wait(
                self._kafka.command_topic,
                value=encode_command(republished),
                key=command.key.encode(),
                headers=[(REDRIVEN_FROM_HEADER, letter.id.encode())],
            )
        return f"{sent.partition}:{sent.offset}"

    async def record(self, redrive: Redrive) -> None:
        producer = await self._started_producer()
        with self._reported("publish to"):
            await producer.send_and_wait(
                self._kafka.redrive_topic,
                value=redrive.encode(),
                key=redrive.dead_letter.encode(),
            )

    async def _started_producer(self) -> AIOKafkaProducer:
        if self._producer is None:
            with self._reported("connect to"):
                # A broker that creates topics on first use would not compact this one.
                await ensure_topics(self._settings, [self._kafka.redrive_topic])
                producer = kafka_producer(self._kafka, CLIENT_ID)
                try:
                    await producer.start()
                except BaseException:
                    await producer.stop()
                    raise
            self._producer = producer
        return self._producer

    async def _read(self, topic: str) -> list[ConsumerRecord[bytes, bytes]]:
        with self._reported("read from"):
            async with asyncio.timeout(self._read_within_s):
                partitions = await self._partitions(topic)
                if not partitions:
                    return []
                async with self._consumer() as consumer:
                    return await _read_whole(consumer, partitions)

    async def _partitions(self, topic: str) -> list[TopicPartition]:
        """The topic's partitions; none when it does not exist."""
        admin = kafka_admin(self._kafka, CLIENT_ID)
        try:
            await admin.start()
            described = await admin.describe_topics([topic])
        finally:
            await admin.close()
        return sorted(
            TopicPartition(topic, p["partition"])
            for t in described
            if t["error_code"] == 0
            for p in t["partitions"]
        )

    @contextlib.asynccontextmanager
    async def _consumer(self) -> AsyncIterator[AIOKafkaConsumer]:
        consumer = AIOKafkaConsumer(
            **kafka_connection(self._kafka),
            client_id=CLIENT_ID,
            enable_auto_commit=False,
            # No group, no commit: a position to reset is reset to the first record, as the
            # explicit seek says too (a reset to the end could race with it).
            auto_offset_reset="earliest",
            isolation_level="read_committed",
            request_timeout_ms=self._kafka.request_timeout_ms,
        )
        try:
            await consumer.start()
            yield consumer
        finally:
            await consumer.stop()

    @contextlib.contextmanager
    def _reported(self, doing: str) -> Iterator[None]:
        where = self._kafka.bootstrap_servers
        try:
            with _quiet_kafka_logs():
                yield
        except TimeoutError:
            raise ToolError(
                f"cannot {doing} Kafka at {where}: no answer in time", UNREACHABLE
            ) from None
        except KafkaError as error:
            raise ToolError(f"cannot {doing} Kafka at {where}: {error!r}", UNREACHABLE) from None


async def _read_whole(
    consumer: AIOKafkaConsumer, tps: list[TopicPartition]
) -> list[ConsumerRecord[bytes, bytes]]:
    """Every record of the partitions up to their ends as they were when asked, oldest first."""
    consumer.assign(tps)
    starts = await consumer.beginning_offsets(tps)
    ends = await consumer.end_offsets(tps)
    for tp in tps:
        consumer.seek(tp, starts[tp])
    left = {tp for tp in tps if starts[tp] < ends[tp]}
    records: list[ConsumerRecord[bytes, bytes]] = []
    while left:
        polled = await consumer.getmany(*left, timeout_ms=1000)
        for tp, batch in polled.items():
            records.extend(record for record in batch if record.offset < ends[tp])
        left = {tp for tp in left if await consumer.position(tp) < ends[tp]}
    return sorted(records, key=lambda record: (record.timestamp, record.partition, record.offset))


@contextlib.contextmanager
def _quiet_kafka_logs() -> Iterator[None]:
    """aiokafka logs each failed connection; the command line says it once, on one line."""
    kafka_log = logging.getLogger("aiokafka")
    level = kafka_log.level
    kafka_log.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        kafka_log.setLevel(level)
