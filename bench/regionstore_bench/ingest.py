"""Scenarios 2 and 3: writes through the gateway, one customer per request or 1000 per batch.

Accepted means the gateway answered 202 (Kafka acknowledged with acks=all). Applied means the
write is present in its home and replica regions, proved by the audit; its time is taken from
the services' applied counters (they move only after a bulk write returned), confirmed by
an audit that then finds every write in place.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import httpx

from regionstore_shared.documents import APPLIED_AT, HOME
from regionstore_testing.audit import AuditReport, Expected

from .bare import bare_server, ratio_to_bare
from .data import Customers, target_counts
from .env import BenchEnv, Progress
from .plan import Plan
from .probes import bucket_delta, buckets, total
from .rawhttp import RawConnection, RawHttpError
from .snapshot import SnapshotCollection
from .stats import histogram_quantile, latency_summary, median, percentile, rate

log = logging.getLogger("regionstore_bench")

APPLIED = "regionstore_commands_applied_total"
PARKED = "regionstore_commands_parked_total"
LAG = "regionstore_apply_lag_seconds"
CONSUMER_LAG = "regionstore_consumer_lag_messages"
ROLE_OF = {"writer": "home", "replicator": "replica"}
# How often the bare rounds may cycle through a round's bodies before its time is up.
BARE_REPEATS = 50


@dataclass
class Accepts:
    """What the gateway acknowledged: final states, and when each acknowledgement arrived."""

    prefix: str
    expected: dict[str, Expected] = field(default_factory=dict)
    accepted_wall: dict[str, float] = field(default_factory=dict)
    request_seconds: list[float] = field(default_factory=list)
    rejected: int = 0
    failed: int = 0

    def accept(self, item: dict[str, Any], wall: float) -> None:
        """Remember one acknowledged upsert."""
        customer_id = item["customer_id"]
        self.expected[customer_id] = Expected(
            customer_id, item["version"], deleted=False, home=item["region"]
        )
        self.accepted_wall[customer_id] = wall


class CountedOnly(Accepts):
    """The bare endpoint's answers: counted and timed, nothing to audit."""

    def accept(self, item: dict[str, Any], wall: float) -> None:
        """Nothing was stored, so nothing is expected."""


def audit_counts(report: AuditReport) -> dict[str, float]:
    """The audit's counts as numbers for the results file."""
    return {
        "checked": float(report.checked),
        "lost": float(report.lost),
        "duplicated": float(report.duplicated),
        "stale": float(report.stale),
        "resurrected": float(report.resurrected),
    }


async def post_singles(
    env: BenchEnv,
    bodies: Sequence[dict[str, Any]],
    concurrency: int,
    accepts: Accepts,
    budget_s: float = math.inf,
    url: str | None = None,
) -> tuple[int, float]:
    """POST each customer on its own from ``concurrency`` workers, until done or out of time.

    Each worker has its own keep-alive connection (see rawhttp) to ``url``, the gateway unless
    given. Returns (requests sent, elapsed seconds).
    """
    queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    for body in bodies:
        queue.put_nowait(body)
    progress = Progress("single requests", len(bodies))
    deadline = time.perf_counter() + budget_s

    async def worker() -> None:
        async with RawConnection(url or env.urls["gateway"], env.api_key) as connection:
            while not queue.empty() and time.perf_counter() < deadline:
                body = queue.get_nowait()
                started = time.perf_counter()
                try:
                    status, answer = await connection.post_json("/v1/customers", body)
                except RawHttpError as error:
                    # Unknown whether it was accepted: not audited, counted as failed.
                    accepts.failed += 1
                    log.warning("single write failed: %s", error)
                    progress.add()
                    continue
                accepts.request_seconds.append(time.perf_counter() - started)
                if status == 202:
                    accepts.accept(answer, time.time())
                else:
                    accepts.failed += 1
                    log.warning("single write answered %s: %s", status, answer)
                progress.add()

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return progress.done, time.perf_counter() - started


