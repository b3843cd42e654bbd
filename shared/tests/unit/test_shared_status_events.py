"""Status changes from Redis keyspace events: every event and every reconnect re-reads the board."""

from __future__ import annotations

import asyncio
from typing import Any, cast

from regionstore_shared.settings import RedisSettings
from regionstore_shared.status import NodeStatus, StatusBoard
from regionstore_shared.status_events import StatusChanges, WatchedStatuses
from shared.tests.fakes import REGIONS, FakePubSub, PubSubRedis

SETTINGS = RedisSettings()
UNAVAILABLE = NodeStatus.UNAVAILABLE
# A readiness bound only: every wait below ends as soon as the fakes have said everything.
BOUND_S = 5


def event(key: str = "regionstore:node:region_1:status") -> dict[str, Any]:
    """A keyspace notification, as redis-py delivers one for a pattern subscription."""
    return {
        "type": "pmessage",
        "pattern": f"__keyspace@*__:{key}",
        "channel": f"__keyspace@0__:{key}",
        "data": "set",
    }


def listening(redis: PubSubRedis) -> tuple[StatusBoard, StatusChanges]:
    board = StatusBoard(cast(Any, redis), SETTINGS, REGIONS)
    return board, StatusChanges(cast(Any, redis), board, retry_s=0)


class TestSubscription:
    async def test_subscribes_to_the_keyspace_of_every_region_status_key(self) -> None:
        idle = asyncio.Event()
        connection = FakePubSub(False, [], idle)
        _, changes = listening(PubSubRedis([connection]))
        changes.start()
        try:
            await asyncio.wait_for(idle.wait(), BOUND_S)
        finally:
            await changes.stop()
        assert connection.patterns == [
            f"__keyspace@*__:regionstore:node:{region}:status" for region in REGIONS
        ]

    async def test_stop_closes_the_subscription(self) -> None:
        idle = asyncio.Event()
        connection = FakePubSub(False, [], idle)
        _, changes = listening(PubSubRedis([connection]))
        changes.start()
        await asyncio.wait_for(idle.wait(), BOUND_S)
        await changes.stop()
        assert connection.closed

    async def test_stop_before_start_does_nothing(self) -> None:
        _, changes = listening(PubSubRedis([]))
        await changes.stop()
        assert changes.generation == 0


class TestEvents:
    async def test_every_keyspace_event_rereads_the_board(self) -> None:
        idle = asyncio.Event()
        redis = PubSubRedis([FakePubSub(False, [event()], idle)])
        _, changes = listening(redis)
        changes.start()
        try:
            await asyncio.wait_for(idle.wait(), BOUND_S)
            assert changes.generation == 2
            assert redis.calls == 2  # one read on connect, one per event
        finally:
            await changes.stop()

    async def test_only_pattern_messages_count_as_changes(self) -> None:
        idle = asyncio.Event()
        confirmation = {"type": "psubscribe", "pattern": None, "channel": "p", "data": 1}
        plain = {"type": "message", "pattern": None, "channel": "c", "data": "x"}
        messages = [confirmation, event(), plain, event("regionstore:node:region_3:status")]
        redis = PubSubRedis([FakePubSub(False, messages, idle)])
        _, changes = listening(redis)
        changes.start()
        try:
            await asyncio.wait_for(idle.wait(), BOUND_S)
            assert changes.generation == 3  # the connect and the two keyspace events
            assert redis.calls == 3
        finally:
            await changes.stop()

    async def test_a_waiter_sees_the_status_the_event_announced(self) -> None:
        idle = asyncio.Event()
        redis = PubSubRedis([FakePubSub(False, [event()], idle)])
        redis.mark("region_1", UNAVAILABLE)
        board, changes = listening(redis)
        changes.start()
        try:
            await asyncio.wait_for(idle.wait(), BOUND_S)
            assert board.last_known["region_1"] is UNAVAILABLE
        finally:
            await changes.stop()


