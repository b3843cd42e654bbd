"""Clock node ids leased from the stack's Redis: distinct among live holders, lost and retaken."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis

from regionstore_gateway.adapters.node_lease import NodeIdLease, NoNodeIdError
from regionstore_shared.clock import MAX_NODE_ID
from tests.stack import Stack

pytestmark = pytest.mark.integration


@pytest.fixture
async def redis(stack: Stack) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.from_url(stack.endpoints.redis_url)
    yield client
    await client.aclose()


def lease(redis: aioredis.Redis, prefix: str) -> NodeIdLease:
    return NodeIdLease(redis, prefix=prefix, ttl_s=30.0)


async def test_every_live_holder_has_its_own_id_and_a_freed_one_is_taken_again(
    redis: aioredis.Redis,
) -> None:
    prefix = f"test-lease:{uuid.uuid4().hex}:"
    holders = [lease(redis, prefix) for _ in range(MAX_NODE_ID + 1)]
    try:
        ids = [await holder.acquire() for holder in holders]
        assert sorted(ids) == list(range(MAX_NODE_ID + 1))
        late = lease(redis, prefix)
        with pytest.raises(NoNodeIdError):
            await late.acquire()
        await holders[7].close()
        assert await late.acquire() == ids[7]
        assert late.node_id == ids[7]
        await late.close()
    finally:
        for holder in holders:
            await holder.close()


async def test_a_lease_taken_over_is_given_up_for_a_free_id(redis: aioredis.Redis) -> None:
    prefix = f"test-lease:{uuid.uuid4().hex}:"
    holder = lease(redis, prefix)
    try:
        first = await holder.acquire()
        await redis.set(f"{prefix}{first}", "another-process")
        await holder.renew()
        assert holder.node_id != first
        assert await redis.get(f"{prefix}{first}") == b"another-process"
        assert await redis.pttl(f"{prefix}{holder.node_id}") > 0
    finally:
        await holder.close()
        await redis.delete(f"{prefix}{first}")


async def test_renewing_extends_the_lease_and_closing_gives_it_back(
    redis: aioredis.Redis,
) -> None:
    prefix = f"test-lease:{uuid.uuid4().hex}:"
    holder = NodeIdLease(redis, prefix=prefix, ttl_s=5.0)
    node_id = await holder.acquire()
    key = f"{prefix}{node_id}"
    await redis.pexpire(key, 1000)
    await holder.renew()
    assert holder.node_id == node_id
    assert await redis.pttl(key) > 1000
    await holder.close()
    assert await redis.exists(key) == 0
