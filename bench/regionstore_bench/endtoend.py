"""Scenario 8: what a user gets, with every process running.

The gateway-alone rounds (scenario 2) stop the writers and replicators; here nothing is
stopped. The step runs :mod:`.cost`'s rounds with the plan's lengths: the idle round, single
creates at 20, 100 and 1,000 writes/s, then sustained single creates from 32 connections as
fast as answered (the saturation round), each until the writer's and the replicator's work is
applied and audited. With a reference URL it then drives the original system's app
(:mod:`.reference`) with the same client, connections and time.

What the run measured elsewhere with every process running is restated beside it
(:func:`restate`), not measured twice: the batch ingest (scenario 3 never stops anything), the
drain of a parked backlog while live writes are applied (scenario 7, flat out), and the bare
endpoint's rate (scenario 2; it writes nothing, so the consumers idle whether running or not).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from .cost import RATES, SATURATION_CONCURRENCY, cost_rounds, writes_for
from .data import Customers
from .env import BenchEnv, log
from .ingest import unmetered_key
from .plan import Plan
from .reference import not_run, reference_round

SATURATION_PER_S = 3000
"""Customers generated per second of the saturation round: more than the gateway accepts
alone (2,721/s on the 2-core machine), so the round ends on time, not for want of bodies."""
REFERENCE_PER_S = 1000
"""Customers generated per second of the reference round (the original app did about 250/s)."""


def customers_needed(round_s: float, sustained_s: float) -> int:
    """Customers the fixed-rate rounds and the saturation round may send, together."""
    fixed = sum(writes_for(r, round_s) for r in RATES)
    return fixed + max(1, round(SATURATION_PER_S * sustained_s))


def reference_needed(sustained_s: float) -> int:
    """Customers the reference round may send."""
    return max(1, round(REFERENCE_PER_S * sustained_s))


def singles_summary(saturation: Mapping[str, Any]) -> dict[str, Any]:
    """The saturation round seen as the sustained single-create workload."""
    return {
        "concurrency": float(SATURATION_CONCURRENCY),
        "seconds": saturation["seconds"],
        "accepted": saturation["accepted"],
        "failed": saturation["failed"],
        "accepted_per_s": saturation["accepted_per_s"],
        "applied_per_s": saturation["applied_per_s"],
        "accept_to_applied_p50_ms": saturation["accept_to_applied_p50_s"] * 1000,
        "accept_to_applied_p99_ms": saturation["accept_to_applied_p99_s"] * 1000,
        "audit": saturation["audit"],
    }


async def end_to_end(
    env: BenchEnv,
    plan: Plan,
    costs: Customers,
    reference: Customers,
    pids: Mapping[str, int],
    reference_url: str | None,
) -> dict[str, Any]:
    """The cost rounds and the sustained singles; then the reference app, when given."""
    # A key of its own: the bench's is limited to 1,000 requests/s, which the saturation round
    # would measure instead of the stack.
    async with unmetered_key() as key:
        result = await cost_rounds(
            env,
            costs,
            pids,
            seconds=plan.e2e_round_s,
            timeout_s=plan.apply_timeout_s,
            idle_s=plan.e2e_idle_s,
            saturation_s=plan.e2e_sustained_s,
            key=key,
        )
    result["singles"] = singles_summary(result["rounds"]["saturation"])
    if reference_url:
        log.info(
            "end to end: the original app at %s for %.0f s", reference_url, plan.e2e_sustained_s
        )
        result["reference"] = await reference_round(
            reference_url,
            reference.bodies,
            concurrency=SATURATION_CONCURRENCY,
            seconds=plan.e2e_sustained_s,
        )
    else:
        result["reference"] = not_run()
    return result


def _ratio(measured: float, reference: float) -> float:
    return measured / reference if reference and not math.isnan(reference) else math.nan


def restate(results: Mapping[str, Any]) -> dict[str, float]:
    """This run's other figures in end-to-end terms, beside the end-to-end step's own.

    NaN where a figure is missing (results of a run before it was measured)."""
    e2e = results["end_to_end"]
    singles = e2e["singles"]
    batch = results["ingest_batch"]
    insert = float(results["baselines"]["insert_many"]["docs_per_s"])
    bare = float(results["ingest_single"].get("bare_per_s", math.nan))
    unpaced = results.get("paced_drain", {}).get("modes", {}).get("unpaced", {})
    drain = float(unpaced.get("drain_per_s", math.nan))
    reference = e2e["reference"]
    reference_rate = float(reference["requests_per_s"]) if reference["run"] else math.nan
    return {
        "batch_accepted_per_s": float(batch["accepted_per_s"]),
        "batch_applied_per_s": float(batch["applied_per_s"]),
        "batch_accept_to_applied_p50_ms": float(batch["apply_latency"]["both_p50_ms"]),
        "batch_accept_to_applied_p99_ms": float(batch["apply_latency"]["both_p99_ms"]),
        "single_accepted_per_s": float(singles["accepted_per_s"]),
        "bare_per_s": bare,
        "single_accepted_to_bare": _ratio(singles["accepted_per_s"], bare),
        "drain_under_live_writes_per_s": drain,
        "live_writes_per_s": float(unpaced.get("live_rate_per_s", math.nan)),
        "insert_many_docs_per_s": insert,
        "drain_under_live_writes_to_insert_many": _ratio(drain, insert),
        "reference_requests_per_s": reference_rate,
        "single_applied_to_reference": _ratio(singles["applied_per_s"], reference_rate),
    }
