"""The placement tables on the real stack: what they know survives killed consumers, and a
consumer that lost its partitions can no longer write them.

A move must tombstone the regions the customer left, and only the writer's and the replicator's
tables (kept in Kafka, committed with their offsets) say which those are. So every test here
creates customers, takes a consumer down in some way, then moves the customers: a table that
forgot them would leave a live copy in the region they left, which the audit counts as a
duplicate.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import time
from pathlib import Path
from typing import Any

import pytest

from regionstore_shared.settings import CommonSettings
from tests.integration.test_consumers_faults import ExtraConsumer, Load, _batch
from tests.regionstore_env import Env, customer, env
from tests.stack import Stack

pytestmark = [pytest.mark.integration, pytest.mark.faults]
__all__ = ["env"]

# Homed in region_1 (replica region_3); moved to region_2 (replica region_1): region_3 is left.
FROM = (1310, "SP", "sao paulo")
TO = {"customer_zip_code_prefix": 45000, "customer_state": "BA", "customer_city": "salvador"}
SETTLE_WITHIN_S = 180.0
REBALANCED_WITHIN_S = 60.0


async def _create(env: Env, count: int) -> list[dict[str, Any]]:
    bodies = [customer(zip_prefix=FROM[0], state=FROM[1], city=FROM[2]) for _ in range(count)]
    await _batch(env, bodies)
    return bodies


async def _move(env: Env, bodies: list[dict[str, Any]]) -> None:
    await _batch(env, [{**body, **TO} for body in bodies])


async def _left_region_tombstoned(env: Env, bodies: list[dict[str, Any]]) -> None:
    report = await env.settle(within_s=SETTLE_WITHIN_S)
    assert report.clean, report
    await env.consumed()
    for body in bodies[:20]:
        docs = await env.documents(body["customer_id"])
        assert docs["region_3"] is not None, "the region left has no tombstone"
        assert docs["region_3"]["_deleted"] is True
        assert docs["region_3"]["_home"] == "region_2"


async def test_placements_survive_killed_consumers(env: Env, stack: Stack) -> None:
    bodies = await _create(env, 200)
    assert (await env.settle(within_s=SETTLE_WITHIN_S)).clean
    await env.consumed()
    for service in ("writer", "replicator"):
        pid = await stack.kill(service)
        await stack.wait_ready(service, not_pid=pid)
    await _move(env, bodies)
    await _left_region_tombstoned(env, bodies)


async def test_a_consumer_frozen_past_its_session_leaves_nothing_wrong(
    env: Env, stack: Stack, tmp_path: Path
) -> None:
    """The stack's replicator is frozen (SIGSTOP) under load until its group gives its
    partitions to a second replicator, which moves the customers; then it is thawed with
    whatever batch it held, which it can no longer commit (the second one fenced its
    transactional producers; test_placement_log proves the fencing itself). Nothing it writes
    late leaves a copy, and the second one stops cleanly."""
    bodies = await _create(env, 300)
    assert (await env.settle(within_s=SETTLE_WITHIN_S)).clean
    extra = await ExtraConsumer.start(stack, "replicator", tmp_path)
    frozen: int | None = None
    load = Load(env)
    loading = asyncio.create_task(load.run())
    try:
        await extra.wait_applying()
        frozen = await stack.kill("replicator", signal.SIGSTOP)
        await _owns_every_partition(extra)
        await _move(env, bodies)
        _thaw(frozen)
        frozen = None
        await load.until_posted(loading, load.posted + 400)
    finally:
        if frozen is not None:
            _thaw(frozen)
        load.stop.set()
        await loading
        exit_code = await extra.stop()
    await _left_region_tombstoned(env, bodies)
    assert exit_code == 0, extra.output()[-3000:]
    assert "Traceback" not in extra.output()


def _thaw(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGCONT)


async def _owns_every_partition(extra: ExtraConsumer) -> None:
    """Wait until the extra replicator's log shows it assigned every command partition."""
    deadline = time.monotonic() + REBALANCED_WITHIN_S
    every = frozenset(range(CommonSettings().kafka.partitions))
    while every not in _assignments(extra.output()):
        assert time.monotonic() < deadline, extra.output()[-3000:]
        await asyncio.sleep(0.2)


def _assignments(log: str) -> list[frozenset[int]]:
    seen = []
    for line in log.splitlines():
        with contextlib.suppress(ValueError):
            record = json.loads(line)
            if record.get("message") == "partitions assigned":
                seen.append(frozenset(int(p.rsplit(":", 1)[1]) for p in record["partitions"]))
    return seen
