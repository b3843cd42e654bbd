"""Applied totals: counted in memory, sent to a Redis hash in the background, never in the way."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, cast

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from regionstore_shared.applied_totals import AppliedCounter, AppliedTotals
from regionstore_shared.logs import Outages
from regionstore_shared.status import REDIS

KEY = "regionstore:applied"


class FakeRedis:
    """Hashes; ``down`` fails every command with ``error``; ``hang`` holds HINCRBY forever."""

    def __init__(self) -> None:
        self.hashes: dict[str, dict[str, int]] = {}
        self.calls: list[tuple[str, str, int]] = []
        self.down = False
        self.fail_after: int | None = None
        self.error: RedisError = RedisConnectionError("Error 111 connecting to 127.0.0.1:6379.")
        self.hang = False
        self.gate: asyncio.Event | None = None
        self.sent = asyncio.Event()
        self.attempted = asyncio.Condition()

    async def hincrby(self, key: str, field: str, amount: int) -> int:
        if self.hang:
            await asyncio.Event().wait()
        if self.gate is not None:
            await self.gate.wait()
        try:
            if self.down or (self.fail_after is not None and len(self.calls) >= self.fail_after):
                raise self.error
            self.calls.append((key, field, amount))
            fields = self.hashes.setdefault(key, {})
            fields[field] = fields.get(field, 0) + amount
            self.sent.set()
            return fields[field]
        finally:
            async with self.attempted:
                self.attempted.notify_all()

    async def until(self, condition: Callable[[], bool]) -> None:
        """Wait for HINCRBY attempts until ``condition()`` holds."""
        async with self.attempted:
            await self.attempted.wait_for(condition)

    async def hgetall(self, key: str) -> dict[bytes, bytes]:
        if self.down:
            raise self.error
        return {f.encode(): str(v).encode() for f, v in self.hashes.get(key, {}).items()}

    def totals(self) -> dict[str, int]:
        return dict(self.hashes.get(KEY, {}))


def counter(redis: FakeRedis, **kwargs: Any) -> AppliedCounter:
    return AppliedCounter(cast(Any, redis), KEY, **kwargs)


class TestAdd:
    async def test_counts_are_summed_per_region_and_sent_once_each(self) -> None:
        redis = FakeRedis()
        applied = counter(redis)
        applied.add("region_1", 3)
        applied.add("region_3", 2)
        applied.add("region_1", 4)
        assert redis.calls == [], "add never talks to Redis"
        assert await applied.flush()
        assert sorted(redis.calls) == [(KEY, "region_1", 7), (KEY, "region_3", 2)]
        assert applied.pending == {}

    async def test_nothing_to_count_sends_nothing(self) -> None:
        redis = FakeRedis()
        applied = counter(redis)
        applied.add("region_1", 0)
        assert await applied.flush()
        assert redis.calls == []


class TestBackground:
    async def test_counts_reach_redis_without_a_flush(self) -> None:
        redis = FakeRedis()
        applied = counter(redis)
        applied.start()
        try:
            applied.add("region_2", 5)
            await redis.sent.wait()
            assert redis.totals() == {"region_2": 5}
        finally:
            await applied.stop()

    async def test_counts_added_during_a_send_go_in_the_next_one(self) -> None:
        redis = FakeRedis()
        redis.gate = asyncio.Event()
        applied = counter(redis, every_s=0)
        applied.start()
        try:
            applied.add("region_1", 1)
            await asyncio.sleep(0)  # the send starts and waits at the gate
            applied.add("region_1", 10)
            applied.add("region_1", 100)
            redis.gate.set()
            await redis.until(lambda: redis.totals().get("region_1") == 111)
            assert [amount for _, _, amount in redis.calls] == [1, 110]
        finally:
            await applied.stop()

    async def test_counts_within_the_interval_of_a_send_wait_for_the_next_one(self) -> None:
        redis = FakeRedis()
        applied = counter(redis, every_s=3600)
        applied.start()
        try:
            applied.add("region_1", 1)
            await redis.sent.wait()
            redis.sent.clear()
            applied.add("region_1", 2)
            applied.add("region_2", 3)
            for _ in range(20):
                await asyncio.sleep(0)
            assert redis.calls == [(KEY, "region_1", 1)], "one send per interval"
            assert applied.pending == {"region_1": 2, "region_2": 3}
        finally:
            await applied.stop()
        assert redis.totals() == {"region_1": 3, "region_2": 3}

    async def test_stop_sends_what_is_left(self) -> None:
        redis = FakeRedis()
        applied = counter(redis)
        applied.add("region_3", 9)
        await applied.stop()
        assert redis.totals() == {"region_3": 9}

    async def test_stop_gives_up_on_a_redis_that_never_answers(self) -> None:
        redis = FakeRedis()
        redis.hang = True
        applied = counter(redis, stop_timeout_s=0.05)
        applied.start()
        applied.add("region_1", 1)
        await applied.stop()
        assert applied.pending == {"region_1": 1}


class TestRedisDown:
    async def test_counts_wait_in_memory_and_are_sent_when_redis_is_back(self) -> None:
        redis = FakeRedis()
        redis.down = True
        outages = Outages()
        applied = counter(redis, outages=outages, retry_every_s=0.01)
        applied.start()
        try:
            applied.add("region_1", 4)
            await redis.until(lambda: outages.is_down(REDIS))
            applied.add("region_1", 1)
            assert redis.totals() == {}
            redis.down = False
            await redis.until(lambda: redis.totals() == {"region_1": 5})
            # The send that succeeded reports Redis back before the counter yields again.
            await asyncio.sleep(0)
            assert not outages.is_down(REDIS)
        finally:
            await applied.stop()

    async def test_a_region_sent_before_a_failure_is_not_sent_again(self) -> None:
        redis = FakeRedis()
        redis.fail_after = 1
        applied = counter(redis)
        applied.add("region_1", 2)
        applied.add("region_2", 3)
        assert not await applied.flush()
        assert redis.totals() == {"region_1": 2}
        assert applied.pending == {"region_2": 3}
        redis.fail_after = None
        assert await applied.flush()
        assert redis.totals() == {"region_1": 2, "region_2": 3}

    async def test_a_timeout_is_a_failure_too(self) -> None:
        redis = FakeRedis()
        redis.down = True
        redis.error = RedisTimeoutError("Timeout reading from 127.0.0.1:6379")
        applied = counter(redis)
        applied.add("region_1", 2)
        assert not await applied.flush()
        assert applied.pending == {"region_1": 2}


class TestTotals:
    async def test_each_region_reads_its_total_and_unseen_regions_zero(self) -> None:
        redis = FakeRedis()
        applied = counter(redis)
        applied.add("region_1", 12)
        await applied.flush()
        totals = AppliedTotals(cast(Any, redis), KEY)
        assert await totals.read(["region_1", "region_2"]) == {"region_1": 12, "region_2": 0}

    async def test_totals_are_unknown_while_redis_is_down(self) -> None:
        redis = FakeRedis()
        redis.down = True
        totals = AppliedTotals(cast(Any, redis), KEY)
        assert await totals.read(["region_1", "region_2"]) == {"region_1": None, "region_2": None}
