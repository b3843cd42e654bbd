"""The failure detector on the real stack, with nobody touching the statuses.

An outage drill: region_2's store processes (FerretDB and its PostgreSQL) are stopped under
write load, and the detector marks the region ``down``: writes are parked and reads served by
the replica, flagged. Started again in the natural order (PostgreSQL, then FerretDB), the region
is ``available`` again once healthy for the hysteresis window, recovery drains it, and the audit
is clean. A flapping store (FerretDB stopped and started every 2 s) changes status at most once
per hysteresis window. Every change is the detector's, in the audit trail.

The figures (detection time, and time from the store's return to drained) are printed; speed is
not asserted here.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import time
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from pymongo.errors import PyMongoError

from regionstore_recovery.settings import DetectorSettings
from regionstore_shared.clients import kafka_connection
from regionstore_shared.settings import CommonSettings, KafkaSettings
from tests.regionstore_env import Env, env
from tests.stack import Stack
from tests.traffic import Traffic

pytestmark = [pytest.mark.integration, pytest.mark.faults]
__all__ = ["env"]

REGION = "region_2"
POSTGRES = f"{REGION}_pg"
REPLICA = "region_1"
# The stack runs the detector's defaults; these bounds are generous readiness deadlines.
DETECTOR = DetectorSettings()
DETECTED_WITHIN_S = 60.0
BACK_WITHIN_S = 90.0
DRAINED_WITHIN_S = 90.0
FLAP_EVERY_S = 2.0
FLAPS = 6  # down and up six times: 24 s


async def _region(env: Env) -> dict[str, Any]:
    response = await env.http.get("/v1/regions")
    assert response.status_code == 200, response.text
    (region,) = [r for r in response.json()["regions"] if r["name"] == REGION]
    return region


async def _wait_status(env: Env, status: str, within_s: float) -> dict[str, Any]:
    """REGION as listed once its status is ``status``."""
    deadline = time.monotonic() + within_s
    while (region := await _region(env))["status"] != status:
        assert time.monotonic() < deadline, f"{REGION} not {status} after {within_s}s: {region}"
        await asyncio.sleep(0.2)
    return region


async def _wait_store_answers(env: Env) -> float:
    """Wait until REGION's store answers a read; the wall-clock time it did."""
    deadline = time.monotonic() + BACK_WITHIN_S
    while True:
        with contextlib.suppress(PyMongoError):
            await env.collections[REGION].find_one({"_id": "__drill__"})
            return time.time()
        assert time.monotonic() < deadline, f"{REGION}'s store does not answer"
        await asyncio.sleep(0.1)


async def _wait_drained(env: Env) -> float:
    """Wait until REGION's backlog is empty; the wall-clock time it was."""
    deadline = time.monotonic() + DRAINED_WITHIN_S
    while ((await env.pending())[REGION] or 0) > 0:
        assert time.monotonic() < deadline, f"{REGION}'s backlog not drained"
        await asyncio.sleep(0.2)
    return time.time()


def _since(region: dict[str, Any]) -> float:
    return datetime.fromisoformat(region["since"]).timestamp()


class Trail:
    """The audit trail from where it ended when the test began."""

    def __init__(self, kafka: KafkaSettings) -> None:
        self._partition = TopicPartition(kafka.audit_topic, 0)
        self._consumer = AIOKafkaConsumer(**kafka_connection(kafka), group_id=None)
        self._start = 0

    async def __aenter__(self) -> Trail:
        await self._consumer.start()
        self._consumer.assign([self._partition])
        self._start = (await self._consumer.end_offsets([self._partition]))[self._partition]
        return self

    async def __aexit__(self, *_: object) -> None:
        await self._consumer.stop()

    async def status_changes(self) -> list[dict[str, Any]]:
        """REGION's status changes recorded since the test began (follow-ups left out)."""
        self._consumer.seek(self._partition, self._start)
        end = (await self._consumer.end_offsets([self._partition]))[self._partition]
        events: list[dict[str, Any]] = []
        while await self._consumer.position(self._partition) < end:
            batches = await self._consumer.getmany(self._partition, timeout_ms=1000)
            events += [json.loads(r.value or b"{}") for r in batches.get(self._partition, [])]
        return [
            e
            for e in events
            if e["action"] == "region.status" and e["target"] == REGION and "follows" not in e
        ]


