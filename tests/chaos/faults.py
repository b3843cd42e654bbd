"""The kills of a chaos round: SIGKILL of every process kind of the stack, one at a time
(:mod:`tests.chaos.nemesis` orders them among its other faults).

Each kill waits until process-compose has the process back and ready before the next one.
Recovery is killed in the middle of a drain: a region is flipped down until a backlog is
parked, flipped back, and recovery is killed once the backlog has started to shrink.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass

import httpx

from tests.stack import Stack

SERVICES = ("gateway", "writer", "replicator")
INFRA = ("kafka", "redis", "redis_idempotency")
DRAIN_REGION = "region_3"
# Every write reaches every region, so a down region parks at the whole load's rate; recovery
# drains about ten thousand a second, so a smaller backlog is gone before it can be killed.
PARK_AT_LEAST = 3000
WATCH_EVERY_S = 0.2
DRAIN_WATCH_EVERY_S = 0.02
STEP_WITHIN_S = 120.0
# A killed broker recovers every log before it is ready: on the shared 2-core machine, busy with
# other stacks, that took over two minutes. The round proves what is kept, not how fast.
RESTART_WITHIN_S = 300.0


class FaultError(AssertionError):
    """A step of the kill schedule did not happen as planned."""


@dataclass
class Kill:
    """One SIGKILL and how long the process took to be ready again."""

    process: str
    down_s: float
    note: str = ""


async def plan(stack: Stack) -> list[str]:
    """Every service, recovery mid-drain, Kafka, both Redis, and every process of every store."""
    stores = sorted(name for name in await stack.processes() if name.startswith("region_"))
    return [*SERVICES, "recovery", *INFRA, *stores]


async def kill(stack: Stack, process: str, note: str = "") -> Kill:
    started = time.monotonic()
    pid = await stack.kill(process)
    await stack.wait_ready(process, not_pid=pid, within_s=RESTART_WITHIN_S)
    return Kill(process, round(time.monotonic() - started, 2), note)


async def kill_recovery_mid_drain(stack: Stack, http: httpx.AsyncClient) -> Kill:
    await _set_status(http, DRAIN_REGION, "unavailable")
    try:
        parked = await _wait_pending(http, lambda n: n >= PARK_AT_LEAST)
    finally:
        await _set_status(http, DRAIN_REGION, "available")
    draining = await _wait_pending(http, lambda n: n < parked, every_s=DRAIN_WATCH_EVERY_S)
    return await kill(
        stack, "recovery", f"{DRAIN_REGION}: {parked} parked, {draining} left when killed"
    )


async def _set_status(http: httpx.AsyncClient, region: str, status: str) -> None:
    deadline = time.monotonic() + STEP_WITHIN_S
    while True:
        try:
            response = await http.put(f"/v1/regions/{region}/status", json={"status": status})
            if response.status_code == 200:
                return
            why = f"{response.status_code} {response.text[:200]}"
        except httpx.TransportError as error:
            why = type(error).__name__
        if time.monotonic() > deadline:
            raise FaultError(f"could not set {region} {status}: {why}")
        await asyncio.sleep(WATCH_EVERY_S)


async def _wait_pending(
    http: httpx.AsyncClient, done: Callable[[int], bool], every_s: float = WATCH_EVERY_S
) -> int:
    deadline = time.monotonic() + STEP_WITHIN_S
    while True:
        pending = await backlog(http)
        count = pending.get(DRAIN_REGION)
        if count is not None and done(count):
            return count
        if time.monotonic() > deadline:
            raise FaultError(f"{DRAIN_REGION} backlog never got there: {pending}")
        await asyncio.sleep(every_s)


async def backlog(http: httpx.AsyncClient) -> dict[str, int | None]:
    """Each region's parked backlog, and the consumers' lag under "lag.<consumer>"."""
    try:
        answer = (await http.get("/v1/regions")).json()
    except (httpx.TransportError, ValueError):
        return {}
    counts: dict[str, int | None] = {r["name"]: r["pending"] for r in answer["regions"]}
    counts.update({f"lag.{name}": lag for name, lag in answer.get("lag", {}).items()})
    return counts
