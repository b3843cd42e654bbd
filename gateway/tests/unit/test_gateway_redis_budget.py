"""The Redis budget's sampler: each instance's memory, limit and evictions into the metrics."""

from __future__ import annotations

from typing import Any, cast

from prometheus_client import REGISTRY
from redis.exceptions import ConnectionError as RedisConnectionError

from regionstore_gateway.adapters.redis_budget import CONTROL, IDEMPOTENCY, RedisBudget


class FakeRedis:
    """INFO memory and stats, and DBSIZE, as Redis answers them; or a refused connection."""

    def __init__(self, used: int, limit: int, evicted: int, keys: int) -> None:
        self.info_answer = {"used_memory": used, "maxmemory": limit, "evicted_keys": evicted}
        self.keys = keys
        self.down = False

    async def info(self, *sections: str) -> dict[str, Any]:
        if self.down:
            raise RedisConnectionError("Error 111 connecting to 127.0.0.1:6380.")
        assert set(sections) == {"memory", "stats"}
        return dict(self.info_answer)

    async def dbsize(self) -> int:
        return self.keys


def sample(name: str, store: str) -> float | None:
    return REGISTRY.get_sample_value(name, {"store": store})


async def test_each_instance_is_reported_under_its_store() -> None:
    control = FakeRedis(used=1_200_000, limit=512 << 20, evicted=0, keys=7)
    records = FakeRedis(used=200 << 20, limit=256 << 20, evicted=1234, keys=500_000)
    await RedisBudget({CONTROL: cast(Any, control), IDEMPOTENCY: cast(Any, records)}).sample()

    assert sample("regionstore_redis_used_memory_bytes", CONTROL) == 1_200_000
    assert sample("regionstore_redis_maxmemory_bytes", CONTROL) == 512 << 20
    assert sample("regionstore_redis_used_memory_bytes", IDEMPOTENCY) == 200 << 20
    assert sample("regionstore_redis_evicted_keys_total", IDEMPOTENCY) == 1234
    assert sample("regionstore_redis_keys", IDEMPOTENCY) == 500_000


async def test_an_instance_that_cannot_be_read_is_left_out_until_it_answers() -> None:
    records = FakeRedis(used=10, limit=100, evicted=0, keys=1)
    budget = RedisBudget({IDEMPOTENCY: cast(Any, records)})
    await budget.sample()
    assert sample("regionstore_redis_used_memory_bytes", IDEMPOTENCY) == 10

    records.down = True
    await budget.sample()
    assert sample("regionstore_redis_used_memory_bytes", IDEMPOTENCY) is None

    records.down = False
    await budget.sample()
    assert sample("regionstore_redis_used_memory_bytes", IDEMPOTENCY) == 10
