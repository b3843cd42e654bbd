"""The drainer: replays a region's parking topic into it, committing only what was applied."""

from __future__ import annotations

import asyncio
import functools
import logging
from typing import Any, cast

import pytest
from aiokafka import TopicPartition
from aiokafka.errors import KafkaConnectionError
from prometheus_client import REGISTRY

from regionstore_recovery import drainer
from regionstore_recovery.drainer import Probe, TargetsIn, drain
from regionstore_recovery.pacing import DrainPacer, PacingSettings
from regionstore_shared.pipeline import PartitionOwnership
from regionstore_shared.schemas import Action, Applier
from regionstore_shared.settings import KafkaSettings
from shared.tests.fakes import (
    FakeApplier,
    FakeProducer,
    Record,
    TopicConsumer,
    command_record,
    poison_record,
    tombstone,
    upsert,
)

REGION = "region_2"
PENDING = "pending.region_2"
TP_PENDING = TopicPartition(PENDING, 0)
# A readiness bound only: every wait ends as soon as the drain has done what is awaited.
BOUND_S = 5


def parked(count: int) -> list[Record]:
    """Commands parked for region_2, each also meant for region_3 (its replica)."""
    return [
        command_record(
            tombstone(f"c{i}", i + 1, [(REGION, Applier.WRITER), ("region_3", Applier.REPLICATOR)]),
            i,
            TP_PENDING,
        )
        for i in range(count)
    ]


class InstantPauses(asyncio.Event):
    """A stop whose wait ends at once: every pause between retries is skipped, not slept.

    The drain still logs the pause it would have taken; a set stop still stops it.
    """

    async def wait(self) -> bool:  # type: ignore[override]
        await asyncio.sleep(0)  # a yield, as any wait gives other tasks
        return True


class Harness:
    """drain() over a fake parking topic, a fake applier and a fake producer."""

    def __init__(
        self, monkeypatch: pytest.MonkeyPatch, records: list[Record], *, max_records: int = 2
    ) -> None:
        self.stop: asyncio.Event = asyncio.Event()
        self.log: list[str] = []
        self.consumer = TopicConsumer(
            records,
            on_idle=self._stop_once_all_committed,
            max_records=max_records,
            tp=TP_PENDING,
            log=self.log,
        )
        self.applier = FakeApplier()
        self.producer = FakeProducer()
        self.subscriptions: list[dict[str, Any]] = []
        monkeypatch.setattr(drainer, "kafka_consumer", self._kafka_consumer)

    def _stop_once_all_committed(self) -> None:
        # What the supervisor would do once the region goes down: the drain itself never
        # stops at the end of the topic, since more commands may be parked at any time.
        if self.consumer.committed == len(self.consumer.records):
            self.stop.set()

    def _kafka_consumer(self, settings: KafkaSettings, *topics: str, **options: Any) -> Any:
        self.subscriptions.append(
            {"topics": topics, "max_batch_records": settings.max_batch_records, **options}
        )
        return self.consumer

    async def drain(
        self,
        *,
        retry_min_s: float = 0.0,
        retry_max_s: float = 0.0,
        pacing: PacingSettings | None = None,
        probe: Probe | None = None,
    ) -> None:
        await drain(
            REGION,
            kafka=KafkaSettings(),
            applier=cast(Any, self.applier),
            producer=cast(Any, self.producer),
            stop=self.stop,
            retry_min_s=retry_min_s,
            retry_max_s=retry_max_s,
            pacing=pacing,
            probe=probe,
        )


def sample(name: str) -> float:
    return REGISTRY.get_sample_value(name, {"region": REGION}) or 0.0


