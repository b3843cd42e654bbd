"""Status records in the real Redis: who set a status, the detector's conditional change and its
lease. Keys under a prefix of the test's own, so the stack's detector never sees them."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio
from redis.asyncio import Redis
from redis.exceptions import RedisError

from regionstore_recovery.detection import Lease
from regionstore_shared.clients import redis_client
from regionstore_shared.settings import CommonSettings, RedisSettings
from regionstore_shared.status import (
    NodeStatus,
    RegionStatus,
    SetBy,
    StatusBoard,
    StatusRecord,
    Transition,
)
from tests.stack import Stack

pytestmark = pytest.mark.integration
REGIONS = ("region_1", "region_2")


@pytest_asyncio.fixture(loop_scope="session")
async def redis() -> AsyncIterator[Redis]:
    client = redis_client(CommonSettings().redis, "tests")
    try:
        yield client
    finally:
        await client.aclose()


@pytest_asyncio.fixture(loop_scope="session")
async def board(redis: Redis) -> AsyncIterator[StatusBoard]:
    prefix = f"test:{uuid.uuid4().hex}:"
    settings = RedisSettings(status_key_prefix=prefix)
    yield StatusBoard(redis, settings, REGIONS)
    keys = [k async for k in redis.scan_iter(match=f"{prefix}*")]
    if keys:
        await redis.delete(*keys)


@pytest_asyncio.fixture(loop_scope="session")
async def lease(redis: Redis) -> AsyncIterator[Lease]:
    held = Lease(redis, f"test:{uuid.uuid4().hex}:lease", ttl_s=30)
    yield held
    await held.release()


async def _down(board: StatusBoard, lease: Lease, seen: StatusRecord) -> Transition:
    return await board.transition(
        "region_1",
        seen,
        RegionStatus.DOWN,
        "3 failures",
        lease_key=lease.key,
        lease_token=lease.token,
    )


async def test_an_operators_change_says_who_and_when(board: StatusBoard) -> None:
    await board.set("region_2", NodeStatus.UNAVAILABLE, key_id="k1")
    record = (await board.read_records())["region_2"]
    assert (record.status, record.set_by, record.key_id) == (
        RegionStatus.UNAVAILABLE,
        SetBy.OPERATOR,
        "k1",
    )
    assert record.since is not None
    assert (await board.read_records())["region_1"] == StatusRecord(RegionStatus.AVAILABLE)


async def test_the_detector_changes_a_status_nobody_changed_since_it_read_it(
    board: StatusBoard, lease: Lease
) -> None:
    assert await lease.hold()
    seen = (await board.read_records())["region_1"]
    assert await _down(board, lease, seen) is Transition.DONE
    record = (await board.read_records())["region_1"]
    assert (record.status, record.set_by, record.reason) == (
        RegionStatus.DOWN,
        SetBy.DETECTOR,
        "3 failures",
    )
    assert record.revision == seen.revision + 1
    assert (await board.read())["region_1"] is NodeStatus.UNAVAILABLE


async def test_an_operators_change_after_the_detectors_read_wins(
    board: StatusBoard, lease: Lease
) -> None:
    assert await lease.hold()
    seen = (await board.read_records())["region_1"]
    await board.set("region_1", NodeStatus.AVAILABLE, key_id="k1")  # same value, newer word
    assert await _down(board, lease, seen) is Transition.CHANGED_MEANWHILE
    assert (await board.read_records())["region_1"].set_by is SetBy.OPERATOR


async def test_without_the_lease_the_detector_writes_nothing(
    board: StatusBoard, lease: Lease, redis: Redis
) -> None:
    other = Lease(redis, lease.key, ttl_s=30)
    assert await other.hold()
    assert not await lease.hold()
    seen = (await board.read_records())["region_1"]
    assert await _down(board, lease, seen) is Transition.NOT_LEADER
    assert (await board.read_records())["region_1"] == seen
    await other.release()
    assert await lease.hold()


@pytest.mark.faults
async def test_a_status_and_who_set_it_survive_a_redis_restart(
    board: StatusBoard, lease: Lease, stack: Stack
) -> None:
    """Both are written in one transaction (and the detector's in one script), which Redis
    must replay from its append-only file like any other write."""
    await board.set("region_2", NodeStatus.UNAVAILABLE, key_id="k1")
    assert await lease.hold()
    seen = (await board.read_records())["region_1"]
    assert await _down(board, lease, seen) is Transition.DONE
    before = await board.read_records()

    await stack.stop("redis")
    await stack.start("redis")

    assert await _read_when_back(board) == before


async def _read_when_back(board: StatusBoard) -> dict[str, StatusRecord]:
    deadline = time.monotonic() + 60
    while True:
        try:
            return await board.read_records()
        except RedisError:
            assert time.monotonic() < deadline, "Redis did not answer again"
            await asyncio.sleep(0.2)
