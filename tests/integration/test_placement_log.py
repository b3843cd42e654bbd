"""The placement tables against the stack's real Kafka: transactions, fencing and history.

Each test has a command topic, a group and a table topic of its own, so it sees exactly the
commands it produced.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest
import pytest_asyncio
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import RecordsToDelete
from aiokafka.structs import OffsetAndMetadata

from regionstore_shared.clients import kafka_admin, kafka_connection
from regionstore_shared.pipeline import Batch, RoutedBatch, decode_records
from regionstore_shared.placement import UNKNOWN_ADAPTER
from regionstore_shared.placement_local import UNKNOWN_KEY, LocalTables
from regionstore_shared.placement_log import KafkaTableStore, PlacementLog
from regionstore_shared.schemas import Action, Applier, Command, encode_command
from regionstore_shared.settings import CommonSettings
from regionstore_shared.topics import ensure_topics
from shared.tests.fakes import FakeConsumer, command_record, upsert

pytestmark = pytest.mark.integration

MOVED = 45000  # home region_2, replica region_1: a customer of region_1 leaves region_3
SETTLE_S = 15.0


@dataclass
class Topics:
    settings: CommonSettings
    group: str
    opened: list[LocalTables] = field(default_factory=list)

    @property
    def commands(self) -> TopicPartition:
        return TopicPartition(self.settings.kafka.command_topic, 0)

    def log(self) -> PlacementLog:
        """A consumer process's log, with tables on a disk of its own."""
        self.opened.append(LocalTables(None, group=self.group))
        return PlacementLog(
            self.store(),
            self.opened[-1],
            group=self.group,
            role=Applier.REPLICATOR,
            regions=self.settings.region_map.names,
        )

    def store(self) -> KafkaTableStore:
        return KafkaTableStore(self.settings.kafka, group=self.group, client_id="tests")

    async def produce(self, *commands: Command) -> None:
        producer = AIOKafkaProducer(**kafka_connection(self.settings.kafka), acks="all")
        await producer.start()
        try:
            for command in commands:
                await producer.send_and_wait(
                    self.commands.topic,
                    encode_command(command),
                    key=command.key.encode(),
                    partition=0,
                )
        finally:
            await producer.stop()

    async def committed(self, settles_at: int | None = None) -> int:
        """The group's committed offset; with ``settles_at``, read again until it is that one.

        A transaction's offsets are visible once the coordinator has written its commit
        markers, which it does after the commit returns; aiokafka cannot ask the group to wait
        for them (``require_stable``), so the test asks again for a while.
        """
        admin = kafka_admin(self.settings.kafka, "tests")
        await admin.start()
        try:
            async with asyncio.timeout(None if settles_at is None else SETTLE_S) as deadline:
                while True:
                    offsets = await admin.list_consumer_group_offsets(
                        self.group, partitions=[self.commands]
                    )
                    offset: int = offsets[self.commands].offset
                    if settles_at in (None, offset):
                        return offset
                    await asyncio.sleep(0.05)
        except TimeoutError:
            if deadline.expired():
                return offset
            raise
        finally:
            await admin.close()

    async def commit_plainly(self, offset: int) -> None:
        """What a consumer without placement tables did: commit offsets, nothing else."""
        consumer = AIOKafkaConsumer(
            **kafka_connection(self.settings.kafka), group_id=self.group, enable_auto_commit=False
        )
        await consumer.start()
        try:
            consumer.assign([self.commands])
            await consumer.commit({self.commands: OffsetAndMetadata(offset, "")})
        finally:
            await consumer.stop()

    async def table_end(self) -> int:
        """The table partition's end offset (its last transaction's marker included)."""
        consumer = AIOKafkaConsumer(**kafka_connection(self.settings.kafka))
        await consumer.start()
        try:
            tp = TopicPartition(self.settings.kafka.placement_topic(self.group), 0)
            return int((await consumer.end_offsets([tp]))[tp])
        finally:
            await consumer.stop()

    async def table(self) -> dict[bytes, bytes]:
        """The table partition's committed entries, the newest per key."""
        consumer = AIOKafkaConsumer(
            **kafka_connection(self.settings.kafka),
            isolation_level="read_committed",
            enable_auto_commit=False,
            auto_offset_reset="earliest",
        )
        await consumer.start()
        try:
            tp = TopicPartition(self.settings.kafka.placement_topic(self.group), 0)
            consumer.assign([tp])
            await consumer.seek_to_beginning(tp)
            end = (await consumer.end_offsets([tp]))[tp]
            entries: dict[bytes, bytes] = {}
            while await consumer.position(tp) < end:
                for records in (await consumer.getmany(tp, timeout_ms=1000)).values():
                    entries.update((r.key, r.value) for r in records if r.key and r.value)
            return entries
        finally:
            await consumer.stop()


@pytest_asyncio.fixture(loop_scope="session")
async def topics(stack: object) -> AsyncIterator[Topics]:
    name = f"tests.{uuid.uuid4().hex[:12]}"
    base = CommonSettings()
    kafka = base.kafka.model_copy(update={"command_topic": f"{name}.commands", "partitions": 1})
    settings = base.model_copy(update={"kafka": kafka})
    group = f"{name}.replicator"
    await ensure_topics(settings, [kafka.command_topic, kafka.placement_topic(group)])
    topics = Topics(settings, group)
    yield topics
    for local in topics.opened:
        local.close()
    admin = kafka_admin(kafka, "tests")
    await admin.start()
    try:
        await admin.delete_topics([kafka.command_topic, kafka.placement_topic(group)])
    finally:
        await admin.close()


