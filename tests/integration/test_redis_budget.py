"""The control plane cannot be starved: idempotency records fill only their own Redis's budget.

With the idempotency Redis filled to its limit with records (its maxmemory lowered for the test,
so the fill takes seconds, then put back), a status change and a key creation still work, and a
keyed write is still taken: the oldest records are evicted to make room. With the control
plane's own Redis full (its maxmemory lowered below what it holds), a status change is refused
and says it did not change, and the key tool says nothing was changed, instead of "may or may
not have changed".
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Iterator

import httpx
import pytest
from redis.asyncio import Redis

from regionstore_gateway.adapters.idempotency import IdempotencyStore, Record, request_hash
from regionstore_gateway.services.publishing import pending
from regionstore_gateway.settings import GatewaySettings
from regionstore_shared.clients import redis_client
from regionstore_shared.domain import upsert_command
from regionstore_shared.schemas import Customer
from tests.keys import headers, server_secret
from tests.regionstore_env import customer
from tests.stack import REPO_ROOT, Stack

pytestmark = pytest.mark.integration

# What the records may hold above what the idempotency Redis holds now, for the test.
BUDGET_BYTES = 4 * 1024 * 1024
FILL_CHUNK = 1000
FILL_AT_MOST = 200_000
REGION = "region_3"


@contextlib.asynccontextmanager
async def maxmemory(redis: Redis, limit: int) -> AsyncIterator[None]:
    """The instance's maxmemory set to ``limit`` for the body, then put back."""
    before = (await memory(redis))["maxmemory"]
    await redis.config_set("maxmemory", limit)
    try:
        yield
    finally:
        await redis.config_set("maxmemory", before)


async def memory(redis: Redis) -> dict[str, int]:
    info = await redis.info("memory", "stats")
    return {name: int(info[name]) for name in ("used_memory", "maxmemory", "evicted_keys")}


def records(settings: GatewaySettings) -> Iterator[tuple[str, Record]]:
    """Idempotency keys with records as a gateway keeps them for keyed writes."""
    clock_version = 1 << 40
    while True:
        body = customer()
        command = upsert_command(
            Customer.model_validate(body),
            regions=settings.region_map,
            version=clock_version,
            issued_at_ms=0,
        )
        clock_version += 64
        yield uuid.uuid4().hex, pending(request_hash("test", customer=body), command)


def keys_create(settings_env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """``python -m regionstore_gateway.keys create`` against the stack, as ``make key`` runs it."""
    return subprocess.run(
        [sys.executable, "-m", "regionstore_gateway.keys", "create", "--role", "reader"],
        cwd=REPO_ROOT,
        env=settings_env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.fixture
def keys_env() -> dict[str, str]:
    return {**os.environ, "REGIONSTORE_AUTH__SECRET": server_secret()}


@pytest.fixture
async def records_redis() -> AsyncIterator[Redis]:
    redis = redis_client(GatewaySettings().idempotency_redis, "tests", binary=True)
    yield redis
    await redis.aclose()


@pytest.fixture
async def control_redis() -> AsyncIterator[Redis]:
    redis = redis_client(GatewaySettings().redis, "tests")
    yield redis
    await redis.aclose()


async def status_of(http: httpx.AsyncClient, region: str) -> str:
    listed = (await http.get("/v1/regions")).json()["regions"]
    status: str = next(r["status"] for r in listed if r["name"] == region)
    return status


async def test_records_filling_their_budget_leave_statuses_and_keys_writable(
    stack: Stack, records_redis: Redis, control_redis: Redis, keys_env: dict[str, str]
) -> None:
    settings = GatewaySettings()
    prefix = f"test-budget:{uuid.uuid4().hex}:"
    store = IdempotencyStore(records_redis, prefix=prefix, ttl_s=settings.api.idempotency_ttl_s)
    control_before = int((await control_redis.info("memory"))["used_memory"])
    start = await memory(records_redis)
    source = records(settings)
    filled = 0
    try:
        async with maxmemory(records_redis, start["used_memory"] + BUDGET_BYTES):
            # Until Redis evicts to take more: the budget is full.
            while (await memory(records_redis))["evicted_keys"] == start["evicted_keys"]:
                assert filled < FILL_AT_MOST, f"{filled} records and nothing evicted"
                chunk = [next(source) for _ in range(FILL_CHUNK)]
                await store.claim(chunk)
                filled += FILL_CHUNK
            full = await memory(records_redis)
            assert full["used_memory"] >= full["maxmemory"] * 0.95, full

            async with httpx.AsyncClient(
                base_url=stack.gateway_url, headers=headers(), timeout=30
            ) as http:
                down = await http.put(
                    f"/v1/regions/{REGION}/status", json={"status": "unavailable"}
                )
                up = await http.put(f"/v1/regions/{REGION}/status", json={"status": "available"})
                assert (down.status_code, up.status_code) == (200, 200), (down.text, up.text)
                assert await status_of(http, REGION) == "available"

                created = keys_create(keys_env)
                assert created.returncode == 0, created.stderr
                assert created.stdout.strip().startswith("rsk_")

                # A keyed write still gets a record (an old one makes room), and its retry
                # is answered from it.
                body = customer()
                key = {"Idempotency-Key": f"budget-{uuid.uuid4().hex}"}
                first = await http.post("/v1/customers", json=body, headers=key)
                again = await http.post("/v1/customers", json=body, headers=key)
                assert (first.status_code, again.status_code) == (202, 202), again.text
                assert again.json() == first.json()
                assert again.headers.get("Idempotent-Replayed") == "true"

            assert (await memory(records_redis))["evicted_keys"] > start["evicted_keys"]
        # The records went to their own Redis: the control plane's did not grow with them.
        control_after = int((await control_redis.info("memory"))["used_memory"])
        assert control_after - control_before < BUDGET_BYTES / 4
        assert [k async for k in control_redis.scan_iter(match=f"{prefix}*", count=1000)] == []
    finally:
        async for name in records_redis.scan_iter(match=f"{prefix}*", count=10_000):
            await records_redis.unlink(name)


async def test_a_full_control_plane_refuses_a_status_change_and_says_nothing_changed(
    stack: Stack, control_redis: Redis, keys_env: dict[str, str]
) -> None:
    async with httpx.AsyncClient(base_url=stack.gateway_url, headers=headers(), timeout=30) as http:
        assert await status_of(http, REGION) == "available"
        async with maxmemory(control_redis, 1):  # below what it holds: it refuses every write
            refused = await http.put(f"/v1/regions/{REGION}/status", json={"status": "unavailable"})
            created = keys_create(keys_env)
        assert refused.status_code == 503, refused.text
        assert refused.headers["Retry-After"]
        detail: str = refused.json()["detail"]
        assert detail.startswith("node status store refused the change; the status was not changed")
        assert "maxmemory" in detail
        assert "may or may not" not in detail
        assert await status_of(http, REGION) == "available"
        assert created.returncode == 1
        assert created.stderr.startswith("error: Redis refused the command"), created.stderr
        assert "nothing was changed" in created.stderr
        assert "Traceback" not in created.stderr
