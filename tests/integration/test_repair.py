"""Anti-entropy repair on the real stack: a region wiped and started empty, and one restored
from an old backup, are brought back whole by ``regionstore repair``.

region_2's store processes (its FerretDB and its PostgreSQL) are stopped, its data directory is
deleted (or replaced by a copy taken earlier), and both are started again. ``repair`` then finds
every copy region_2 lacks or holds wrongly, publishes the newest versions again, tombstones
what must not be live there, and the audit of every acknowledged write is clean.

While a test runs it holds the background repair's lease, so the recovery service's own pass
stays out of the counts the test asserts (two repairs at once would be harmless, not countable).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from regionstore_recovery.detection import Lease
from regionstore_recovery.settings import RepairSettings
from regionstore_shared.clients import redis_client
from regionstore_shared.documents import DELETED, HOME
from regionstore_tools.cli import app
from tests.regionstore_env import Env, customer, env
from tests.stack import Stack

# A pass reads every region the stack holds, other tests' customers included: the suite's
# 300 s per test is too short once the stack holds about 100,000 customers on a busy machine.
pytestmark = [pytest.mark.integration, pytest.mark.faults, pytest.mark.timeout(900)]
__all__ = ["env"]

REGION = "region_2"
POSTGRES = f"{REGION}_pg"
# The customers region_2 must hold: its own, and region_3's, whose replica it is.
HELD_HOMES = ("region_2", "region_3")
ZIPS = ((1310, "SP"), (45000, "BA"), (75000, "GO"))
CUSTOMERS = 3000
BACK_WITHIN_S = 120.0
runner = CliRunner()


def _data_dir() -> Path:
    return Path(os.environ.get("RUN_DIR", ".run")) / "stores" / REGION / "pg"


@contextlib.asynccontextmanager
async def _background_repair_held(env: Env) -> AsyncIterator[None]:
    """Hold the background repair's lease for the test's length."""
    redis = redis_client(env.settings.redis, "tests")
    config = RepairSettings()
    lease = Lease(redis, config.lease_key, 900.0)
    deadline = time.monotonic() + config.lease_ttl_s + 30
    # A pass under way renews the lease after every bucket; it stops once it cannot.
    while not await lease.hold():
        assert time.monotonic() < deadline, "the background repair never let its lease go"
        await asyncio.sleep(0.5)
    try:
        yield
    finally:
        await lease.release()
        await redis.aclose()


async def _load(env: Env, count: int) -> list[dict[str, Any]]:
    """``count`` new customers over the three regions, in batches; every one acknowledged."""
    bodies = [
        customer(zip_prefix=ZIPS[i % 3][0], state=ZIPS[i % 3][1], city=f"repair {i % 7}")
        for i in range(count)
    ]
    await _send(env, [{"customer": body} for body in bodies])
    return bodies


async def _send(env: Env, items: list[dict[str, Any]]) -> None:
    for start in range(0, len(items), 500):
        chunk = items[start : start + 500]
        response = await env.http.post("/v1/customers:batch", json={"items": chunk})
        assert response.status_code == 202, response.text
        for item, result in zip(chunk, response.json()["results"], strict=True):
            assert result["status"] == "accepted", result
            env.remember(result, deleted=item.get("op") == "delete")


async def _quiet(env: Env) -> None:
    """Every command applied, nothing parked, the audit of the acknowledged writes clean."""
    await env.consumed()
    deadline = time.monotonic() + BACK_WITHIN_S
    while any((await env.pending()).values()):
        assert time.monotonic() < deadline, f"still parked: {await env.pending()}"
        await asyncio.sleep(0.5)
    report = await env.settle()
    assert report.clean, report


async def _restart_with(stack: Stack, env: Env, data: Path | None) -> None:
    """Stop region_2's store, replace its data directory by ``data`` (None: delete it, so the
    store starts empty), and start it again; wait until the region is available."""
    await stack.stop(REGION)
    await stack.stop(POSTGRES)
    shutil.rmtree(_data_dir())
    if data is not None:
        await _copy(data, _data_dir())
    await stack.start(POSTGRES)
    await stack.start(REGION)
    deadline = time.monotonic() + BACK_WITHIN_S
    while (status := await _status(env)) != "available":
        assert time.monotonic() < deadline, f"{REGION} is {status}, not available"
        await asyncio.sleep(0.5)


async def _copy(source: Path, target: Path) -> None:
    """Copy a data directory with its owners and modes (PostgreSQL runs as its own user)."""
    process = await asyncio.create_subprocess_exec("cp", "-a", str(source), str(target))
    assert await process.wait() == 0, f"cp -a {source} {target} failed"


async def _status(env: Env) -> str:
    response = await env.http.get("/v1/regions")
    (region,) = [r for r in response.json()["regions"] if r["name"] == REGION]
    return str(region["status"])


async def _repair(*args: str) -> dict[str, Any]:
    """``regionstore repair --json`` (in a thread: it runs its own event loop)."""
    result = await asyncio.to_thread(
        runner.invoke, app, ["repair", "--json", "--grace", "0", *args]
    )
    assert result.exit_code in (0, 1), result.output
    body: dict[str, Any] = json.loads(result.stdout)
    return body


def _found(report: dict[str, Any], kind: str) -> int:
    return int(report["found"].get(REGION, {}).get(kind, 0))


async def test_a_wiped_region_is_brought_back_whole(env: Env, stack: Stack) -> None:
    async with _background_repair_held(env):
        bodies = await _load(env, CUSTOMERS)
        await _quiet(env)
        held = await env.collections[REGION].count_documents(
            {DELETED: False, HOME: {"$in": list(HELD_HOMES)}}
        )
        ours = sum(1 for e in env.finals.values() if e.home in HELD_HOMES)
        assert ours == 2 * len(bodies) // 3

        await _restart_with(stack, env, None)
        assert await env.collections[REGION].estimated_document_count() == 0
        lost = await env.settle(within_s=0)
        assert lost.lost == ours

        # Every customer region_2 held is missing now: the test's own, and those other tests
        # left in the stack (as many as it held, when they left the stores consistent).
        dry = await _repair("--dry-run", "--region", REGION)
        assert _found(dry, "missing") >= ours
        assert dry["republished"] == 0
        started = time.monotonic()
        done = await _repair("--region", REGION)
        report = await env.settle()
        took_s = time.monotonic() - started

    assert _found(done, "missing") == _found(dry, "missing")
    outcome = (done["republished"], done["failed"], done["unrepairable"], done["whole"])
    assert outcome == (_found(done, "missing"), 0, 0, True), done
    assert report.clean, report
    print(
        f"\nwiped region: {done['republished']} customers republished into {REGION} by "
        f"repair (it held {held} live before the wipe), "
        f"{len(env.finals)} audited clean {took_s:.1f} s after repair started "
        f"(the pass itself {done['seconds']:.1f} s, {done['buckets']} buckets)"
    )


async def test_a_region_restored_from_an_old_backup_is_repaired(
    env: Env, stack: Stack, tmp_path: Path
) -> None:
    async with _background_repair_held(env):
        bodies = await _load(env, CUSTOMERS // 3)
        await _quiet(env)
        backup = tmp_path / "pg"
        await stack.stop(REGION)
        await stack.stop(POSTGRES)
        await _copy(_data_dir(), backup)
        await stack.start(POSTGRES)
        await stack.start(REGION)

        # After the backup: renamed (older in region_2), moved (into region_2's placement:
        # missing; out of it: outside), deleted (live after a delete), and new customers.
        renamed = [{**b, "customer_city": "renamed"} for b in bodies[0:90]]
        moved = [
            {**b, "customer_zip_code_prefix": 75000 if i % 2 else 1310, "customer_state": "GO"}
            for i, b in enumerate(bodies[90:180])
        ]
        deleted = [{"op": "delete", "customer_id": b["customer_id"]} for b in bodies[180:270]]
        await _send(env, [{"customer": b} for b in renamed + moved] + deleted)
        await _load(env, 90)
        await _quiet(env)

        await _restart_with(stack, env, backup)
        stale = await env.settle(within_s=0)
        assert not stale.clean

        done = await _repair()
        report = await env.settle()

    for kind in ("missing", "older", "outside", "deleted"):
        assert _found(done, kind) > 0, (kind, done["found"])
    assert done["republished"] > 0
    assert done["tombstoned"] >= _found(done, "outside") + _found(done, "deleted")
    assert (done["failed"], done["unrepairable"], done["whole"]) == (0, 0, True), done
    assert report.clean, report