def batch(topics: Topics, *commands: Command, first: int = 0) -> Batch:
    tp = topics.commands
    return decode_records({tp: [command_record(c, first + i, tp) for i, c in enumerate(commands)]})


def owning(topics: Topics) -> FakeConsumer:
    """What the commit asks of the consumer: the partitions it owns."""
    consumer = FakeConsumer([], asyncio.Event())
    consumer.assigned = {topics.commands}
    return consumer


def routed(batch: RoutedBatch, command: Command) -> list[tuple[str, Action]]:
    """The targets routed for every copy of ``command`` in the batch."""
    return [
        (t.region, t.action)
        for envelope in batch.envelopes
        if envelope.command.command_id == command.command_id
        for t in batch.select(envelope.command)
    ]


async def test_a_new_owner_fences_the_old_one_and_sees_only_what_it_committed(
    topics: Topics,
) -> None:
    created, moved = upsert("c1", 1), upsert("c1", 2, MOVED)
    first, second = topics.log(), topics.log()
    try:
        await first.assigned({topics.commands})
        done = batch(topics, created)
        assert routed(await first.route(done), created) == [("region_3", Action.UPSERT)]
        assert await first.commit(owning(topics), done, topics.group)
        assert await topics.committed(settles_at=1) == 1
        in_hand = batch(topics, moved, first=1)
        await first.route(in_hand)

        await second.assigned({topics.commands})
        # The first owner lost the partition while holding a batch: it commits nothing.
        assert not await first.commit(owning(topics), in_hand, topics.group)
        assert await topics.committed() == 1
        assert routed(await second.route(in_hand), moved) == [
            ("region_1", Action.UPSERT),
            ("region_3", Action.TOMBSTONE),
        ]
        assert await second.commit(owning(topics), in_hand, topics.group)
        assert await topics.committed(settles_at=2) == 2
        assert set(await topics.table()) == {b"c1", UNKNOWN_KEY}
    finally:
        await first.close()
        await second.close()


async def test_a_table_first_started_after_commands_were_applied_learns_them(
    topics: Topics,
) -> None:
    created, other = upsert("c1", 1), upsert("c2", 2)
    await topics.produce(created, other)
    await topics.commit_plainly(2)
    log = topics.log()
    await log.assigned({topics.commands})
    try:
        moved = upsert("c1", 3, MOVED)
        done = batch(topics, moved, first=2)
        assert routed(await log.route(done), moved) == [
            ("region_1", Action.UPSERT),
            ("region_3", Action.TOMBSTONE),
        ]
        await log.commit(owning(topics), done, topics.group)
        table = await topics.table()
        assert set(table) == {b"c1", b"c2", UNKNOWN_KEY}, table
        assert table[UNKNOWN_KEY] == UNKNOWN_ADAPTER.dump_json(())
    finally:
        await log.close()


async def test_a_table_started_after_the_first_commands_were_removed_assumes_anywhere(
    topics: Topics,
) -> None:
    await topics.produce(upsert("c1", 1), upsert("c2", 2))
    admin = kafka_admin(topics.settings.kafka, "tests")
    await admin.start()
    try:
        await admin.delete_records({topics.commands: RecordsToDelete(1)})  # as retention does
    finally:
        await admin.close()
    log = topics.log()
    await log.assigned({topics.commands})
    try:
        created = upsert("c3", 3)
        done = batch(topics, created, first=2)
        assert routed(await log.route(done), created) == [
            ("region_3", Action.UPSERT),
            ("region_2", Action.TOMBSTONE),
        ]
        await log.commit(owning(topics), done, topics.group)
        names = topics.settings.region_map.names
        assert (await topics.table())[UNKNOWN_KEY] == UNKNOWN_ADAPTER.dump_json(names)
    finally:
        await log.close()


async def test_a_standby_follows_the_table_so_taking_the_partition_reads_nothing_more(
    topics: Topics,
) -> None:
    created, moved = upsert("c1", 1), upsert("c1", 2, MOVED)
    owner, standby = topics.log(), topics.log()
    await standby.start()
    try:
        await owner.assigned({topics.commands})
        done = batch(topics, created)
        await owner.route(done)
        assert await owner.commit(owning(topics), done, topics.group)
        await owner.revoked({topics.commands})
        local = topics.opened[-1]
        end = (await topics.table_end()) - 1  # the commit marker follows the entries
        async with asyncio.timeout(SETTLE_S):  # the follower reads what the owner committed
            while True:
                if local.mark(0).offset >= end:
                    break
                await asyncio.sleep(0.05)
        assert local.table(0).get("c1") is not None
        await standby.assigned({topics.commands})
        assert routed(await standby.route(batch(topics, moved, first=1)), moved) == [
            ("region_1", Action.UPSERT),
            ("region_3", Action.TOMBSTONE),
        ]
    finally:
        await owner.close()
        await standby.close()