class TestReconnect:
    async def test_a_reconnect_rereads_the_board_before_waking_waiters(self) -> None:
        idle = asyncio.Event()
        redis = PubSubRedis([FakePubSub(True, [], idle), FakePubSub(False, [], idle)])
        board, changes = listening(redis)
        redis.down = True
        await board.all()  # the board answers from memory: every region available
        redis.down = False
        redis.mark("region_2", UNAVAILABLE)  # changed while this process was cut off
        changes.start()
        try:
            seen = await changes.wait(0, within_s=BOUND_S)
            assert seen == 1
            # The retry interval of the board has not passed, yet it answers what Redis holds.
            assert (await board.all())["region_2"] is UNAVAILABLE
        finally:
            await changes.stop()

    async def test_a_dropped_subscription_is_opened_again_and_counts_as_a_change(self) -> None:
        idle = asyncio.Event()
        first = FakePubSub(False, [event()], idle, drop=True)
        second = FakePubSub(False, [], idle)
        redis = PubSubRedis([first, second])
        _, changes = listening(redis)
        changes.start()
        try:
            await asyncio.wait_for(idle.wait(), BOUND_S)
        finally:
            await changes.stop()
        assert redis.opened == [first, second]
        assert first.closed
        # Connect, event, reconnect: a change made while cut off wakes the waiters too.
        assert changes.generation == 3
        assert second.patterns == first.patterns


class TestWait:
    async def test_returns_at_once_when_the_generation_already_moved(self) -> None:
        _, changes = listening(PubSubRedis([]))
        assert await changes.wait(-1, within_s=BOUND_S) == 0

    async def test_without_a_change_returns_the_same_generation_when_the_time_is_up(
        self,
    ) -> None:
        _, changes = listening(PubSubRedis([]))
        assert await changes.wait(0, within_s=0) == 0

    async def test_every_waiter_is_woken_by_one_change(self) -> None:
        idle = asyncio.Event()
        _, changes = listening(PubSubRedis([FakePubSub(False, [], idle)]))
        # Longer than the bound: a waiter not woken by the change is still waiting at the bound.
        waiters = [asyncio.create_task(changes.wait(0, within_s=3600)) for _ in range(3)]
        await asyncio.sleep(0)  # a yield: every waiter is waiting before the change comes
        changes.start()
        try:
            _, pending = await asyncio.wait(waiters, timeout=BOUND_S)
            for waiter in pending:
                waiter.cancel()
        finally:
            await changes.stop()
        assert not pending
        assert [waiter.result() for waiter in waiters] == [1, 1, 1]


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def watched(redis: PubSubRedis, clock: Clock) -> tuple[StatusChanges, WatchedStatuses]:
    board = StatusBoard(cast(Any, redis), SETTINGS, REGIONS, clock=clock)
    changes = StatusChanges(cast(Any, redis), board, retry_s=0)
    return changes, WatchedStatuses(board, changes, max_age_s=1.0)


class TestWatchedStatuses:
    async def test_while_listening_a_batch_reads_no_redis(self) -> None:
        idle = asyncio.Event()
        redis = PubSubRedis([FakePubSub(False, [], idle)])
        redis.mark("region_3", UNAVAILABLE)
        changes, statuses = watched(redis, Clock())
        changes.start()
        try:
            await asyncio.wait_for(idle.wait(), BOUND_S)
            assert changes.current
            read = redis.calls
            for _ in range(5):
                assert (await statuses.all())["region_3"] is UNAVAILABLE
            assert redis.calls == read, "answered from the statuses the listener read"
        finally:
            await changes.stop()

    async def test_statuses_older_than_the_bound_are_read_again(self) -> None:
        idle = asyncio.Event()
        redis = PubSubRedis([FakePubSub(False, [], idle)])
        clock = Clock()
        changes, statuses = watched(redis, clock)
        changes.start()
        try:
            await asyncio.wait_for(idle.wait(), BOUND_S)
            redis.mark("region_2", UNAVAILABLE)  # no event heard (notifications off)
            assert (await statuses.all())["region_2"] is NodeStatus.AVAILABLE
            clock.now += 1.0
            read = redis.calls
            assert (await statuses.all())["region_2"] is UNAVAILABLE
            assert redis.calls == read + 1
        finally:
            await changes.stop()

    async def test_without_a_listener_every_batch_reads_redis(self) -> None:
        redis = PubSubRedis([])
        changes, statuses = watched(redis, Clock())
        await statuses.all()
        redis.mark("region_1", UNAVAILABLE)
        assert not changes.current
        assert (await statuses.all())["region_1"] is UNAVAILABLE
        assert redis.calls == 2

    async def test_a_stopped_listener_is_not_current(self) -> None:
        idle = asyncio.Event()
        redis = PubSubRedis([FakePubSub(False, [], idle)])
        changes, statuses = watched(redis, Clock())
        changes.start()
        await asyncio.wait_for(idle.wait(), BOUND_S)
        await changes.stop()
        assert not changes.current
        redis.mark("region_1", UNAVAILABLE)
        assert (await statuses.all())["region_1"] is UNAVAILABLE