@contextlib.asynccontextmanager
async def _traffic(env: Env) -> AsyncIterator[Traffic]:
    traffic = Traffic(env)
    stop = asyncio.Event()
    sending = asyncio.create_task(traffic.run(stop))
    try:
        await traffic.flowing(batches=2)
        yield traffic
    finally:
        stop.set()
        await sending


async def _ready(stack: Stack) -> None:
    for process in (POSTGRES, REGION):
        await stack.wait_ready(process)


async def test_an_outage_nobody_flags_is_detected_parked_served_and_drained(
    env: Env, stack: Stack
) -> None:
    await _ready(stack)
    await _wait_status(env, "available", BACK_WITHIN_S)
    async with Trail(CommonSettings().kafka) as trail:
        async with _traffic(env) as traffic:
            await stack.stop(REGION)
            stopped_at = time.time()
            await stack.stop(POSTGRES)

            down = await _wait_status(env, "down", DETECTED_WITHIN_S)
            assert down["set_by"] == "detector"
            assert "failures within" in down["reason"]
            detected_s = _since(down) - stopped_at

            # Writes are parked, reads served by the replica and flagged.
            await traffic.flowing(batches=traffic.batches + 2)
            assert await env.wait_pending(REGION, at_least=1) > 0
            homed = next(
                e for e in env.finals.values() if e.home == REGION and not e.deleted
            ).customer_id
            read = await env.http.get(f"/v1/customers/{homed}")
            assert read.status_code == 200, read.text
            assert (read.json()["served_by"], read.json()["fallback"]) == (REPLICA, True)
            listed = await env.http.get("/v1/customers", params={"region": REGION, "limit": 5})
            assert listed.status_code == 200, listed.text
            assert listed.json()["degraded_regions"] == [REGION]
            assert not listed.json()["incomplete"]

            # The natural order, PostgreSQL then its FerretDB, without waiting in between.
            await stack.start(POSTGRES, wait=False)
            await stack.start(REGION, wait=False)
            back_at = await _wait_store_answers(env)
            await _ready(stack)
            available = await _wait_status(env, "available", BACK_WITHIN_S)
            await traffic.flowing(batches=traffic.batches + 2)
        drained_at = await _wait_drained(env)
        changes = await trail.status_changes()

    assert available["set_by"] == "detector"
    assert "healthy probes in a row" in available["reason"]
    # Hysteresis: no two changes of a region within healthy_for_s.
    assert _since(available) - _since(down) >= DETECTOR.healthy_for_s
    assert [(c["detail"]["status"], c["key_id"], c["role"]) for c in changes] == [
        ("down", "detector", "detector"),
        ("available", "detector", "detector"),
    ]
    report = await env.settle()
    assert report.checked == len(env.finals)
    assert report.clean, report
    print(
        f"\noutage drill: detected down {detected_s:.1f} s after the store stopped; "
        f"available {_since(available) - back_at:.1f} s and drained "
        f"{drained_at - back_at:.1f} s after it answered again (RTO); "
        f"{len(env.finals)} customers audited"
    )


async def test_a_flapping_store_changes_status_at_most_once_per_window(
    env: Env, stack: Stack
) -> None:
    await _ready(stack)
    await _wait_status(env, "available", BACK_WITHIN_S)
    async with Trail(CommonSettings().kafka) as trail:
        async with _traffic(env):
            for _ in range(FLAPS):
                await stack.stop(REGION)
                await asyncio.sleep(FLAP_EVERY_S)  # the fault's schedule, not a readiness wait
                await stack.start(REGION, wait=False)
                await asyncio.sleep(FLAP_EVERY_S)
            await stack.wait_ready(REGION)
            await _wait_status(env, "available", BACK_WITHIN_S)
        changes = await trail.status_changes()
    statuses = [c["detail"]["status"] for c in changes]
    assert statuses[0] == "down", statuses
    assert statuses[-1] == "available", statuses
    assert {(c["key_id"], c["role"]) for c in changes} == {("detector", "detector")}
    stamps = [datetime.fromisoformat(c["at"]).timestamp() for c in changes]
    gaps = [later - earlier for earlier, later in itertools.pairwise(stamps)]
    assert all(gap >= DETECTOR.healthy_for_s - 1 for gap in gaps), gaps
    flapped_s = FLAPS * 2 * FLAP_EVERY_S
    assert len(changes) <= 2 + flapped_s / DETECTOR.healthy_for_s, statuses
    await _wait_drained(env)
    report = await env.settle()
    assert report.clean, report
    print(f"\nflapping store: {len(changes)} status changes over {flapped_s:.0f} s: {statuses}")
