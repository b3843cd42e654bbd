"""Acknowledgement order across gateways whose clocks disagree.

Extra gateways run beside the stack's own, each with its wall clock offset by libfaketime
(:mod:`tests.gateways`). A write sent through one of them after another write to the same
customer was acknowledged through another must end as the customer's state in every region,
whatever the offset: a few milliseconds, seconds, a day behind or a day ahead.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from regionstore_testing.audit import Expected
from regionstore_testing.ports import free_port
from tests.gateways import extra_gateway, skew
from tests.keys import headers
from tests.regionstore_env import Env, customer, env
from tests.stack import Stack

pytestmark = [pytest.mark.integration, pytest.mark.faults, pytest.mark.timeout(600)]
__all__ = ["env"]

PAIRS = 200
AT_ONCE = 8
REFUSALS = 5
LOGS = Path(".run/logs")


@contextlib.asynccontextmanager
async def client_of(
    stack: Stack, offset: str, node_id: int, clock_file: Path | None = None
) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client of one more gateway, its clock offset by ``offset`` (or as
    ``clock_file`` says at each reading)."""
    log = LOGS / f"gateway-skew-{node_id}.log"
    gateway = extra_gateway(
        stack,
        port=free_port(),
        node_id=node_id,
        offset=skew(offset),
        log=log,
        clock_file=clock_file,
    )
    async with (
        gateway as url,
        httpx.AsyncClient(base_url=url, headers=headers(), timeout=30) as http,
    ):
        yield http


@dataclass
class History:
    """The writes acknowledged to one customer, in the order the client saw them."""

    customer_id: str
    acknowledged: list[dict[str, Any]] = field(default_factory=list)
    fields: dict[str, Any] | None = None

    def final(self) -> Expected:
        last = self.acknowledged[-1]
        return Expected(
            customer_id=self.customer_id,
            version=last["version"],
            deleted=self.fields is None,
            fields=self.fields,
            command_id=last["command_id"],
            earlier=frozenset(a["command_id"] for a in self.acknowledged[:-1]),
        )


async def acknowledged(
    via: httpx.AsyncClient, method: str, path: str, body: dict[str, Any] | None
) -> dict[str, Any]:
    """Send a write until it is acknowledged. A 503 (the machine too busy to read every region
    in time for a PATCH's merge, say) took nothing, so it is sent again, as a client would;
    anything else but a 202 fails the test."""
    for _ in range(REFUSALS):
        response = await via.request(method, path, json=body)
        if response.status_code != 503:
            break
        await asyncio.sleep(float(response.headers.get("Retry-After", 1)))
    assert response.status_code == 202, response.text
    answer: dict[str, Any] = response.json()
    return answer


@pytest.mark.parametrize("offset", ["0", "-5ms", "-30ms", "-10s", "-1d", "+1d"])
async def test_the_second_of_two_sequential_writes_wins_whatever_the_clock(
    env: Env, stack: Stack, offset: str
) -> None:
    """Each pair: a PUT through one gateway, its 202, then a PUT through the other. A gateway
    behind takes the second write (its version is the lower); one ahead takes the first."""
    behind = not offset.startswith("+")
    histories = [History(uuid.uuid4().hex) for _ in range(PAIRS)]
    async with client_of(stack, offset, node_id=9) as skewed:
        first_via, second_via = (env.http, skewed) if behind else (skewed, env.http)
        limit = asyncio.Semaphore(AT_ONCE)

        async def pair(history: History) -> None:
            body = customer()
            body.pop("customer_id")
            async with limit:
                for city, via in (("first", first_via), ("second", second_via)):
                    history.fields = {**body, "customer_city": city}
                    path = f"/v1/customers/{history.customer_id}"
                    answer = await acknowledged(via, "PUT", path, history.fields)
                    history.acknowledged.append(answer)

        await asyncio.gather(*(pair(h) for h in histories))
    report = await env.settle([h.final() for h in histories])
    assert report.clean, f"{skew(offset).label}: {report}"
    assert report.overtaken == 0


async def test_writes_through_alternating_skewed_gateways_end_as_the_last_acknowledged(
    env: Env, stack: Stack
) -> None:
    """Upserts, PATCHes, moves between regions and deletes, each sent once the one before was
    acknowledged, through the stack's gateway, one 50 ms behind and one 10 s behind in turn."""
    homes = [1310, 45000, 80000]  # region_1, region_2, region_3
    async with (
        client_of(stack, "-50ms", node_id=10) as fifty,
        client_of(stack, "-10s", node_id=11) as ten,
    ):
        gateways = [env.http, fifty, ten]
        limit = asyncio.Semaphore(AT_ONCE)

        async def life(number: int) -> History:
            async with limit:
                return await steps_of(number)

        async def steps_of(number: int) -> History:
            history = History(uuid.uuid4().hex)
            path = f"/v1/customers/{history.customer_id}"
            body = customer()
            body.pop("customer_id")
            steps: list[tuple[str, dict[str, Any] | None]] = [
                ("PUT", {**body, "customer_zip_code_prefix": homes[number % 3]}),
                ("PATCH", {"customer_city": "campinas"}),
                ("PUT", {**body, "customer_zip_code_prefix": homes[(number + 1) % 3]}),
                ("DELETE", None),
                ("PUT", {**body, "customer_zip_code_prefix": homes[(number + 2) % 3]}),
                ("PATCH", {"customer_city": "santos"}),
            ]
            for step, (method, change) in enumerate(steps):
                via = gateways[(number + step) % len(gateways)]
                # A PATCH merges into what the stores hold: the write before it is awaited.
                wait = step in (0, 1, 4, 5)
                answer = await acknowledged(
                    via, method, path + ("?wait=applied" if wait else ""), change
                )
                if wait:
                    assert answer["applied"] is True, answer
                history.acknowledged.append(answer)
                if method == "DELETE":
                    history.fields = None
                elif method == "PUT":
                    history.fields = change
                else:
                    assert history.fields is not None
                    assert change is not None
                    history.fields = {**history.fields, **change}
            return history

        histories = await asyncio.gather(*(life(n) for n in range(24)))
    report = await env.settle([h.final() for h in histories])
    assert report.clean, report


async def test_a_gateway_whose_clock_steps_back_while_it_runs_keeps_acknowledgement_order(
    env: Env, stack: Stack, tmp_path: Path
) -> None:
    """An NTP step of 10 s back between two rounds of sequential pairs, through the stack's
    gateway and then the stepped one."""
    clock = tmp_path / "offset"
    clock.write_text("+0\n")
    histories = [History(uuid.uuid4().hex) for _ in range(40)]
    async with client_of(stack, "0", node_id=12, clock_file=clock) as stepped:
        for step in ("+0", "-10"):
            clock.write_text(f"{step}\n")
            for history in histories:
                body = customer()
                body.pop("customer_id")
                for city, via in ((f"first {step}", env.http), (f"second {step}", stepped)):
                    history.fields = {**body, "customer_city": city}
                    path = f"/v1/customers/{history.customer_id}"
                    history.acknowledged.append(
                        await acknowledged(via, "PUT", path, history.fields)
                    )
    report = await env.settle([h.final() for h in histories])
    assert report.clean, report
