"""Region statuses survive a Redis outage: the last ones read, one log line per outage."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any, cast

import pytest
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import OutOfMemoryError
from redis.exceptions import TimeoutError as RedisTimeoutError

from regionstore_shared.logs import Outages
from regionstore_shared.settings import RedisSettings
from regionstore_shared.status import (
    NodeStatus,
    RegionStatus,
    SetBy,
    StatusBoard,
    StatusRecord,
    StatusStoreUnavailableError,
)
from shared.tests.fakes import FakeRedis

REGIONS = ("region_1", "region_2", "region_3")
SETTINGS = RedisSettings()
AVAILABLE, UNAVAILABLE = NodeStatus.AVAILABLE, NodeStatus.UNAVAILABLE


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@pytest.fixture
def lines() -> Iterator[Lines]:
    logger = logging.getLogger("test.status")
    handler = Lines()
    logger.addHandler(handler)
    logger.propagate = False
    yield handler
    logger.removeHandler(handler)


@pytest.fixture
def redis() -> FakeRedis:
    return FakeRedis()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def board(redis: FakeRedis, clock: FakeClock) -> StatusBoard:
    outages = Outages(clock=clock, logger=logging.getLogger("test.status"))
    return StatusBoard(cast(Any, redis), SETTINGS, REGIONS, outages=outages, clock=clock)


class TestAll:
    async def test_reads_every_region_in_one_round_trip(
        self, board: StatusBoard, redis: FakeRedis
    ) -> None:
        redis.mark("region_2", UNAVAILABLE)
        statuses = await board.all()
        assert statuses == {"region_1": AVAILABLE, "region_2": UNAVAILABLE, "region_3": AVAILABLE}
        assert redis.calls == 1
        assert board.reachable

    async def test_redis_down_answers_the_last_statuses_read(
        self, board: StatusBoard, redis: FakeRedis
    ) -> None:
        redis.mark("region_2", UNAVAILABLE)
        read = await board.all()
        redis.down = True
        assert await board.all() == read
        assert not board.reachable

    async def test_redis_down_before_any_read_means_every_region_available(
        self, board: StatusBoard, redis: FakeRedis
    ) -> None:
        redis.down = True
        assert await board.all() == dict.fromkeys(REGIONS, AVAILABLE)

    async def test_an_outage_logs_once_however_many_reads_and_once_when_back(
        self, board: StatusBoard, redis: FakeRedis, clock: FakeClock, lines: Lines
    ) -> None:
        await board.all()
        redis.down = True
        for _ in range(50):
            clock.now += 0.5  # past the retry interval: every call tries Redis
            await board.all()
        assert lines.messages == ["redis down"]
        redis.down = False
        clock.now += 1
        await board.all()
        await board.all()
        assert lines.messages == ["redis down", "redis back"]
        assert board.reachable

    async def test_after_a_failure_redis_is_tried_again_only_after_the_interval(
        self, board: StatusBoard, redis: FakeRedis, clock: FakeClock
    ) -> None:
        redis.down = True
        await board.all()
        for _ in range(10):
            await board.all()
        assert redis.calls == 1
        clock.now += 1.0
        redis.down = False
        redis.mark("region_3", UNAVAILABLE)
        assert (await board.all())["region_3"] is UNAVAILABLE
        assert redis.calls == 2

    async def test_statuses_changed_during_the_outage_are_read_when_redis_is_back(
        self, board: StatusBoard, redis: FakeRedis, clock: FakeClock
    ) -> None:
        await board.all()
        redis.down = True
        await board.all()
        redis.mark("region_1", UNAVAILABLE)
        redis.down = False
        clock.now += 1.0
        assert (await board.all())["region_1"] is UNAVAILABLE


class TestRead:
    async def test_raises_when_redis_is_down(self, board: StatusBoard, redis: FakeRedis) -> None:
        redis.down = True
        with pytest.raises(RedisConnectionError):
            await board.read()

    async def test_ignores_the_retry_interval(
        self, board: StatusBoard, redis: FakeRedis, clock: FakeClock
    ) -> None:
        redis.down = True
        await board.all()
        redis.down = False
        redis.mark("region_2", UNAVAILABLE)
        assert (await board.read())["region_2"] is UNAVAILABLE
        # ... and ends the interval: the next all() reads Redis again.
        redis.mark("region_2", AVAILABLE)
        assert (await board.all())["region_2"] is AVAILABLE


class TestSet:
    async def test_stores_the_status_and_that_an_operator_set_it(
        self, board: StatusBoard, redis: FakeRedis
    ) -> None:
        await board.set("region_1", UNAVAILABLE, key_id="k1")
        assert redis.values == {SETTINGS.status_key("region_1"): "unavailable"}
        meta = redis.hashes[board.meta_key("region_1")]
        assert (meta["by"], meta["key_id"], meta["revision"]) == ("operator", "k1", 1)
        assert redis.calls == 1

    async def test_every_change_bumps_the_revision(
        self, board: StatusBoard, redis: FakeRedis
    ) -> None:
        await board.set("region_1", UNAVAILABLE)
        await board.set("region_1", AVAILABLE)
        assert (await board.read_records())["region_1"].revision == 2

    async def test_a_refused_connection_certainly_changed_nothing(
        self, board: StatusBoard, redis: FakeRedis
    ) -> None:
        redis.down = True
        with pytest.raises(StatusStoreUnavailableError) as caught:
            await board.set("region_1", UNAVAILABLE)
        assert caught.value.region == "region_1"
        assert caught.value.certainly_unchanged
        assert redis.values == {}
        assert redis.hashes == {}

    async def test_an_error_reply_is_a_refusal_that_changed_nothing(
        self, board: StatusBoard, redis: FakeRedis
    ) -> None:
        redis.down = True
        redis.error = OutOfMemoryError("command not allowed when used memory > 'maxmemory'.")
        with pytest.raises(StatusStoreUnavailableError) as caught:
            await board.set("region_1", UNAVAILABLE)
        assert caught.value.refused
        assert caught.value.certainly_unchanged
        assert redis.values == {}

    async def test_a_timeout_may_have_changed_it(
        self, board: StatusBoard, redis: FakeRedis
    ) -> None:
        redis.down = True
        redis.error = RedisTimeoutError("Timeout reading from 127.0.0.1:6379")
        with pytest.raises(StatusStoreUnavailableError) as caught:
            await board.set("region_1", UNAVAILABLE)
        assert not caught.value.certainly_unchanged

    async def test_a_stored_status_is_what_an_outage_answers_next(
        self, board: StatusBoard, redis: FakeRedis
    ) -> None:
        await board.set("region_3", UNAVAILABLE)
        redis.down = True
        assert (await board.all())["region_3"] is UNAVAILABLE


class TestParse:
    @pytest.mark.parametrize(
        ("stored", "status", "traffic"),
        [
            (None, RegionStatus.AVAILABLE, AVAILABLE),
            ("available", RegionStatus.AVAILABLE, AVAILABLE),
            (" Unavailable ", RegionStatus.UNAVAILABLE, UNAVAILABLE),
            ("down", RegionStatus.DOWN, UNAVAILABLE),
            ("something else", RegionStatus.AVAILABLE, AVAILABLE),
        ],
    )
    def test_a_detected_down_takes_no_traffic_like_unavailable(
        self, stored: str | None, status: RegionStatus, traffic: NodeStatus
    ) -> None:
        assert RegionStatus.parse(stored) is status
        assert NodeStatus.parse(stored) is traffic

    def test_a_record_says_who_set_it_and_since_when(self) -> None:
        record = StatusRecord.parse(
            "down",
            {
                "by": "detector",
                "since_ms": "1700000000000",
                "reason": "3 failed",
                "revision": "4",
            },
        )
        assert record.status is RegionStatus.DOWN
        assert record.set_by is SetBy.DETECTOR
        assert record.since == datetime.fromtimestamp(1_700_000_000, UTC)
        assert (record.reason, record.revision, record.key_id) == ("3 failed", 4, None)

    def test_a_status_nobody_set_has_no_setter(self) -> None:
        assert StatusRecord.parse(None, {}) == StatusRecord(RegionStatus.AVAILABLE)


class TestRecords:
    async def test_a_down_region_reads_as_unavailable_to_the_consumers(
        self, board: StatusBoard, redis: FakeRedis
    ) -> None:
        redis.values[SETTINGS.status_key("region_2")] = "down"
        assert (await board.all())["region_2"] is UNAVAILABLE
        assert (await board.records())["region_2"].status is RegionStatus.DOWN

    async def test_redis_down_answers_the_last_records_read(
        self, board: StatusBoard, redis: FakeRedis
    ) -> None:
        await board.set("region_2", UNAVAILABLE, key_id="k1")
        read = await board.records()
        redis.down = True
        assert await board.records() == read
        assert not board.reachable

    async def test_redis_down_before_any_read_answers_the_statuses_known(
        self, board: StatusBoard, redis: FakeRedis
    ) -> None:
        redis.down = True
        records = await board.records()
        assert records == dict.fromkeys(REGIONS, StatusRecord(RegionStatus.AVAILABLE))
