"""Recovery's loop: drains follow the statuses, on every status event and every resync, and
every round deletes what the drains took from the parking topics."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiokafka import TopicPartition
from aiokafka.admin import RecordsToDelete
from aiokafka.errors import KafkaConnectionError
from prometheus_client import REGISTRY

from regionstore_recovery import main
from regionstore_recovery.settings import RecoverySettings
from regionstore_shared.backlog import Offsets
from regionstore_shared.parked import ParkedBacklog
from regionstore_shared.runtime import ServiceState
from regionstore_shared.settings import CommonSettings, KafkaSettings
from regionstore_shared.status import NodeStatus, RegionStatus
from regionstore_testing.keys import MemoryKeyring
from shared.tests.fakes import FakeProducer, FakeRedis

AVAILABLE, UNAVAILABLE = NodeStatus.AVAILABLE, NodeStatus.UNAVAILABLE
# A readiness bound only: every wait ends as soon as the loop has gone round.
BOUND_S = 5


class ScriptedChanges:
    """StatusChanges as the loop sees it: each wait ends when the test says how.

    ``event()`` ends the current wait with a change, ``interval()`` as the resync interval
    running out without one. Every wait the loop starts is announced on ``rounds``.
    """

    def __init__(self, events: list[str]) -> None:
        self.events = events
        self.generation = 0
        self.waits: list[tuple[int, float]] = []
        self.rounds: asyncio.Queue[int] = asyncio.Queue()
        self._next: asyncio.Queue[bool] = asyncio.Queue()

    def start(self) -> None:
        self.events.append("changes started")

    async def stop(self) -> None:
        self.events.append("changes stopped")

    async def wait(self, seen: int, within_s: float) -> int:
        self.waits.append((seen, within_s))
        self.rounds.put_nowait(len(self.waits))
        if await self._next.get():
            self.generation += 1
        return self.generation

    def event(self) -> None:
        self._next.put_nowait(True)

    def interval(self) -> None:
        self._next.put_nowait(False)


Positions = dict[TopicPartition, Offsets]


def backlog_of(count: int, region: str = "region_1") -> Positions:
    """One partition holding ``count`` records, none consumed."""
    return {TopicPartition(f"pending.{region}", 0): Offsets(start=0, end=count, committed=None)}


class FakeBacklog:
    def __init__(self, events: list[str]) -> None:
        self.events = events
        self.positions: dict[str, Positions | None] = {
            region: backlog_of(0, region) for region in ("region_1", "region_2", "region_3")
        }

    async def start(self) -> None:
        self.events.append("backlog started")

    async def close(self) -> None:
        self.events.append("backlog closed")

    async def pending(self, regions: Any) -> dict[str, Positions | None]:
        return {region: self.positions[region] for region in regions}


class FakeAdmin:
    """The trimmer's admin client: records every DeleteRecords asked for."""

    def __init__(self, events: list[str]) -> None:
        self.events = events
        self.deleted: list[dict[TopicPartition, int]] = []
        self.fail_next: Exception | None = None

    async def start(self) -> None:
        self.events.append("admin started")

    async def close(self) -> None:
        self.events.append("admin closed")

    async def delete_records(
        self, records: dict[TopicPartition, RecordsToDelete], timeout_ms: int
    ) -> dict[TopicPartition, int]:
        if self.fail_next is not None:
            error, self.fail_next = self.fail_next, None
            raise error
        below = {tp: r.before_offset for tp, r in records.items()}
        self.deleted.append(below)
        return below


class FakeParked:
    """The parked reader: the oldest parked command of a region parked at ``oldest_ms``."""

    def __init__(self, events: list[str]) -> None:
        self.events = events
        self.oldest_ms: dict[str, int] = {}
        self.asked: list[str] = []

    async def start(self) -> None:
        self.events.append("parked started")

    async def close(self) -> None:
        self.events.append("parked closed")

    async def read(self, region: str, *, sample: int) -> ParkedBacklog:
        self.asked.append(region)
        oldest = self.oldest_ms.get(region)
        return ParkedBacklog(region, f"pending.{region}", 1, oldest, [])


