"""The placement tables a consumer group keeps in Kafka: loaded after a fence, committed with
the offsets, and what a fenced or failed commit leaves behind."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest
from aiokafka import TopicPartition
from aiokafka.errors import KafkaTimeoutError

from regionstore_shared.domain import delete_command
from regionstore_shared.pipeline import Batch, RoutedBatch, decode_records
from regionstore_shared.placement import UNKNOWN_ADAPTER, Placed, lifted
from regionstore_shared.placement_local import LocalTables
from regionstore_shared.placement_log import PlacementLog, _bounded
from regionstore_shared.regions import DEFAULT_REGIONS, RegionMap
from regionstore_shared.schemas import Action, Applier, Command
from shared.tests.fakes import FakeConsumer, FakeTableStore, command_record, upsert

REGIONS = RegionMap(DEFAULT_REGIONS)
P0 = TopicPartition("customers.commands", 0)
P1 = TopicPartition("customers.commands", 1)
MOVED_TO_REGION_2 = 44409  # home region_2, replica region_1


OPENED: list[LocalTables] = []


@pytest.fixture(autouse=True)
def _close_local_tables() -> Iterator[None]:
    yield
    while OPENED:
        OPENED.pop().close()


def local_tables() -> LocalTables:
    """A process's own tables on disk (a temporary directory)."""
    OPENED.append(LocalTables(None, group="g"))
    return OPENED[-1]


def log_of(
    store: FakeTableStore, role: Applier = Applier.REPLICATOR, local: LocalTables | None = None
) -> PlacementLog:
    """A consumer's log: a process of its own, unless it is given one's tables."""
    return PlacementLog(store, local or local_tables(), group="g", role=role, regions=REGIONS.names)


def batch(*commands: Command, tp: TopicPartition = P0, first: int = 0) -> Batch:
    return decode_records({tp: [command_record(c, first + i, tp) for i, c in enumerate(commands)]})


def routed(batch: RoutedBatch, command: Command) -> list[tuple[str, Action]]:
    """The targets routed for every copy of ``command`` in the batch."""
    return [
        (t.region, t.action)
        for envelope in batch.envelopes
        if envelope.command.command_id == command.command_id
        for t in batch.select(envelope.command)
    ]


def consumer(*assigned: TopicPartition) -> FakeConsumer:
    fake = FakeConsumer([], asyncio.Event())
    fake.assigned = set(assigned)
    return fake


async def commit(log: PlacementLog, done: Batch, *owned: TopicPartition) -> bool:
    return await log.commit(consumer(*(owned or (P0,))), done, "g")


async def committed(store: FakeTableStore, *commands: Command) -> PlacementLog:
    """A log that took P0 and committed ``commands`` as one batch."""
    log = log_of(store)
    await log.assigned({P0})
    done = batch(*commands)
    await log.route(done)
    assert await commit(log, done)
    return log