async def post_batches(
    env: BenchEnv, chunks: Sequence[list[dict[str, Any]]], concurrency: int, accepts: Accepts
) -> float:
    """POST the chunks to the batch endpoint from ``concurrency`` workers; return seconds."""
    queue: asyncio.Queue[list[dict[str, Any]]] = asyncio.Queue()
    for chunk in chunks:
        queue.put_nowait(chunk)
    progress = Progress("batch items", sum(len(c) for c in chunks))

    async def worker() -> None:
        while not queue.empty():
            chunk = queue.get_nowait()
            started = time.perf_counter()
            try:
                response = await env.http.post(
                    "/v1/customers:batch", json={"items": [{"customer": c} for c in chunk]}
                )
            except httpx.TransportError as error:
                accepts.failed += len(chunk)
                log.warning("batch failed: %r", error)
                progress.add(len(chunk))
                continue
            accepts.request_seconds.append(time.perf_counter() - started)
            wall = time.time()
            if response.status_code != 202:
                accepts.failed += len(chunk)
                log.warning("batch answered %s: %s", response.status_code, response.text[:500])
                progress.add(len(chunk))
                continue
            result = response.json()
            accepts.rejected += result["rejected"]
            accepts.failed += result["failed"]
            for item in result["results"]:
                if item["status"] == "accepted":
                    accepts.accept(item, wall)
            progress.add(len(chunk))

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return time.perf_counter() - started


async def applied_counters(env: BenchEnv) -> dict[str, float]:
    """Applications (and parks) so far, per consumer service."""
    result: dict[str, float] = {}
    for service, role in ROLE_OF.items():
        samples = await env.metrics(service)
        result[service] = total(samples, APPLIED, role=role)
        result[f"{service}_parked"] = total(samples, PARKED)
        result[f"{service}_lag"] = total(samples, CONSUMER_LAG)
    return result


async def wait_applied(
    env: BenchEnv,
    accepts: Accepts,
    before: dict[str, float],
    wanted: dict[str, float],
    timeout_s: float,
) -> tuple[float, AuditReport, dict[str, SnapshotCollection]]:
    """Wait until every accepted write is in place; return (perf_counter then, audit, snapshot).

    The applied counters tell cheaply when the consumers have written as many commands as were
    sent; an audit then proves it. If the counters lie (a restart reset them, or another client
    wrote meanwhile), the audit is repeated until clean or out of time.
    """
    deadline = time.perf_counter() + timeout_s
    last_log = time.perf_counter()
    stalled_since = time.perf_counter()
    previous: dict[str, float] = {}
    while time.perf_counter() < deadline:
        now = await applied_counters(env)
        done = {s: now[s] - before[s] for s in wanted}
        stamp = time.perf_counter()
        if done != previous:
            previous, stalled_since = done, stamp
        reached = all(done[s] >= wanted[s] for s in wanted)
        # A restarted service resets its counters: then only the audit can tell.
        if reached or any(done[s] < 0 for s in wanted) or stamp - stalled_since > 10:
            report, snapshot = await env.audit(accepts.expected.values(), accepts.prefix)
            if report.clean:
                return stamp, report, snapshot
            stalled_since = time.perf_counter()
        if stamp - last_log > 5:
            last_log = stamp
            log.info(
                "applying: %s",
                ", ".join(f"{s} {done[s]:,.0f}/{wanted[s]:,.0f}" for s in wanted),
            )
        await asyncio.sleep(0.25)
    report, snapshot = await env.audit(accepts.expected.values(), accepts.prefix)
    return time.perf_counter(), report, snapshot


