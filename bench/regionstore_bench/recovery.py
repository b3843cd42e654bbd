"""Scenario 4: a region is down while writes arrive, then comes back and its backlog drains."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from .data import Customers, target_counts
from .env import BenchEnv, placements
from .ingest import (
    Accepts,
    applied_counters,
    audit_counts,
    post_batches,
)
from .plan import Plan
from .probes import total
from .stats import rate

log = logging.getLogger("regionstore_bench")

DRAINED = "regionstore_drained_messages_total"
POLL_S = 0.2


async def _wait_parked(env: BenchEnv, region: str, at_least: int, timeout_s: float) -> int:
    """Wait until the region's backlog holds the parked writes and the consumers caught up."""
    deadline = time.monotonic() + timeout_s
    last_log = time.monotonic()
    while True:
        backlog = (await env.pending())[region]
        counters = await applied_counters(env)
        caught_up = counters["writer_lag"] == 0 and counters["replicator_lag"] == 0
        if (backlog >= at_least and caught_up) or time.monotonic() > deadline:
            return backlog
        if time.monotonic() - last_log > 5:
            last_log = time.monotonic()
            log.info("parking: %s backlog %s/%s", region, f"{backlog:,}", f"{at_least:,}")
        await asyncio.sleep(0.5)


async def _drained(env: BenchEnv, region: str) -> float:
    return total(await env.metrics("recovery"), DRAINED, region=region)


async def recovery(env: BenchEnv, plan: Plan, customers: Customers) -> dict[str, Any]:
    """Flip the region holding most records down, write, flip it back, time the drain, audit."""
    held = placements(customers.bodies, env.regions)
    region = max(held, key=lambda r: held[r])
    parked_expected = target_counts(customers.bodies, env.regions)[0][region]
    before = (await env.pending())[region]
    log.info(
        "recovery: %s unavailable while %s writes arrive", region, f"{len(customers.bodies):,}"
    )
    await env.set_status(region, "unavailable")
    accepts = Accepts(customers.prefix)
    try:
        accept_seconds = await post_batches(
            env, customers.chunks(plan.batch_size), plan.batch_concurrency, accepts
        )
        backlog = await _wait_parked(env, region, before + parked_expected, plan.apply_timeout_s)
        drained_before = await _drained(env, region)
        holding = await env.collections[region].estimated_document_count()
        log.info("recovery: %s backlog %s; flipping back", region, f"{backlog:,}")
        flipped = time.perf_counter()
        await env.set_status(region, "available")
        timeline: list[tuple[float, float, int]] = []
        deadline = flipped + plan.apply_timeout_s
        while True:
            now = time.perf_counter()
            pending = (await env.pending())[region]
            drained = await _drained(env, region) - drained_before
            timeline.append((now - flipped, drained, pending))
            if pending == 0 or now > deadline:
                break
            await asyncio.sleep(POLL_S)
        drain_seconds = timeline[-1][0]
    finally:
        await env.set_status(region, "available")
    report, _ = await env.audit(accepts.expected.values(), accepts.prefix)
    settle_deadline = time.perf_counter() + plan.apply_timeout_s
    while not report.clean and time.perf_counter() < settle_deadline:
        await asyncio.sleep(1)
        report, _ = await env.audit(accepts.expected.values(), accepts.prefix)
    first_progress = next((t for t, d, _ in timeline if d > 0), drain_seconds)
    last_idle = max((t for t, d, _ in timeline if d <= 0), default=0.0)
    steady_seconds = drain_seconds - last_idle
    log.info(
        "recovery: %s drained %s in %.1fs (%.0f/s): %s",
        region,
        f"{backlog:,}",
        drain_seconds,
        rate(backlog, drain_seconds),
        report,
    )
    return {
        "region": region,
        "writes": float(len(customers.bodies)),
        "accepted": float(len(accepts.expected)),
        "failed": float(accepts.failed),
        "accepted_per_s": rate(len(accepts.expected), accept_seconds),
        "parked": float(backlog - before),
        "backlog_at_flip": float(backlog),
        "store_documents_at_flip": float(holding),
        "drain_seconds": drain_seconds,
        "drain_per_s": rate(backlog, drain_seconds),
        "first_replay_after_s": first_progress,
        "steady_drain_per_s": rate(backlog, steady_seconds),
        "drain_method": (
            "time from the flip to available until GET /v1/regions reports pending 0 for the "
            f"region, polled every {POLL_S}s; steady rate excludes the time before recovery's "
            "regionstore_drained_messages_total first moved"
        ),
        "timeline": [[t, d, float(p)] for t, d, p in timeline[:: max(1, len(timeline) // 60)]],
        "audit": audit_counts(report),
    }