class TestRoute:
    async def test_a_create_goes_to_its_placement_only(self) -> None:
        log = log_of(FakeTableStore())
        await log.assigned({P0})
        create = upsert("c1", 1)
        assert routed(await log.route(batch(create)), create) == [("region_3", Action.UPSERT)]

    async def test_each_group_routes_its_role_only(self) -> None:
        log = log_of(FakeTableStore(), Applier.WRITER)
        await log.assigned({P0})
        create, move = upsert("c1", 1), upsert("c1", 2, MOVED_TO_REGION_2)
        select = await log.route(batch(create, move))
        assert routed(select, create) == [("region_1", Action.UPSERT)]
        assert routed(select, move) == [("region_2", Action.UPSERT)]

    async def test_a_retried_command_seen_after_a_newer_one_keeps_only_its_first_route(
        self,
    ) -> None:
        # Republished after a newer command, a retried command routes nowhere the second time;
        # what it was routed to the first time must still be written.
        log = log_of(FakeTableStore())
        await log.assigned({P0})
        create, move = upsert("c1", 1), upsert("c1", 2, MOVED_TO_REGION_2)
        retried = create.model_copy(update={"republished": True})
        select = await log.route(batch(create, move, retried))
        assert routed(select, create) == [("region_3", Action.UPSERT)]
        assert routed(select, move) == [("region_1", Action.UPSERT), ("region_3", Action.TOMBSTONE)]

    async def test_each_command_is_applied_at_its_effective_version_and_position(
        self,
    ) -> None:
        # The second write's gateway clock is behind: it is lifted just above the first.
        log = log_of(FakeTableStore(), Applier.WRITER)
        await log.assigned({P0})
        first, behind = upsert("c1", 9 << 22), upsert("c1", 5 << 22, MOVED_TO_REGION_2)
        result = await log.route(batch(first, behind, first=7))
        assert [(e.command.version, e.command.position) for e in result.envelopes] == [
            (first.version, 7),
            (lifted(first.version, behind.version), 8),
        ]
        assert [e.command.command_id for e in result.envelopes] == [
            first.command_id,
            behind.command_id,
        ]

    async def test_a_partition_not_assigned_routes_nothing(self) -> None:
        log = log_of(FakeTableStore())
        await log.assigned({P0})
        create = upsert("c1", 1)
        assert routed(await log.route(batch(create, tp=P1)), create) == []

    async def test_a_table_that_could_not_be_loaded_fails_the_batch_that_needs_it(self) -> None:
        store = FakeTableStore()

        async def unreachable(partitions: object, into: object) -> object:
            raise KafkaTimeoutError()

        store.load = unreachable  # type: ignore[assignment,method-assign]
        log = log_of(store)
        with pytest.raises(KafkaTimeoutError):
            await log.assigned({P0})
        assert store.writers[0].closed
        with pytest.raises(KafkaTimeoutError):
            await log.route(batch(upsert("c1", 1)))


class TestCommit:
    async def test_the_tables_changes_and_the_offset_are_committed_together(self) -> None:
        store = FakeTableStore()
        log = log_of(store)
        await log.assigned({P0})
        done = batch(upsert("c1", 1), upsert("c2", 2))
        await log.route(done)
        assert await commit(log, done)
        assert store.commits == [{P0: 2}]
        assert set(store.table(0)) == {b"c1", b"c2", b"#unknown"}

    async def test_a_new_owner_loads_the_committed_table_and_tombstones_the_region_left(
        self,
    ) -> None:
        store = FakeTableStore()
        await committed(store, upsert("c1", 1))
        second = log_of(store)
        await second.assigned({P0})
        move = upsert("c1", 2, MOVED_TO_REGION_2)
        select = await second.route(batch(move, first=1))
        assert routed(select, move) == [("region_1", Action.UPSERT), ("region_3", Action.TOMBSTONE)]

    async def test_a_fenced_owner_commits_nothing_and_forgets_its_changes(self) -> None:
        store = FakeTableStore()
        zombie = log_of(store)
        await zombie.assigned({P0})
        move = batch(upsert("c1", 1))
        await zombie.route(move)
        owner = log_of(store)
        await owner.assigned({P0})  # fences the zombie's writer
        assert not await commit(zombie, move)
        assert store.commits == []
        assert store.logs == {}
        again = upsert("c1", 1)
        assert routed(await zombie.route(batch(again)), again) == [("region_3", Action.UPSERT)]

    async def test_a_fenced_owner_commits_nothing_until_revoked_and_never_raises(self) -> None:
        # The rebalance that takes the partition away may come batches after the fence: a
        # fenced producer is never used again (aiokafka's fails on its fatal state, and the
        # consumer stopped on it).
        store = FakeTableStore()
        zombie = log_of(store)
        await zombie.assigned({P0})
        owner = log_of(store)
        await owner.assigned({P0})
        for first in range(3):
            later = batch(upsert("c1", 1 + first), first=first)
            await zombie.route(later)
            assert not await commit(zombie, later)
        assert store.commits == []
        await zombie.revoked({P0})
        await zombie.assigned({P0})  # back to it, with a writer of its own again
        mine = batch(upsert("c1", 5), first=3)
        await zombie.route(mine)
        assert await commit(zombie, mine)
        assert store.commits == [{P0: 4}]

    async def test_a_failed_commit_raises_and_routes_the_batch_again_from_the_committed_table(
        self,
    ) -> None:
        store = FakeTableStore()
        log = await committed(store, upsert("c1", 1))
        move = upsert("c1", 2, MOVED_TO_REGION_2)
        replay = batch(move, first=1)
        await log.route(replay)
        store.commit_errors.append(KafkaTimeoutError())
        with pytest.raises(KafkaTimeoutError):
            await commit(log, replay)
        assert store.commits == [{P0: 1}]
        assert routed(await log.route(replay), move) == [
            ("region_1", Action.UPSERT),
            ("region_3", Action.TOMBSTONE),
        ]

    async def test_only_the_partitions_still_owned_are_committed(self) -> None:
        store = FakeTableStore()
        log = log_of(store)
        await log.assigned({P0, P1})
        both = decode_records(
            {
                P0: [command_record(upsert("a", 1), 0, P0)],
                P1: [command_record(upsert("b", 1), 0, P1)],
            }
        )
        await log.route(both)
        assert await commit(log, both, P1)
        assert store.commits == [{P1: 1}]

    async def test_a_revoked_partition_closes_its_writer_and_is_not_committed(self) -> None:
        store = FakeTableStore()
        log = log_of(store)
        await log.assigned({P0})
        done = batch(upsert("c1", 1))
        await log.route(done)
        await log.revoked({P0})
        assert store.writers[0].closed
        assert not await commit(log, done)