def applied_latencies(
    accepts: Accepts, snapshot: dict[str, SnapshotCollection]
) -> dict[str, list[float]]:
    """Seconds from each 202 to the ``_applied_at`` stamp the writer/replicator left."""
    home: list[float] = []
    replica: list[float] = []
    both: dict[str, float] = {}
    for region, collection in snapshot.items():
        for customer_id, document in collection.documents.items():
            stamp = document.get(APPLIED_AT)
            accepted = accepts.accepted_wall.get(customer_id)
            if not isinstance(stamp, datetime) or accepted is None:
                continue
            seconds = stamp.timestamp() - accepted
            (home if document.get(HOME) == region else replica).append(seconds)
            both[customer_id] = max(both.get(customer_id, -math.inf), seconds)
    return {"home": home, "replica": replica, "both": list(both.values())}


def lag_quantiles(
    before: dict[str, dict[float, float]], after: dict[str, dict[float, float]]
) -> dict[str, float]:
    """p50/p99 of the services' apply-lag histograms over the scenario (bucket interpolation)."""
    result: dict[str, float] = {}
    for service, role in ROLE_OF.items():
        delta = bucket_delta(before[service], after[service])
        result[f"{role}_p50_ms"] = histogram_quantile(0.5, delta) * 1000
        result[f"{role}_p99_ms"] = histogram_quantile(0.99, delta) * 1000
    return result


async def lag_buckets(env: BenchEnv) -> dict[str, dict[float, float]]:
    """The apply-lag histogram of the writer and the replicator."""
    return {
        service: buckets(await env.metrics(service), LAG, role=role)
        for service, role in ROLE_OF.items()
    }


def wanted_applies(
    env: BenchEnv, accepts: Accepts, bodies: Sequence[dict[str, Any]]
) -> dict[str, float]:
    """Applications the writer (home targets) and the replicator (the rest) owe these writes."""
    accepted = [b for b in bodies if b["customer_id"] in accepts.expected]
    _, by_role = target_counts(accepted, env.regions)
    return {service: float(by_role.get(role, 0)) for service, role in ROLE_OF.items()}


async def bare_rounds(
    env: BenchEnv, plan: Plan, bodies: Sequence[dict[str, Any]], durations: Sequence[float]
) -> list[float]:
    """The gateway's rounds again against the bare endpoint: same bodies, concurrency, and
    each round as long as the gateway's was (the bodies repeat: nothing is stored)."""
    rates: list[float] = []
    repeated = list(bodies) * BARE_REPEATS
    async with bare_server() as url:
        for index, duration in enumerate(durations):
            count, seconds = await post_singles(
                env, repeated, plan.single_concurrency, CountedOnly(""), duration, url
            )
            rates.append(rate(count, seconds))
            log.info("bare round %d: %d sent, %.0f requests/s", index + 1, count, rates[-1])
    return rates


async def single_ingest(env: BenchEnv, plan: Plan, customers: Customers) -> dict[str, Any]:
    """Scenario 2: single-customer POSTs at a fixed concurrency, in rounds."""
    unloaded_bodies = customers.bodies[: plan.unloaded_requests]
    loaded = customers.bodies[plan.unloaded_requests :]
    accepts = Accepts(customers.prefix)
    before = await applied_counters(env)
    per_round = math.ceil(len(loaded) / plan.single_rounds)
    rates: list[float] = []
    durations: list[float] = []
    sent = 0
    first = time.perf_counter()
    for index in range(plan.single_rounds):
        bodies = loaded[index * per_round : (index + 1) * per_round]
        count, seconds = await post_singles(
            env, bodies, plan.single_concurrency, accepts, plan.single_budget_s / plan.single_rounds
        )
        sent += count
        durations.append(seconds)
        rates.append(rate(count, seconds))
        log.info("singles round %d: %d sent, %.0f accepted/s", index + 1, count, rates[-1])
    accepted_at = time.perf_counter()
    loaded_seconds = list(accepts.request_seconds)
    unloaded = Accepts(customers.prefix)
    await post_singles(env, unloaded_bodies, 1, unloaded)
    accepts.expected.update(unloaded.expected)
    accepts.accepted_wall.update(unloaded.accepted_wall)
    accepts.failed += unloaded.failed
    done, report, _ = await wait_applied(
        env, accepts, before, wanted_applies(env, accepts, customers.bodies), plan.apply_timeout_s
    )
    log.info("singles settled %.1fs after the last accept: %s", done - accepted_at, report)
    # After the settle, so the services' applies do not share the cores with it.
    bare_rates = await bare_rounds(env, plan, loaded[:per_round], durations)
    gateway_rate = median(rates)
    bare_rate = median(bare_rates)
    return {
        "requests": float(sent),
        "requests_planned": float(len(loaded)),
        "stopped_by_time_budget": float(sent < len(loaded)),
        "time_budget_s": plan.single_budget_s,
        "concurrency": float(plan.single_concurrency),
        "rounds": float(plan.single_rounds),
        "runs_accepted_per_s": rates,
        "accepted_per_s": gateway_rate,
        "bare_runs_per_s": bare_rates,
        "bare_per_s": bare_rate,
        "ratio_to_bare": ratio_to_bare(gateway_rate, bare_rate),
        "accept_latency": latency_summary(loaded_seconds),
        "unloaded_accept_latency": latency_summary(unloaded.request_seconds),
        "failed": float(accepts.failed),
        "settle_s_after_last_accept": done - accepted_at,
        "end_to_end_applied_per_s": rate(sent, done - first),
        "audit": audit_counts(report),
    }


