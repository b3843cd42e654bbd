"""What is parked for a region: read from the recovery group's committed offsets, oldest first."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, cast

from aiokafka import TopicPartition

from regionstore_shared.backlog import Offsets
from regionstore_shared.parked import ParkedBacklog, ParkedReader, parked_command
from regionstore_shared.settings import KafkaSettings
from shared.tests.fakes import delete_record, upsert

TOPIC = "pending.region_2"
P0, P1 = TopicPartition(TOPIC, 0), TopicPartition(TOPIC, 1)


@dataclass
class Parked:
    """A parking topic's record with what the reader looks at."""

    partition: int
    offset: int
    timestamp: int
    key: bytes
    value: bytes
    headers: list[tuple[str, bytes]] = field(default_factory=list)


def parked(tp: TopicPartition, offset: int, timestamp: int, customer: str = "") -> Parked:
    command = upsert(customer or f"c{tp.partition}-{offset}", version=offset + 1)
    return Parked(
        tp.partition,
        offset,
        timestamp,
        command.key.encode(),
        command.model_dump_json().encode(),
        [("regionstore-park-reason", b"unavailable")],
    )


class FakeProbe:
    """Where the recovery group resumes and the end, per partition (as if committed there)."""

    def __init__(self, positions: dict[TopicPartition, tuple[int, int]]) -> None:
        self.found = {tp: Offsets(0, end, resume) for tp, (resume, end) in positions.items()}
        self.asked: list[tuple[str, str]] = []

    async def offsets(self, topic: str, group: str) -> dict[TopicPartition, Offsets]:
        self.asked.append((topic, group))
        return self.found


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class FakeFetcher:
    """A consumer in no group: hands out at most ``per_fetch`` records of each partition from
    where it was sought; each fetch takes a second of ``clock``."""

    def __init__(self, records: list[Parked], clock: Clock, per_fetch: int = 2) -> None:
        self.records = records
        self.clock = clock
        self.per_fetch = per_fetch
        self.assigned: list[TopicPartition] = []
        self.at: dict[TopicPartition, int] = {}
        self.paused: set[TopicPartition] = set()
        self.fetches = 0

    def assign(self, tps: list[TopicPartition]) -> None:
        self.assigned = tps
        self.paused = set()

    def seek(self, tp: TopicPartition, offset: int) -> None:
        self.at[tp] = offset

    def pause(self, *tps: TopicPartition) -> None:
        self.paused.update(tps)

    def unsubscribe(self) -> None:
        self.assigned = []

    async def getmany(self, *tps: TopicPartition, timeout_ms: int) -> dict[TopicPartition, Any]:
        self.fetches += 1
        self.clock.now += 1
        batches = {}
        for tp in tps:
            assert tp in self.assigned
            if tp in self.paused:
                continue
            found = [
                r for r in self.records if r.partition == tp.partition and r.offset >= self.at[tp]
            ][: self.per_fetch]
            if found:
                self.at[tp] = found[-1].offset + 1
                batches[tp] = found
        return batches


def reader(probe: FakeProbe, fetcher: FakeFetcher, clock: Clock) -> ParkedReader:
    return ParkedReader(
        KafkaSettings(), probe=cast(Any, probe), consumer=cast(Any, fetcher), clock=clock
    )


class TestRead:
    async def test_nothing_past_the_committed_offsets_is_an_empty_backlog_and_no_fetch(
        self,
    ) -> None:
        clock = Clock()
        fetcher = FakeFetcher([parked(P0, 0, 1000)], clock)
        probe = FakeProbe({P0: (1, 1), P1: (0, 0)})
        backlog = await reader(probe, fetcher, clock).read("region_2", sample=5)
        assert backlog == ParkedBacklog("region_2", TOPIC, 0, None, [])
        assert probe.asked == [(TOPIC, "regionstore.recovery.region_2")]
        assert fetcher.fetches == 0

    async def test_counts_from_the_committed_offsets_and_samples_the_oldest_first(
        self,
    ) -> None:
        clock = Clock()
        records = [
            parked(P0, 0, 100),  # already drained: before the committed offset
            parked(P0, 1, 5000),
            parked(P0, 2, 5001),
            parked(P0, 3, 9000),
            parked(P1, 0, 4000),
            parked(P1, 1, 8000),
        ]
        probe = FakeProbe({P0: (1, 4), P1: (0, 2)})
        fetcher = FakeFetcher(records, clock, per_fetch=1)
        backlog = await reader(probe, fetcher, clock).read("region_2", sample=3)
        assert backlog.count == 5
        assert backlog.oldest_ms == 4000
        assert [(c.partition, c.offset) for c in backlog.sample] == [(1, 0), (0, 1), (0, 2)]
        assert fetcher.assigned == [], "the reader lets go of the partitions it read"

    async def test_an_age_alone_reads_one_record_per_partition(self) -> None:
        clock = Clock()
        records = [parked(P0, o, 1000 + o) for o in range(10)]
        probe = FakeProbe({P0: (3, 10)})
        fetcher = FakeFetcher(records, clock, per_fetch=10)
        backlog = await reader(probe, fetcher, clock).read("region_2", sample=0)
        assert (backlog.count, backlog.oldest_ms, backlog.sample) == (7, 1003, [])
        assert fetcher.fetches == 1

    async def test_what_was_read_by_the_deadline_is_answered(self) -> None:
        clock = Clock()
        # Partition 1's records never arrive (a broker that does not answer).
        probe = FakeProbe({P0: (0, 1), P1: (0, 1)})
        fetcher = FakeFetcher([parked(P0, 0, 7000)], clock)
        backlog = await reader(probe, fetcher, clock).read("region_2", sample=2, within_s=5)
        assert (backlog.count, backlog.oldest_ms) == (2, 7000)
        assert [c.offset for c in backlog.sample] == [0]
        assert fetcher.fetches == 5


class TestParkedCommand:
    def test_a_command_shows_its_customer_kind_and_park_reason(self) -> None:
        record = delete_record(4, P1)
        command = parked_command(
            cast(Any, Parked(1, 4, 123, record.key, record.value, [("x", b"y")]))
        )
        assert (command.customer_id, command.kind, command.reason) == ("c4", "delete", None)
        reason = parked_command(cast(Any, parked(P0, 0, 5, customer="a1"))).reason
        assert reason == "unavailable"

    def test_a_record_that_is_no_command_still_shows_its_key_and_time(self) -> None:
        command = parked_command(cast(Any, Parked(0, 9, 77, b"k1", b"\xff not json")))
        assert (command.customer_id, command.kind, command.parked_at_ms) == ("k1", None, 77)


def test_the_oldest_age_is_counted_from_when_it_was_parked() -> None:
    backlog = ParkedBacklog("region_2", TOPIC, 3, oldest_ms=10_000, sample=[])
    assert backlog.oldest_age_s(now_ms=12_500) == 2.5
    assert ParkedBacklog("region_2", TOPIC, 0, None, []).oldest_age_s(now_ms=12_500) == 0.0
