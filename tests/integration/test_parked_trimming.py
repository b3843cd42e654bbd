"""Parked means until drained: recovery deletes what a region took from its parking topic, and
never a command the region has not taken, even when it is killed in the middle of a trim."""

from __future__ import annotations

import asyncio
import signal
import time
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition

from regionstore_shared.backlog import BacklogProbe, Offsets
from regionstore_shared.clients import kafka_connection
from regionstore_shared.schemas import decode_command
from regionstore_shared.settings import CommonSettings
from tests.regionstore_env import Env, customer, env

pytestmark = [pytest.mark.integration, pytest.mark.faults]
__all__ = ["env"]

REGION = "region_3"  # home of zips 70000-99999, replicated to region_2
TRIMMED_WITHIN_S = 90.0  # recovery trims at every resync (10 s on the stack)
# Rounds until this many kills landed in a trim (the first round has nothing drained to trim).
KILLS_MID_TRIM = 2
MAX_ROUNDS = 5
Positions = dict[TopicPartition, Offsets]


async def positions(settings: CommonSettings, probe: BacklogProbe | None = None) -> Positions:
    """The region's parking topic and where its recovery group stands in it."""
    kafka = settings.kafka
    if probe is not None:
        return await probe.offsets(kafka.pending_topic(REGION), kafka.recovery_group(REGION))
    probe = BacklogProbe(kafka, "tests-trim")
    await probe.start()
    try:
        return await positions(settings, probe)
    finally:
        await probe.close()


def held(at: Positions) -> int:
    """Records the topic holds, drained or not."""
    return sum(o.end - o.start for o in at.values())


def drained_held(at: Positions) -> int:
    """Records the group consumed that the topic still holds."""
    return sum(o.consumed for o in at.values())


async def parked(settings: CommonSettings) -> list[str]:
    """The customers of every command past the group's commit: parked and not drained."""
    at = await positions(settings)
    tps = [tp for tp, o in at.items() if o.backlog]
    if not tps:
        return []
    consumer = AIOKafkaConsumer(
        **kafka_connection(settings.kafka), enable_auto_commit=False, auto_offset_reset="earliest"
    )
    await consumer.start()
    try:
        consumer.assign(tps)
        for tp in tps:
            consumer.seek(tp, at[tp].resume)
        found: list[str] = []
        left = set(tps)
        while left:
            polled = await consumer.getmany(*left, timeout_ms=1000)
            for tp, records in polled.items():
                found += [decode_command(r.value).key for r in records if r.offset < at[tp].end]
            left = {tp for tp in left if await consumer.position(tp) < at[tp].end}
        return found
    finally:
        await consumer.stop()


async def park(env: Env, count: int) -> list[str]:
    """Write ``count`` new customers of region_3 through the batch API, accepted; their ids."""
    bodies = [customer(zip_prefix=75000, state="GO", city="goiania") for _ in range(count)]
    response = await env.http.post(
        "/v1/customers:batch", json={"items": [{"customer": b} for b in bodies]}
    )
    assert response.status_code == 202, response.text
    for result in response.json()["results"]:
        assert result["status"] == "accepted", result
        env.remember(result)
    return [b["customer_id"] for b in bodies]


async def wait_for(read: Any, done: Any, within_s: float, what: str) -> Any:
    """Read until ``done(value)``; the last value, or a failure naming ``what``."""
    deadline = time.monotonic() + within_s
    while not done(value := await read()):
        assert time.monotonic() < deadline, f"{what}: {value}"
        await asyncio.sleep(0.2)
    return value


async def drained(env: Env) -> None:
    async def pending() -> int | None:
        return (await env.pending())[REGION]

    await wait_for(pending, lambda n: n == 0, TRIMMED_WITHIN_S, f"{REGION} still pending")


async def trimmed(settings: CommonSettings) -> Positions:
    async def read() -> Positions:
        return await positions(settings)

    return await wait_for(
        read,
        lambda at: drained_held(at) == 0,
        TRIMMED_WITHIN_S,
        "drained commands still held",
    )


async def test_a_drain_leaves_nothing_held_after_the_next_trim(env: Env) -> None:
    await env.set_status(REGION, "unavailable")
    ids = await park(env, 500)
    await env.wait_pending(REGION, at_least=500)
    before = await positions(env.settings)
    assert set(ids) <= set(await parked(env.settings))
    await env.set_status(REGION, "available")
    await drained(env)
    after = await trimmed(env.settings)
    assert held(before) >= 500
    assert held(after) == 0
    report = await env.settle()
    assert report.clean, report


async def test_a_kill_in_the_middle_of_a_trim_loses_no_parked_command(env: Env, stack: Any) -> None:
    """Each round: drained commands wait for a trim, new ones are parked right after them in
    the same partitions, and recovery is started and SIGKILLed as soon as the trim shows in the
    topic. Every parked command is still there, and is drained later."""
    settings = env.settings
    mid_trim = 0
    for _ in range(MAX_ROUNDS):
        # Stopped before the flip: no status event makes it trim before the test means it to.
        await stack.stop("recovery")
        try:
            await env.set_status(REGION, "unavailable")
            waiting = await park(env, 40)
            await env.wait_pending(REGION, at_least=40)
            before = await positions(settings)
            await stack.start("recovery", wait=False)
            mid_trim += await _kill_once_trimming(stack, settings, before)
            # The region is unavailable: nothing drains, so what is parked is what survived.
            assert set(waiting) <= set(await parked(settings))
        finally:
            # A failure left it stopped: the tests after this one need it.
            if (await stack.state("recovery"))["status"] in {"Stopped", "Completed"}:
                await stack.start("recovery", wait=False)
        await stack.wait_ready("recovery")
        await env.set_status(REGION, "available")
        await drained(env)
        if mid_trim == KILLS_MID_TRIM:
            break
    # A round finds nothing to trim only when a resync trimmed between its drain and the stop.
    assert mid_trim == KILLS_MID_TRIM
    after = await trimmed(settings)
    assert held(after) == 0
    report = await env.settle()
    assert report.clean, report


async def _kill_once_trimming(stack: Any, settings: CommonSettings, before: Positions) -> int:
    """SIGKILL recovery as soon as its trim moved a log start (1), or once it is ready when it
    had nothing to trim (0)."""
    if not drained_held(before):
        pid = await stack.wait_ready("recovery")
        await stack.kill("recovery", signal.SIGKILL)
        await stack.wait_ready("recovery", not_pid=pid)
        return 0
    probe = BacklogProbe(settings.kafka, "tests-trim")
    await probe.start()
    try:
        deadline = time.monotonic() + TRIMMED_WITHIN_S
        while True:
            now = await positions(settings, probe)
            if any(now[tp].start > o.start for tp, o in before.items()):
                break
            assert time.monotonic() < deadline, "recovery never trimmed"
            await asyncio.sleep(0.01)
    finally:
        await probe.close()
    await stack.kill("recovery", signal.SIGKILL)
    return 1
