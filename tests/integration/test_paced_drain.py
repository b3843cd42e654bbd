"""A paced drain on the real stack: every parked write is replayed while live writes go to the
same region, and the audit is clean.

Recovery paces its drains by default (REGIONSTORE_PACING__ENABLED); the test checks from its
metrics that this drain was paced: one store-delay sample per batch of at most
``batch_records`` commands.
"""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from regionstore_recovery.pacing import PacingSettings
from tests.regionstore_env import Env, customer, env

pytestmark = pytest.mark.integration
__all__ = ["env"]

REGION = "region_2"
PARKED = 1500
LIVE = 200


async def _paced_batches(recovery_url: str) -> float:
    """How many batches recovery's paced drains of the region have written so far."""
    async with httpx.AsyncClient(base_url=recovery_url, timeout=10) as http:
        text = (await http.get("/metrics")).text
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "regionstore_drain_store_delay_seconds_count"
        and sample.labels.get("region") == REGION
    )


async def _post_batch(env: Env, bodies: list[dict[str, Any]]) -> None:
    response = await env.http.post(
        "/v1/customers:batch", json={"items": [{"customer": b} for b in bodies]}
    )
    assert response.status_code == 202, response.text
    for result in response.json()["results"]:
        assert result["status"] == "accepted", result
        env.remember(result)


async def _live_writes(env: Env, bodies: list[dict[str, Any]]) -> None:
    gate = asyncio.Semaphore(4)

    async def one(body: dict[str, Any]) -> None:
        async with gate:
            await env.write("POST", "/v1/customers", json=body)

    await asyncio.gather(*(one(body) for body in bodies))


async def test_a_paced_drain_replays_every_parked_write_under_live_writes(
    env: Env, stack: Any
) -> None:
    recovery_url = stack.endpoints.services["recovery"]
    batches_before = await _paced_batches(recovery_url)
    await env.set_status(REGION, "unavailable")
    parked = [customer(zip_prefix=45000 + i, state="BA", city="salvador") for i in range(PARKED)]
    for start in range(0, PARKED, 500):
        await _post_batch(env, parked[start : start + 500])
    assert await env.wait_pending(REGION, at_least=PARKED) >= PARKED

    live = [customer(zip_prefix=46000 + i, state="BA", city="salvador") for i in range(LIVE)]
    writing = asyncio.create_task(_live_writes(env, live))
    await env.set_status(REGION, "available")
    await writing

    report = await env.settle()
    assert report.checked == PARKED + LIVE
    assert report.clean, report
    assert (await env.pending())[REGION] == 0
    # Paced: batches of at most batch_records, each timed against the store's delay.
    paced = await _paced_batches(recovery_url) - batches_before
    assert paced >= PARKED / PacingSettings().batch_records