async def batch_ingest(env: BenchEnv, plan: Plan, customers: Customers) -> dict[str, Any]:
    """Scenario 3: the batch endpoint, then wait until every write is in home and replica."""
    accepts = Accepts(customers.prefix)
    before = await applied_counters(env)
    lag_before = await lag_buckets(env)
    started = time.perf_counter()
    chunks = customers.chunks(plan.batch_size)
    accept_seconds = await post_batches(env, chunks, plan.batch_concurrency, accepts)
    log.info(
        "batch: %.0f accepted/s; waiting until applied", len(accepts.expected) / accept_seconds
    )
    done, report, snapshot = await wait_applied(
        env, accepts, before, wanted_applies(env, accepts, customers.bodies), plan.apply_timeout_s
    )
    applied_seconds = done - started
    lag_after = await lag_buckets(env)
    latencies = applied_latencies(accepts, snapshot)
    log.info(
        "batch: every write applied after %.1fs (%.0f/s): %s",
        applied_seconds,
        len(accepts.expected) / applied_seconds,
        report,
    )
    return {
        "customers": float(len(customers.bodies)),
        "batch_size": float(plan.batch_size),
        "concurrency": float(plan.batch_concurrency),
        "accepted": float(len(accepts.expected)),
        "rejected": float(accepts.rejected),
        "failed": float(accepts.failed),
        "accept_seconds": accept_seconds,
        "accepted_per_s": rate(len(accepts.expected), accept_seconds),
        "request_latency": latency_summary(accepts.request_seconds),
        "applied_seconds": applied_seconds,
        "applied_per_s": rate(len(accepts.expected), applied_seconds),
        "apply_latency_method": (
            "per customer: _applied_at of its home and replica documents minus the wall time "
            "its batch's 202 arrived (read from the audit's snapshot); cross-checked with the "
            "regionstore_apply_lag_seconds bucket deltas (issued_at to apply, interpolated "
            "inside coarse buckets)"
        ),
        "apply_latency": {
            "home_p50_ms": percentile(latencies["home"], 50) * 1000,
            "home_p99_ms": percentile(latencies["home"], 99) * 1000,
            "replica_p50_ms": percentile(latencies["replica"], 50) * 1000,
            "replica_p99_ms": percentile(latencies["replica"], 99) * 1000,
            "both_p50_ms": percentile(latencies["both"], 50) * 1000,
            "both_p99_ms": percentile(latencies["both"], 99) * 1000,
            "samples": float(len(latencies["both"])),
        },
        "apply_lag_histogram": lag_quantiles(lag_before, lag_after),
        "audit": audit_counts(report),
    }
