"""Two of each service (make up SCALE=2): both gateways and both of each consumer do work.

Each gateway has its own clock id, so the versions coming back through the balancer carry two
node ids, before and after a gateway is killed and restarted. Both
writers and both replicators apply a share of the commands (each owns some partitions), and the
audit finds every accepted write exactly once where it belongs.
"""

from __future__ import annotations

import asyncio
import signal
from typing import Any

import httpx
import pytest

from regionstore_bench.scaleout import applied_by_role
from regionstore_shared.clock import NODE_BITS
from regionstore_shared.ports import port, service_url
from tests.regionstore_env import Env, customer, env

pytestmark = [pytest.mark.integration, pytest.mark.faults, pytest.mark.scale]
__all__ = ["env"]

WITHIN_S = 60.0
CONSUMERS = ("WRITER_PORT", "WRITER_2_PORT", "REPLICATOR_PORT", "REPLICATOR_2_PORT")


def node_of(version: int) -> int:
    return version & ((1 << NODE_BITS) - 1)


async def write_many(env: Env, count: int) -> set[int]:
    """``count`` writes through the balancer, four at a time; the node ids of their versions."""
    answers = []
    for start in range(0, count, 4):
        batch = [env.http.post("/v1/customers", json=customer()) for _ in range(start, start + 4)]
        answers += await asyncio.gather(*batch)
    refused = [f"{a.status_code} {a.text[:200]}" for a in answers if a.status_code != 202]
    assert refused == []
    for answer in answers:
        env.remember(answer.json())
    return {node_of(answer.json()["version"]) for answer in answers}


async def writes_from_both(env: Env) -> tuple[int, set[int]]:
    """Write until versions from two node ids came back (the balancer checks each gateway once
    a second, so it may send everything to one for a moment); how many writes, and the ids."""
    deadline = asyncio.get_running_loop().time() + WITHIN_S
    written, nodes = 0, set()
    while len(nodes) < 2 and asyncio.get_running_loop().time() < deadline:
        nodes |= await write_many(env, 20)
        written += 20
    return written, nodes


async def applied(port_var: str) -> float:
    async with httpx.AsyncClient(
        base_url=service_url(port(port_var)), follow_redirects=True
    ) as client:
        metrics = (await client.get("/metrics")).text
    return sum(applied_by_role(metrics).values())


async def test_two_gateways_and_two_of_each_consumer_share_the_work(env: Env, stack: Any) -> None:
    processes = await stack.processes()
    if "gateway_2" not in processes:
        pytest.fail("needs the scaled stack (make up SCALE=2)")
    before = {var: await applied(var) for var in CONSUMERS}
    first, nodes = await writes_from_both(env)
    assert len(nodes) == 2, f"versions came from node ids {nodes}"
    pid = await stack.kill("gateway_2", signal.SIGKILL)
    await stack.wait_ready("gateway_2", not_pid=pid)
    # The restarted gateway's id is still its own, never the other gateway's.
    second, after_restart = await writes_from_both(env)
    assert len(after_restart) == 2, f"versions came from node ids {after_restart}"
    report = await env.settle()
    assert report.checked == first + second
    assert report.clean, report
    shares = {var: await applied(var) - before[var] for var in CONSUMERS}
    assert all(share > 0 for share in shares.values()), shares