class Drain:
    def __init__(self, region: str, stop: asyncio.Event, options: dict[str, Any]) -> None:
        self.region = region
        self.stop = stop
        self.options = options


class Rig:
    """recover() with every client, the status listener, the backlog and the drain faked."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.events: list[str] = []
        self.redis = FakeRedis()
        self.producer = FakeProducer()
        self.changes = ScriptedChanges(self.events)
        self.backlog = FakeBacklog(self.events)
        self.admin = FakeAdmin(self.events)
        self.parked = FakeParked(self.events)
        self.state = ServiceState()
        self.drains: list[Drain] = []
        self.fail_next_drain: Exception | None = None
        self.topics_ensured = 0
        monkeypatch.setattr(main, "ensure_topics", self._ensure_topics)
        monkeypatch.setattr(main, "open_core", self._open_core)
        monkeypatch.setattr(main, "StatusChanges", lambda *_: self.changes)
        monkeypatch.setattr(main, "BacklogProbe", lambda *_: self.backlog)
        monkeypatch.setattr(main, "kafka_admin", lambda *_: self.admin)
        monkeypatch.setattr(main, "parked_reader", lambda *_: self.parked)
        monkeypatch.setattr(main, "drain", self._drain)
        monkeypatch.setattr(main, "open_keyring", self._open_keyring)
        # The detector's loop has tests of its own (test_recovery_detection).
        monkeypatch.setattr(main, "_start_detector", self._start_detector)
        # So has the repair's (test_recovery_repair).
        monkeypatch.setattr(main, "start_repair", self._start_repair)

    async def _start_detector(self, *_: Any) -> None:
        self.events.append("detector started")

    def _start_repair(self, *_: Any) -> None:
        self.events.append("repair started")

    async def _open_keyring(self, *_: Any) -> MemoryKeyring:
        return MemoryKeyring()

    async def _ensure_topics(self, settings: CommonSettings) -> None:
        self.topics_ensured += 1

    async def _open_core(
        self, stack: contextlib.AsyncExitStack, settings: CommonSettings, name: str
    ) -> tuple[FakeRedis, dict[str, Any], FakeProducer]:
        # A store per region: the drains (faked) are given a point read of theirs.
        return self.redis, dict.fromkeys(settings.region_map.names), self.producer

    async def _drain(self, region: str, *, stop: asyncio.Event, **options: Any) -> None:
        self.drains.append(Drain(region, stop, options))
        try:
            if self.fail_next_drain is not None:
                error, self.fail_next_drain = self.fail_next_drain, None
                raise error
            await stop.wait()
        finally:
            self.events.append(f"drain of {region} ended")

    def live(self) -> list[str]:
        """The regions whose latest drain has not been asked to stop."""
        latest = {drain.region: drain for drain in self.drains}
        return sorted(region for region, drain in latest.items() if not drain.stop.is_set())

    async def round(self) -> None:
        """Wait until the loop has reconciled and waits for the next change."""
        await asyncio.wait_for(self.changes.rounds.get(), BOUND_S)
        for _ in range(5):
            await asyncio.sleep(0)  # a yield: the drains it started run their first step


@pytest.fixture
async def rig(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Rig]:
    rig = Rig(monkeypatch)
    yield rig
    rig.state.stop.set()


@contextlib.asynccontextmanager
async def recovering(rig: Rig, settings: RecoverySettings) -> AsyncIterator[asyncio.Task[None]]:
    task = asyncio.create_task(main.recover(settings, rig.state))
    try:
        yield task
    finally:
        rig.state.stop.set()
        await asyncio.wait_for(task, BOUND_S)


def pending(region: str) -> float | None:
    return REGISTRY.get_sample_value("regionstore_pending_backlog_messages", {"region": region})


def held(region: str) -> float | None:
    return REGISTRY.get_sample_value("regionstore_pending_held_messages", {"region": region})


def trimmed(region: str) -> float:
    sample = REGISTRY.get_sample_value(
        "regionstore_pending_trimmed_messages_total", {"region": region}
    )
    return sample or 0.0


def age(region: str) -> float | None:
    return REGISTRY.get_sample_value("regionstore_pending_oldest_age_seconds", {"region": region})


def status_gauge(region: str, status: NodeStatus | RegionStatus) -> float | None:
    return REGISTRY.get_sample_value(
        "regionstore_region_status", {"region": region, "status": status.value}
    )


class TestStart:
    async def test_drains_every_available_region_and_is_ready(self, rig: Rig) -> None:
        rig.redis.mark("region_2", UNAVAILABLE)
        async with recovering(rig, RecoverySettings()):
            await rig.round()
            assert rig.live() == ["region_1", "region_3"]
            assert rig.state.ready
            assert rig.state.details["draining"] == ["region_1", "region_3"]
        assert rig.topics_ensured == 1

    async def test_each_drain_gets_the_settings_retry_pauses_and_kafka(self, rig: Rig) -> None:
        settings = RecoverySettings(retry_min_s=0.25, retry_max_s=8)
        async with recovering(rig, settings):
            await rig.round()
            options = rig.drains[0].options
        assert options["retry_min_s"] == 0.25
        assert options["retry_max_s"] == 8
        assert options["kafka"] == settings.kafka
        assert options["producer"] is rig.producer
        assert options["outages"] is rig.state.outages

    async def test_redis_unreadable_at_start_drains_nothing_and_is_not_ready(
        self, rig: Rig
    ) -> None:
        rig.redis.down = True
        async with recovering(rig, RecoverySettings()):
            await rig.round()
            assert rig.drains == []
            assert not rig.state.ready
            assert rig.state.outages.is_down("redis")


class TestStatusChanges:
    async def test_an_event_stops_the_region_that_went_down_and_drains_the_one_back(
        self, rig: Rig
    ) -> None:
        rig.redis.mark("region_2", UNAVAILABLE)
        async with recovering(rig, RecoverySettings()):
            await rig.round()
            rig.redis.mark("region_1", UNAVAILABLE)
            rig.redis.mark("region_2", AVAILABLE)
            rig.changes.event()
            await rig.round()
            assert rig.live() == ["region_2", "region_3"]
            # Read in the same round: region_1's drain was still finishing its batch then.
            assert rig.state.details["draining"] == ["region_1", "region_2", "region_3"]
            rig.changes.interval()
            await rig.round()
            assert rig.state.details["draining"] == ["region_2", "region_3"]

    async def test_the_resync_catches_a_change_no_event_announced(self, rig: Rig) -> None:
        rig.redis.mark("region_3", UNAVAILABLE)
        settings = RecoverySettings(resync_interval_s=7)
        async with recovering(rig, settings):
            await rig.round()
            rig.redis.mark("region_3", AVAILABLE)  # the keyspace event was lost
            rig.changes.interval()
            await rig.round()
            assert rig.live() == ["region_1", "region_2", "region_3"]
        assert {within for _, within in rig.changes.waits} == {7}

    async def test_each_wait_starts_from_the_change_last_seen(self, rig: Rig) -> None:
        async with recovering(rig, RecoverySettings()):
            await rig.round()
            rig.changes.event()
            await rig.round()
            rig.changes.interval()
            await rig.round()
        assert [seen for seen, _ in rig.changes.waits] == [-1, 1, 1]

    async def test_redis_unreadable_leaves_the_drains_as_they_are(self, rig: Rig) -> None:
        async with recovering(rig, RecoverySettings()):
            await rig.round()
            rig.redis.down = True
            rig.changes.interval()
            await rig.round()
            assert rig.live() == ["region_1", "region_2", "region_3"]
            assert len(rig.drains) == 3
            assert rig.state.outages.is_down("redis")
            rig.redis.down = False
            rig.changes.interval()
            await rig.round()
            assert not rig.state.outages.is_down("redis")

    async def test_a_failed_drain_is_started_again_at_the_next_round(self, rig: Rig) -> None:
        rig.redis.mark("region_2", UNAVAILABLE)
        rig.redis.mark("region_3", UNAVAILABLE)
        rig.fail_next_drain = RuntimeError("group join failed")
        async with recovering(rig, RecoverySettings()):
            await rig.round()
            assert rig.state.details["draining"] == ["region_1"]  # still running when read
            rig.changes.interval()
            await rig.round()
            assert [d.region for d in rig.drains] == ["region_1", "region_1"]
            assert rig.live() == ["region_1"]


class TestBacklog:
    async def test_every_round_samples_the_pending_backlog_into_the_gauge(self, rig: Rig) -> None:
        rig.backlog.positions |= {"region_1": backlog_of(12), "region_3": backlog_of(5)}
        async with recovering(rig, RecoverySettings()):
            await rig.round()
            assert (pending("region_1"), pending("region_3")) == (12, 5)
            rig.backlog.positions["region_1"] = backlog_of(2)
            rig.changes.interval()
            await rig.round()
            assert pending("region_1") == 2

    async def test_an_unknown_count_keeps_the_last_one_and_kafka_is_not_reported_back(
        self, rig: Rig
    ) -> None:
        rig.state.outages.failed("kafka", "Unable to bootstrap")
        rig.backlog.positions["region_1"] = backlog_of(4)
        async with recovering(rig, RecoverySettings()):
            await rig.round()
            assert not rig.state.outages.is_down("kafka")
            rig.state.outages.failed("kafka", "Unable to bootstrap")
            rig.backlog.positions["region_1"] = None
            rig.changes.interval()
            await rig.round()
            assert pending("region_1") == 4
            assert rig.state.outages.is_down("kafka")

    async def test_the_oldest_parked_command_gives_the_age_and_no_backlog_is_age_0(
        self, rig: Rig, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setattr(main.time, "time", lambda: 1_000_000.0)
        rig.backlog.positions["region_1"] = backlog_of(12)
        rig.parked.oldest_ms = {"region_1": 1_000_000_000 - 90_500}
        async with recovering(rig, RecoverySettings()):
            await rig.round()
            assert (age("region_1"), age("region_2")) == (90.5, 0)
            # Only a region with a backlog is read.
            assert rig.parked.asked == ["region_1"]
            rig.backlog.positions["region_1"] = backlog_of(0)
            rig.changes.interval()
            await rig.round()
            assert age("region_1") == 0


class TestGauges:
    async def test_each_region_s_status_is_one_series_per_status(self, rig: Rig) -> None:
        rig.redis.mark("region_2", UNAVAILABLE)
        async with recovering(rig, RecoverySettings()):
            await rig.round()
            assert status_gauge("region_2", UNAVAILABLE) == 1
            assert status_gauge("region_2", AVAILABLE) == 0
            assert status_gauge("region_1", AVAILABLE) == 1
            rig.redis.mark("region_2", AVAILABLE)
            rig.changes.event()
            await rig.round()
            assert status_gauge("region_2", UNAVAILABLE) == 0
            assert status_gauge("region_2", AVAILABLE) == 1

    async def test_a_region_detected_down_is_reported_down_and_gets_no_drain(
        self, rig: Rig
    ) -> None:
        rig.redis.mark("region_3", RegionStatus.DOWN)
        async with recovering(rig, RecoverySettings()):
            await rig.round()
            assert status_gauge("region_3", RegionStatus.DOWN) == 1
            assert status_gauge("region_3", UNAVAILABLE) == 0
            assert status_gauge("region_3", AVAILABLE) == 0
            assert status_gauge("region_1", RegionStatus.DOWN) == 0
            assert "region_3" not in [d.region for d in rig.drains]

    async def test_every_region_has_a_drain_gauge_from_the_start(self, rig: Rig) -> None:
        rig.redis.mark("region_3", UNAVAILABLE)
        async with recovering(rig, RecoverySettings()):
            await rig.round()
            drain_active = {
                region: REGISTRY.get_sample_value("regionstore_drain_active", {"region": region})
                for region in ("region_1", "region_2", "region_3")
            }
        # The drains are faked here, so none reports itself running: every region shows 0,
        # which an alert can tell from a region recovery never looked at.
        assert drain_active == {"region_1": 0, "region_2": 0, "region_3": 0}


class TestTrim:
    async def test_every_round_deletes_below_each_commit_what_the_drain_took(
        self, rig: Rig
    ) -> None:
        p0, p1, p2 = (TopicPartition("pending.region_2", p) for p in range(3))
        rig.backlog.positions["region_2"] = {
            p0: Offsets(start=0, end=8, committed=5),
            p1: Offsets(start=3, end=3, committed=3),  # trimmed already
            p2: Offsets(start=0, end=4, committed=None),  # never drained
        }
        before = trimmed("region_2")
        async with recovering(rig, RecoverySettings()):
            await rig.round()
            assert rig.admin.deleted == [{p0: 5}]
            assert trimmed("region_2") - before == 5
            assert held("region_2") == 3 + 0 + 4
            assert pending("region_2") == 3 + 0 + 4
            rig.backlog.positions["region_2"] = {
                p0: Offsets(start=5, end=8, committed=8),
                p1: Offsets(start=3, end=3, committed=3),
                p2: Offsets(start=0, end=4, committed=None),
            }
            rig.changes.interval()
            await rig.round()
            assert rig.admin.deleted == [{p0: 5}, {p0: 8}]
            assert held("region_2") == 0 + 0 + 4

    async def test_a_region_kafka_did_not_answer_for_is_not_trimmed(self, rig: Rig) -> None:
        rig.backlog.positions["region_1"] = None
        async with recovering(rig, RecoverySettings()):
            await rig.round()
        assert rig.admin.deleted == []

    async def test_a_failed_trim_is_logged_and_tried_again_next_round(
        self, rig: Rig, caplog: pytest.LogCaptureFixture
    ) -> None:
        tp = TopicPartition("pending.region_3", 0)
        rig.backlog.positions["region_3"] = {tp: Offsets(start=0, end=9, committed=9)}
        rig.admin.fail_next = KafkaConnectionError("Unable to bootstrap")
        async with recovering(rig, RecoverySettings()):
            await rig.round()
            assert rig.admin.deleted == []
            assert held("region_3") == 9
            assert "drained commands not deleted" in caplog.text
            rig.changes.interval()
            await rig.round()
            assert rig.admin.deleted == [{tp: 9}]
            assert held("region_3") == 0


async def test_the_dead_letter_counters_of_each_pending_topic_exist_before_any(
    rig: Rig,
) -> None:
    # Their own prefix: no other test can have made these series.
    settings = RecoverySettings(kafka=KafkaSettings(pending_topic_prefix="expecting."))
    async with recovering(rig, settings):
        await rig.round()
    samples = {
        (topic, region): REGISTRY.get_sample_value(
            "regionstore_commands_deadlettered_total", {"source_topic": topic, "region": region}
        )
        for topic, region in [("expecting.region_2", "region_2"), ("expecting.region_2", "")]
    }
    assert samples == dict.fromkeys(samples, 0.0)


class TestStop:
    async def test_stops_the_loop_then_closes_in_reverse_order(self, rig: Rig) -> None:
        async with recovering(rig, RecoverySettings()) as task:
            await rig.round()
            rig.state.stop.set()
            await asyncio.wait_for(task, BOUND_S)
        closing = rig.events[rig.events.index("parked closed") :]
        assert closing[:4] == ["parked closed", "admin closed", "backlog closed", "changes stopped"]
        assert sorted(closing[4:]) == [
            f"drain of {r} ended" for r in ("region_1", "region_2", "region_3")
        ]
        assert all(drain.stop.is_set() for drain in rig.drains)