class TestRebalance:
    async def test_a_partition_handed_back_reads_only_what_was_committed_since(self) -> None:
        store = FakeTableStore()
        log = await committed(store, upsert("c1", 1))
        await log.revoked({P0})
        # Meanwhile another owner moves the customer.
        other = log_of(store)
        await other.assigned({P0})
        moved = batch(upsert("c1", 2, MOVED_TO_REGION_2), first=1)
        await other.route(moved)
        await commit(other, moved)
        await log.assigned({P0})
        assert store.loads[-1] == {0: 1}  # the one transaction after the one it had committed
        again = upsert("c1", 3)
        assert routed(await log.route(batch(again, first=2)), again) == [
            ("region_3", Action.UPSERT),
            ("region_2", Action.TOMBSTONE),
        ]

    async def test_a_partition_never_owned_resumes_from_what_the_follower_read(self) -> None:
        store = FakeTableStore()
        await committed(store, upsert("c1", 1), upsert("c2", 1))
        standby = log_of(store)
        await standby.start()
        assert store.followed.is_set()
        await standby.assigned({P0})
        assert store.loads[-1] == {0: 1}  # nothing left to read: the follower read it all
        move = upsert("c1", 2, MOVED_TO_REGION_2)
        assert routed(await standby.route(batch(move, first=2)), move) == [
            ("region_1", Action.UPSERT),
            ("region_3", Action.TOMBSTONE),
        ]
        await standby.close()

    async def test_a_process_restarted_on_its_tables_reads_only_what_was_committed_since(
        self,
    ) -> None:
        store = FakeTableStore()
        local = local_tables()
        first = log_of(store, local=local)
        await first.assigned({P0})
        done = batch(upsert("c1", 1))
        await first.route(done)
        await commit(first, done)
        await first.close()
        restarted = log_of(store, local=local)
        await restarted.assigned({P0})
        assert store.loads[-1] == {0: 1}  # nothing to read: its own file had it all
        move = upsert("c1", 2, MOVED_TO_REGION_2)
        assert routed(await restarted.route(batch(move, first=1)), move) == [
            ("region_1", Action.UPSERT),
            ("region_3", Action.TOMBSTONE),
        ]

    async def test_tables_whose_mark_is_past_the_topics_end_are_read_again_whole(self) -> None:
        store = FakeTableStore()
        local = local_tables()
        await committed(store, upsert("c1", 1))  # another process
        log = log_of(store, local=local)
        await log.assigned({P0})
        done = batch(upsert("c2", 1), first=1)
        await log.route(done)
        await commit(log, done)
        await log.close()
        store.logs[0] = store.logs[0][:1]  # the topic made again, shorter than the mark
        again = log_of(store, local=local)
        await again.assigned({P0})
        assert store.loads[-2:] == [{0: 2}, {0: 0}]
        c2 = upsert("c2", 2, MOVED_TO_REGION_2)
        # c2 is unknown to the topic now: the file's copy of it was dropped.
        assert routed(await again.route(batch(c2, first=1)), c2) == [("region_1", Action.UPSERT)]

    async def test_a_table_that_never_committed_is_read_whole(self) -> None:
        store = FakeTableStore()
        local = local_tables()
        log = log_of(store, local=local)
        await log.assigned({P0})
        await log.route(batch(upsert("c1", 1)))
        await log.revoked({P0})
        await log.assigned({P0})
        assert store.loads[-1] == {0: 0}


