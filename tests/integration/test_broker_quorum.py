"""A three-broker quorum (make up KAFKA_BROKERS=3) takes writes while one broker at a time dies.

Writes flow the whole time. One broker is killed with SIGKILL, comes back and catches up until
every partition's in-sync replicas are all three again; then another is killed. With
min.insync.replicas 2 a quorum always remains, so the gateway must accept every write, and the
audit must find each of them exactly once where it belongs.
"""

from __future__ import annotations

import asyncio
import signal
import time
from dataclasses import dataclass, field
from typing import Any

import pytest

from regionstore_shared.clients import kafka_admin
from regionstore_shared.settings import CommonSettings
from regionstore_shared.topics import all_topics
from tests.regionstore_env import Env, customer, env

pytestmark = [pytest.mark.integration, pytest.mark.faults, pytest.mark.quorum]
__all__ = ["env"]

BROKERS = ("kafka", "kafka_2", "kafka_3")
CATCH_UP_WITHIN_S = 120.0
WRITERS = 4


async def _partitions(settings: CommonSettings) -> list[dict[str, Any]]:
    """Every partition of the services' topics and of the consumer offsets."""
    admin = kafka_admin(settings.kafka, "regionstore-tests")
    await admin.start()
    try:
        described = await admin.describe_topics([*all_topics(settings), "__consumer_offsets"])
    finally:
        await admin.close()
    return [p for topic in described for p in topic["partitions"]]


async def _wait_isr_full(settings: CommonSettings) -> None:
    """Wait until every partition has all three replicas in sync."""
    deadline = time.monotonic() + CATCH_UP_WITHIN_S
    while True:
        partitions = await _partitions(settings)
        short = [p for p in partitions if sorted(p["isr"]) != sorted(p["replicas"])]
        if not short:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"ISR not full after {CATCH_UP_WITHIN_S}s: {short[:5]}")
        await asyncio.sleep(0.5)


@dataclass
class WriteLoop:
    """Steady single writes through the gateway, with every answer kept."""

    env: Env
    accepted: int = 0
    refused: list[str] = field(default_factory=list)
    running: bool = True
    answered: asyncio.Condition = field(default_factory=asyncio.Condition)

    async def run(self) -> None:
        while self.running:
            response = await self.env.http.post("/v1/customers", json=customer())
            if response.status_code == 202:
                self.env.remember(response.json())
                self.accepted += 1
            else:
                self.refused.append(f"{response.status_code} {response.text[:200]}")
            async with self.answered:
                self.answered.notify_all()

    async def until_accepted(self, more: int) -> None:
        """Wait until ``more`` further writes are accepted, or one is refused."""
        target = self.accepted + more
        async with self.answered:
            await self.answered.wait_for(lambda: self.accepted >= target or bool(self.refused))


async def test_the_gateway_accepts_every_write_while_brokers_die_one_at_a_time(
    env: Env, stack: Any
) -> None:
    settings = CommonSettings()
    replicas = {len(p["replicas"]) for p in await _partitions(settings)}
    if replicas != {3}:
        pytest.fail(f"needs the three-broker stack (make up KAFKA_BROKERS=3); replicas: {replicas}")
    await _wait_isr_full(settings)
    loops = [WriteLoop(env) for _ in range(WRITERS)]
    tasks = [asyncio.create_task(loop.run()) for loop in loops]
    try:
        for broker in ("kafka_2", "kafka"):
            await asyncio.gather(*(loop.until_accepted(10) for loop in loops))
            pid = await stack.kill(broker, signal.SIGKILL)
            # Writes must keep being accepted while the broker is down.
            await asyncio.gather(*(loop.until_accepted(10) for loop in loops))
            await stack.wait_ready(broker, not_pid=pid)
            await _wait_isr_full(settings)
        await asyncio.gather(*(loop.until_accepted(10) for loop in loops))
    finally:
        for loop in loops:
            loop.running = False
        await asyncio.gather(*tasks)
    refused = [answer for loop in loops for answer in loop.refused]
    accepted = sum(loop.accepted for loop in loops)
    assert refused == [], f"{len(refused)} refused, {accepted} accepted: {refused[:10]}"
    report = await env.settle()
    assert report.checked == accepted
    assert report.clean, report
