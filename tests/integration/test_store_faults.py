"""A regional store crashing for real: its PostgreSQL or its FerretDB killed with SIGKILL.

Writes keep flowing through the gateway while region_2's store dies; nobody flips its status.
The consumers must notice the failing writes and park them, process-compose brings the process
back by itself, recovery drains the backlog, and every acknowledged write ends exactly once at
its final version (the audit counts lost, duplicated, stale and resurrected customers: all zero).
"""

from __future__ import annotations

import asyncio
import time

import pytest

from tests.regionstore_env import Env, env
from tests.stack import Stack
from tests.traffic import Traffic

pytestmark = [pytest.mark.integration, pytest.mark.faults]
__all__ = ["env"]

REGION = "region_2"
POSTGRES = f"{REGION}_pg"
PARKED_WITHIN_S = 30
DRAINED_WITHIN_S = 60


async def _pending(env: Env) -> int:
    return (await env.pending())[REGION] or 0


async def _wait_drained(env: Env) -> None:
    """Wait until REGION's backlog is empty."""
    deadline = time.monotonic() + DRAINED_WITHIN_S
    while (left := await _pending(env)) > 0:
        assert time.monotonic() < deadline, f"{left} commands still pending for {REGION}"
        await asyncio.sleep(0.2)


async def _ready(stack: Stack) -> None:
    for process in (POSTGRES, REGION):
        await stack.wait_ready(process)


@pytest.mark.parametrize("process", [POSTGRES, REGION], ids=["postgresql", "ferretdb"])
async def test_a_killed_store_process_parks_writes_and_loses_nothing(
    env: Env, stack: Stack, process: str
) -> None:
    await _ready(stack)
    backlog = await _pending(env)
    traffic = Traffic(env)
    stop = asyncio.Event()
    sending = asyncio.create_task(traffic.run(stop))
    try:
        await traffic.flowing(batches=2)
        killed = await stack.kill(process)
        parked = await env.wait_pending(REGION, at_least=backlog + 1, within_s=PARKED_WITHIN_S)
        assert parked > backlog, f"nothing parked for {REGION} after {process} died"
        assert await stack.wait_ready(process, not_pid=killed) != killed
        await _ready(stack)
        await traffic.flowing(batches=traffic.batches + 2)  # writes after the restart, too
    finally:
        stop.set()
        await sending
    # The drainer has been retrying with a growing pause; a flip wakes it at once.
    await env.set_status(REGION, "unavailable")
    await env.set_status(REGION, "available")
    report = await env.settle()
    assert report.checked == len(env.finals) >= 4 * 20
    assert report.clean, report
    await _wait_drained(env)