class TestUnknown:
    async def test_a_table_with_the_whole_history_takes_unseen_customers_to_live_nowhere(
        self,
    ) -> None:
        store = FakeTableStore()
        log = log_of(store)
        await log.assigned({P0})
        delete = delete_command("c1", regions=REGIONS, version=1, issued_at_ms=0)
        done = batch(delete)
        assert routed(await log.route(done), delete) == []
        await commit(log, done)
        assert store.unknown(0) == UNKNOWN_ADAPTER.dump_json(())

    async def test_a_table_started_after_commands_were_lost_takes_them_anywhere(self) -> None:
        store = FakeTableStore(history={0: None})
        log = log_of(store)
        await log.assigned({P0})
        create = upsert("c1", 1)
        done = batch(create)
        assert routed(await log.route(done), create) == [
            ("region_3", Action.UPSERT),
            ("region_2", Action.TOMBSTONE),
        ]
        await commit(log, done)
        assert store.unknown(0) == UNKNOWN_ADAPTER.dump_json(REGIONS.names)
        later = log_of(store)
        await later.assigned({P0})
        other = upsert("c2", 2)
        assert len(routed(await later.route(batch(other, first=1)), other)) == 2

    async def test_placements_learnt_from_consumed_commands_survive_a_failed_first_batch(
        self,
    ) -> None:
        learnt = Placed(version=1, regions=("region_1", "region_3"), left=())
        store = FakeTableStore(history={0: {"c1": learnt, "c2": learnt}})
        log = log_of(store)
        await log.assigned({P0})
        move = upsert("c1", 2, MOVED_TO_REGION_2)
        failed = batch(move, first=5)
        await log.route(failed)
        log.discard()
        select = await log.route(failed)
        assert routed(select, move) == [("region_1", Action.UPSERT), ("region_3", Action.TOMBSTONE)]
        await commit(log, failed)
        assert set(store.table(0)) == {b"c1", b"c2", b"#unknown"}


class TestBounded:
    async def test_kafka_work_that_never_ends_fails_the_commit_in_time(self) -> None:
        released = asyncio.Event()
        ended = asyncio.Event()

        async def wedged() -> int:
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                await released.wait()  # cancelled, it waits on: as a dead sender's waiters
            ended.set()
            return 0

        with pytest.raises(KafkaTimeoutError, match="within 0 s"):
            await _bounded(wedged(), 0.05)
        assert not ended.is_set()  # not waited for
        released.set()
        await ended.wait()

    async def test_kafka_work_that_ends_gives_its_result(self) -> None:
        async def quick() -> int:
            return 7

        assert await _bounded(quick(), 5) == 7
