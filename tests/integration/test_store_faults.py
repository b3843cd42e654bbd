"""A regional store crashing for real: its PostgreSQL or its FerretDB killed with SIGKILL.

Writes keep flowing through the gateway while region_2's store dies; nobody flips its status.
The consumers must notice the failing writes and park them, process-compose brings the process
back by itself, recovery drains the backlog, and every acknowledged write ends exactly once at
its final version (the audit counts lost, duplicated, stale and resurrected customers: all zero).
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import time
from typing import Any

import pytest

from tests.regionstore_env import Env, customer, env
from tests.stack import Stack

pytestmark = [pytest.mark.integration, pytest.mark.faults]
__all__ = ["env"]

REGION = "region_2"
POSTGRES = f"{REGION}_pg"
# New customers per batch: homed in REGION, replicated there (region_3's replica is region_2),
# and living elsewhere (REGION gets their tombstone). Every write reaches REGION one way or other.
homed = functools.partial(customer, zip_prefix=45000, state="BA", city="salvador")
replicated = functools.partial(customer, zip_prefix=75000, state="GO", city="goiania")
elsewhere = functools.partial(customer, zip_prefix=1310, state="SP", city="sao paulo")
PLACES = [
    {"customer_zip_code_prefix": 45000, "customer_state": "BA"},
    {"customer_zip_code_prefix": 75000, "customer_state": "GO"},
    {"customer_zip_code_prefix": 1310, "customer_state": "SP"},
]
FLOWING_WITHIN_S = 30
PARKED_WITHIN_S = 30
DRAINED_WITHIN_S = 60


class Traffic:
    """Batches of writes through the gateway, one after another, until stopped.

    Each batch creates customers, updates some created before (one of them moves to another
    region) and deletes others; every accepted item is remembered as its customer's final
    state for the audit.
    """

    def __init__(self, env: Env) -> None:
        self.env = env
        self.batches = 0
        self._live: list[dict[str, Any]] = []
        self._progress = asyncio.Condition()

    async def run(self, stop: asyncio.Event) -> None:
        for round_ in itertools.count():
            if stop.is_set():
                return
            await self._send(self._items(round_))
            async with self._progress:
                self.batches += 1
                self._progress.notify_all()

    async def flowing(self, batches: int) -> None:
        """Wait until at least ``batches`` batches in all were accepted."""
        async with asyncio.timeout(FLOWING_WITHIN_S), self._progress:
            await self._progress.wait_for(lambda: self.batches >= batches)

    def _items(self, round_: int) -> list[dict[str, Any]]:
        created = (
            [homed() for _ in range(10)]
            + [replicated() for _ in range(5)]
            + [elsewhere() for _ in range(5)]
        )
        # The first update moves the customer to another region, the others rename its city.
        updated = [
            {
                **body,
                **(PLACES[round_ % len(PLACES)] if i == 0 else {}),
                "customer_city": f"c{round_}",
            }
            for i, body in enumerate(self._live[:3])
        ]
        deleted = self._live[3:5]
        self._live = self._live[5:] + updated + created
        return [{"customer": body} for body in created + updated] + [
            {"op": "delete", "customer_id": body["customer_id"]} for body in deleted
        ]

    async def _send(self, items: list[dict[str, Any]]) -> None:
        response = await self.env.http.post("/v1/customers:batch", json={"items": items})
        assert response.status_code == 202, response.text
        for item, result in zip(items, response.json()["results"], strict=True):
            assert result["status"] == "accepted", result
            self.env.remember(result, deleted=item.get("op") == "delete")


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