class TestReplay:
    async def test_applies_the_parked_commands_batch_by_batch(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        harness = Harness(monkeypatch, parked(5))
        await harness.drain()
        assert harness.applier.applied == [["c0", "c1"], ["c2", "c3"], ["c4"]]
        assert harness.consumer.commits == [2, 4, 5]

    async def test_applies_only_the_region_own_targets_whatever_their_role(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        harness = Harness(monkeypatch, parked(3))
        await harness.drain()
        selected = [t for batch in harness.applier.selected for t in batch]
        assert len(selected) == 3
        assert {(t.region, t.role) for t in selected} == {(REGION, Applier.WRITER)}

    async def test_commits_each_batch_only_after_it_is_applied(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        harness = Harness(monkeypatch, parked(4))
        applier = harness.applier
        original = applier.apply

        async def apply(envelopes: Any, select: Any) -> None:
            await original(envelopes, select)
            harness.log.append("apply")

        applier.apply = apply  # type: ignore[method-assign]
        await harness.drain()
        assert harness.log == ["apply", "commit", "apply", "commit"]

    async def test_reads_the_region_pending_topic_in_its_recovery_group(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        harness = Harness(monkeypatch, parked(1))
        await harness.drain()
        (subscription,) = harness.subscriptions
        assert subscription["topics"] == (PENDING,)
        assert subscription["group_id"] == "regionstore.recovery.region_2"
        assert subscription["client_id"] == "recovery-region_2"
        assert isinstance(subscription["listener"], PartitionOwnership)
        assert harness.consumer.started
        assert harness.consumer.stopped

    async def test_counts_what_it_replayed_and_shows_itself_active_meanwhile(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        harness = Harness(monkeypatch, parked(3))
        before = sample("regionstore_drained_messages_total")
        active: list[float] = []
        harness.applier.during = lambda: active.append(sample("regionstore_drain_active"))
        await harness.drain()
        assert sample("regionstore_drained_messages_total") == before + 3
        assert active == [1.0]
        assert sample("regionstore_drain_active") == 0.0

    async def test_an_undecodable_parked_record_is_dead_lettered_and_passed(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        records = parked(2)
        records.insert(1, poison_record(1, TP_PENDING))
        records[2] = command_record(tombstone("c2", 3, [(REGION, Applier.WRITER)]), 2, TP_PENDING)
        harness = Harness(monkeypatch, records, max_records=3)
        await harness.drain()
        (message,) = harness.producer.sent
        assert message["topic"] == "customers.deadletter"
        assert dict(message["headers"])["regionstore-source-topic"] == PENDING.encode()
        assert harness.applier.applied == [["c0", "c2"]]
        assert harness.consumer.commits == [3]


class TestRegionDownAgain:
    async def test_the_failed_batch_is_not_committed_and_is_replayed_from_its_first_record(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        harness = Harness(monkeypatch, parked(4))
        harness.applier.failing = {2}
        await harness.drain()
        assert harness.applier.applied == [["c0", "c1"], ["c2", "c3"], ["c2", "c3"]]
        assert harness.consumer.commits == [2, 4]
        assert harness.consumer.seeks == [2]

    async def test_nothing_is_parked_again(self, monkeypatch: pytest.MonkeyPatch) -> None:
        # Recovery has no parker: a region still down keeps its commands where they are.
        harness = Harness(monkeypatch, parked(2))
        harness.applier.failing = {1, 2, 3}
        await harness.drain()
        assert harness.producer.queued == []
        assert harness.consumer.commits == [2]

    async def test_pauses_double_up_to_the_maximum_and_start_over_after_progress(
        self, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
    ) -> None:
        harness = Harness(monkeypatch, parked(4))
        harness.stop = InstantPauses()
        harness.applier.failing = {1, 2, 3, 4, 6}
        with caplog.at_level(logging.DEBUG, logger="regionstore_recovery.drainer"):
            await harness.drain(retry_min_s=1, retry_max_s=4)
        paused = [r for r in caplog.records if r.getMessage() == "drain paused"]
        assert [r.__dict__["retry_s"] for r in paused] == [1, 2, 4, 4, 1]
        # One warning per run of failures; the retries of a run are debug lines.
        assert [r.levelno for r in paused] == [
            logging.WARNING,
            *[logging.DEBUG] * 3,
            logging.WARNING,
        ]
        resumed = [r for r in caplog.records if r.getMessage() == "drain resumed"]
        assert [r.__dict__["pauses"] for r in resumed] == [4, 1]
        assert harness.consumer.commits == [2, 4]

    async def test_a_stop_during_a_pause_ends_the_drain_at_once(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        harness = Harness(monkeypatch, parked(2))
        harness.applier.failing = set(range(1, 100))
        tried = asyncio.Event()
        harness.applier.during = tried.set
        running = asyncio.create_task(harness.drain(retry_min_s=3600, retry_max_s=3600))
        await asyncio.wait_for(tried.wait(), BOUND_S)
        harness.stop.set()
        await asyncio.wait_for(running, BOUND_S)
        assert harness.applier.calls == 1
        assert harness.consumer.commits == []
        assert harness.consumer.stopped
        assert sample("regionstore_drain_active") == 0.0


def frozen_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    """Pacers whose clock stands still: no time passes between batches, so every wait is
    the schedule's alone, whatever the machine's speed."""
    monkeypatch.setattr(drainer, "DrainPacer", functools.partial(DrainPacer, clock=lambda: 100.0))


async def quick_probe() -> float:
    """A point read that the store always answers in 10 ms."""
    return 0.01


class TestPacing:
    SETTINGS = PacingSettings(initial_rate=100.0, min_rate=100.0, max_rate=100.0, batch_records=2)

    async def test_a_paced_drain_replays_everything_in_small_batches(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        harness = Harness(monkeypatch, parked(5), max_records=2)
        await harness.drain(pacing=self.SETTINGS, probe=quick_probe)
        assert harness.applier.applied == [["c0", "c1"], ["c2", "c3"], ["c4"]]
        assert harness.consumer.commits == [2, 4, 5]
        (subscription,) = harness.subscriptions
        assert subscription["max_batch_records"] == 2

    async def test_each_batch_waits_its_share_of_the_rate(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        waits: list[float] = []
        rates: list[float] = []

        async def paused(seconds: float, stop: asyncio.Event) -> None:
            waits.append(seconds)
            rates.append(sample("regionstore_drain_rate_limit"))

        monkeypatch.setattr(drainer, "_paused", paused)
        frozen_clock(monkeypatch)
        harness = Harness(monkeypatch, parked(5), max_records=2)
        await harness.drain(pacing=self.SETTINGS, probe=quick_probe)
        # 2, 2 and 1 commands at 100/s take 0.02, 0.02 and 0.01 s of the schedule. No time
        # passes here, so each batch waits until its slot ends: the schedule from the first.
        assert waits == [pytest.approx(t) for t in (0.02, 0.04, 0.05)]
        assert rates == [100.0] * 3
        assert sample("regionstore_drain_rate_limit") == 0.0

    async def test_a_stop_during_a_paced_wait_ends_the_drain_at_once(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        slow = PacingSettings(initial_rate=0.001, min_rate=0.001, batch_records=2)
        waiting = asyncio.Event()
        original = drainer._paused

        async def paused(seconds: float, stop: asyncio.Event) -> None:
            waiting.set()
            await original(seconds, stop)

        monkeypatch.setattr(drainer, "_paused", paused)
        harness = Harness(monkeypatch, parked(4), max_records=2)
        running = asyncio.create_task(harness.drain(pacing=slow, probe=quick_probe))
        await asyncio.wait_for(waiting.wait(), BOUND_S)
        harness.stop.set()
        await asyncio.wait_for(running, BOUND_S)
        # The first batch waits 2,000 s for its share; the stop ends the wait.
        assert harness.consumer.commits == [2]
        assert harness.consumer.stopped

    async def test_pacing_off_drains_in_the_consumer_batches_without_waiting(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        waits: list[float] = []

        async def paused(seconds: float, stop: asyncio.Event) -> None:
            waits.append(seconds)

        monkeypatch.setattr(drainer, "_paused", paused)
        harness = Harness(monkeypatch, parked(3))
        await harness.drain(
            pacing=PacingSettings(enabled=False, batch_records=1), probe=quick_probe
        )
        assert waits == []
        (subscription,) = harness.subscriptions
        assert subscription["max_batch_records"] == KafkaSettings().max_batch_records

    async def test_the_store_delay_during_each_batch_drives_the_rate(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        delays = iter([0.01, 0.01, 0.5, 0.5])
        during: list[int] = []

        async def probe() -> float:
            # Started with the batch: the applier has been called, the batch not committed.
            during.append(harness.applier.calls - len(harness.consumer.commits))
            return next(delays)

        async def paused(seconds: float, stop: asyncio.Event) -> None:
            rates.append(sample("regionstore_drain_rate_limit"))

        rates: list[float] = []
        monkeypatch.setattr(drainer, "_paused", paused)
        frozen_clock(monkeypatch)
        harness = Harness(monkeypatch, parked(8), max_records=2)
        settings = PacingSettings(
            initial_rate=1000.0,
            min_rate=100.0,
            target_delay_s=0.1,
            filter_samples=1,
            batch_records=2,
        )
        await harness.drain(pacing=settings, probe=probe)
        assert during == [1, 1, 1, 1]
        # Within the target twice (no time passes, so no climb), then a delay of 0.49 s
        # over the base: halved twice.
        assert rates == [1000.0, 1000.0, 500.0, 250.0]

    async def test_a_failed_batch_cancels_its_point_read(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        cancelled = []
        calls = 0

        async def hanging_first() -> float:
            # The read made with the batch that fails never answers; the retry's does.
            nonlocal calls
            calls += 1
            if calls > 1:
                return 0.01
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                cancelled.append(True)
                raise
            return 0.0

        harness = Harness(monkeypatch, parked(2), max_records=2)
        harness.applier.failing = {1}
        await harness.drain(pacing=self.SETTINGS, probe=hanging_first)
        assert harness.consumer.commits == [2]
        assert cancelled == [True]


class TestOtherFailures:
    async def test_a_kafka_failure_ends_the_drain_with_the_error_and_its_consumer_stopped(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        harness = Harness(monkeypatch, parked(2))
        harness.consumer.fail_polls = [KafkaConnectionError("broker gone")]
        with pytest.raises(KafkaConnectionError):
            await harness.drain()
        assert harness.consumer.stopped
        assert harness.consumer.commits == []
        assert sample("regionstore_drain_active") == 0.0

    async def test_a_consumer_that_fails_to_start_is_closed(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        # aiokafka's start can fail after it bootstrapped (waiting for the topic's metadata),
        # with connections and a metadata task running: only stop() ends them.
        harness = Harness(monkeypatch, parked(2))
        harness.consumer.fail_start = KafkaConnectionError("Unable to bootstrap")
        with pytest.raises(KafkaConnectionError):
            await harness.drain()
        assert harness.consumer.stopped
        assert harness.applier.calls == 0
        assert sample("regionstore_drain_active") == 0.0

    async def test_an_error_other_than_region_down_is_not_retried_here(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        harness = Harness(monkeypatch, parked(2))
        harness.applier.failing = {1}
        harness.applier.error = RuntimeError("a bug")
        with pytest.raises(RuntimeError, match="a bug"):
            await harness.drain()
        assert harness.applier.calls == 1
        assert harness.consumer.seeks == [0]


class TestTargetsIn:
    def test_selects_the_region_targets_whatever_their_role(self) -> None:
        command = tombstone(
            "c1",
            1,
            [
                ("region_1", Applier.WRITER),
                (REGION, Applier.REPLICATOR),
                ("region_3", Applier.REPLICATOR),
            ],
        )
        assert [(t.region, t.role) for t in TargetsIn(REGION)(command)] == [
            (REGION, Applier.REPLICATOR)
        ]

    def test_an_upsert_parked_for_its_placement_upserts_it(self) -> None:
        # 44409 is homed in region_2, whose replica is region_1.
        (target,) = TargetsIn(REGION)(upsert("c1", 1, zip_prefix=44409))
        assert (target.region, target.action) == (REGION, Action.UPSERT)

    def test_a_command_naming_no_target_in_the_region_tombstones_it(self) -> None:
        # Parked there, it was routed there: the region was added to the map after the
        # command was made, and the customer had left it.
        command = tombstone("c1", 1, [("region_1", Applier.WRITER)])
        (target,) = TargetsIn(REGION)(command)
        assert (target.region, target.action) == (REGION, Action.TOMBSTONE)
