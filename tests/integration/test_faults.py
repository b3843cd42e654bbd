"""Real faults on the real stack: stopped stores, killed consumers, a restarted broker.

Every acknowledged write must end exactly once in its home and replica regions: the audit
counts lost, duplicated, stale and resurrected customers, and all must be zero.
"""

from __future__ import annotations

import asyncio
import signal
from typing import Any

import pytest

from regionstore_testing.audit import wait_for_clean
from tests.regionstore_env import Env, customer, env, new_id

pytestmark = [pytest.mark.integration, pytest.mark.faults]
__all__ = ["env"]


async def _post_all(env: Env, bodies: list[dict[str, Any]], concurrency: int = 16) -> None:
    gate = asyncio.Semaphore(concurrency)

    async def one(body: dict[str, Any]) -> None:
        async with gate:
            await env.write("POST", "/v1/customers", json=body)

    await asyncio.gather(*(one(body) for body in bodies))


async def _batch(env: Env, bodies: list[dict[str, Any]]) -> None:
    response = await env.http.post(
        "/v1/customers:batch", json={"items": [{"customer": b} for b in bodies]}
    )
    assert response.status_code == 202, response.text
    for result in response.json()["results"]:
        assert result["status"] == "accepted", result
        env.remember(result)


async def test_a_stopped_store_parks_writes_until_it_returns(env: Env, stack: Any) -> None:
    await stack.stop("region_2")
    try:
        homed_there = [customer(zip_prefix=45000, state="BA", city="salvador") for _ in range(150)]
        replicated_there = [
            customer(zip_prefix=75000, state="GO", city="goiania") for _ in range(50)
        ]
        elsewhere = [customer(zip_prefix=1310) for _ in range(50)]
        await _post_all(env, homed_there + replicated_there + elsewhere)
        parked = await env.wait_pending("region_2", at_least=200)
        assert parked >= 200
        readable = {r: c for r, c in env.collections.items() if r != "region_2"}
        settled_elsewhere = await wait_for_clean(
            [env.finals[c["customer_id"]] for c in elsewhere],
            readable,
            env.regions,
            within_s=60,
        )
        assert settled_elsewhere.clean, settled_elsewhere  # the live regions did not wait
    finally:
        await stack.start("region_2")
    await env.set_status("region_2", "unavailable")
    await env.set_status("region_2", "available")
    report = await env.settle()
    assert report.checked == 250
    assert report.clean, report
    assert (await env.pending())["region_2"] == 0


async def test_killing_writer_and_replicator_mid_batch_loses_and_duplicates_nothing(
    env: Env, stack: Any
) -> None:
    batches = [
        [customer(zip_prefix=z) for z in range(1000 + i * 300, 1000 + i * 300 + 300)]
        + [customer(zip_prefix=40000 + z, state="BA", city="feira de santana") for z in range(300)]
        for i in range(6)
    ]
    writer_pid = await stack.pid("writer")
    replicator_pid = await stack.pid("replicator")
    await _batch(env, batches[0])
    await _batch(env, batches[1])
    await stack.kill("writer", signal.SIGKILL)
    await _batch(env, batches[2])
    await _batch(env, batches[3])
    await stack.kill("replicator", signal.SIGKILL)
    await _batch(env, batches[4])
    await _batch(env, batches[5])
    assert await stack.wait_ready("writer", not_pid=writer_pid) != writer_pid
    assert await stack.wait_ready("replicator", not_pid=replicator_pid) != replicator_pid
    report = await env.settle(within_s=180)
    assert report.checked == 3600
    assert report.clean, report


async def test_a_write_during_a_broker_outage_is_resolved_by_its_idempotency_key(
    env: Env, stack: Any
) -> None:
    before = customer()
    await env.write("POST", "/v1/customers", json=before)
    body, key = customer(), {"Idempotency-Key": new_id()}
    await stack.stop("kafka")
    try:
        unsure = await env.http.post("/v1/customers", json=body, headers=key)
    finally:
        await stack.start("kafka")
    # The customer's key is acknowledged before its command is sent (docs/personal-data.md):
    # with the broker gone, either the key could not be made durable, and nothing was sent
    # (503, a certain refusal), or the command was handed over and never acknowledged (504,
    # unknown, never "refused"). The same Idempotency-Key resolves either.
    assert unsure.status_code in (503, 504), unsure.text
    answer = unsure.json()
    assert answer["outcome"] == ("unknown" if unsure.status_code == 504 else "not_accepted")
    if unsure.status_code == 504:
        assert "Idempotency-Key" in answer["detail"]
    assert int(unsure.headers["Retry-After"]) > 0
    for name in ("gateway", "writer", "replicator", "recovery"):
        await stack.wait_ready(name)
    retried = await env.write("POST", "/v1/customers", json=body, headers=key)
    if unsure.status_code == 504:
        assert (retried["command_id"], retried["version"]) == (
            answer["command_id"],
            answer["version"],
        )
    after = [customer(zip_prefix=z) for z in (1500, 45000, 80000)]
    await _post_all(env, after)
    report = await env.settle(within_s=180)
    assert report.clean, report


async def _lag(env: Env) -> dict[str, int | None]:
    response = await env.http.get("/v1/regions")
    assert response.status_code == 200, response.text
    lag: dict[str, int | None] = response.json()["lag"]
    return lag


async def test_a_stopped_writer_shows_as_lag_until_it_catches_up(env: Env, stack: Any) -> None:
    await stack.stop("writer")
    try:
        await _post_all(env, [customer() for _ in range(30)])
        lag = await _lag(env)
        assert (lag["writer"] or 0) >= 30, lag
    finally:
        await stack.start("writer")
    await stack.wait_ready("writer")
    report = await env.settle()
    assert report.clean, report
    # The writer commits right after its batch lands: the lag reaches 0 just after the audit.
    deadline = asyncio.get_running_loop().time() + 30
    while (lag := await _lag(env))["writer"] != 0:
        assert asyncio.get_running_loop().time() < deadline, lag
        await asyncio.sleep(0.2)
