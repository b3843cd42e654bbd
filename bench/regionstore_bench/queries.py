"""Scenario 5: filtered list queries, with every region up and with one flipped down."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import random
import time
from collections import Counter
from typing import Any

import httpx

from regionstore_shared.schemas import fold_text

from .data import Customers
from .env import BenchEnv, Progress
from .plan import Plan
from .stats import latency_summary

log = logging.getLogger("regionstore_bench")

Params = dict[str, str | int]
KINDS = ("zip_range", "state", "city_prefix", "state_city", "zip_state")
WARMUP = 1


def query_mix(customers: Customers, count: int, seed: int) -> list[tuple[str, Params]]:
    """``count`` queries over the customers' own zips, states and cities, kinds in turn."""
    rng = random.Random(seed)
    bodies = customers.bodies
    queries: list[tuple[str, Params]] = []
    for n in range(count):
        kind = KINDS[n % len(KINDS)]
        body = rng.choice(bodies)
        zip_prefix = int(body["customer_zip_code_prefix"])
        width = rng.choice((100, 1000, 5000))
        city = fold_text(body["customer_city"])[: rng.randint(3, 6)]
        params: Params
        if kind == "zip_range":
            params = {"zip_min": zip_prefix, "zip_max": min(99999, zip_prefix + width)}
        elif kind == "state":
            params = {"state": body["customer_state"]}
        elif kind == "city_prefix":
            params = {"city": city}
        elif kind == "state_city":
            params = {"state": body["customer_state"], "city": city}
        else:
            params = {
                "zip_min": zip_prefix,
                "zip_max": min(99999, zip_prefix + width),
                "state": body["customer_state"],
            }
        queries.append((kind, params))
    return queries


async def run_queries(
    env: BenchEnv,
    queries: list[tuple[str, Params]],
    concurrency: int,
    label: str,
    budget_s: float = math.inf,
    timeout_s: float = 60.0,
) -> dict[str, Any]:
    """Run the queries from ``concurrency`` workers until done or out of time.

    Latency overall and per kind. A query that has no answer within ``timeout_s`` counts as
    timed out, at ``timeout_s``: its real latency is at least that.
    """
    for _, params in queries[:WARMUP]:
        with contextlib.suppress(httpx.TimeoutException):
            await env.http.get("/v1/customers", params=params, timeout=timeout_s)
    seconds: list[float] = []
    by_kind: dict[str, list[float]] = {kind: [] for kind in KINDS}
    flags: Counter[str] = Counter()
    rows = 0
    queue: asyncio.Queue[tuple[str, Params]] = asyncio.Queue()
    for query in queries:
        queue.put_nowait(query)
    progress = Progress(f"queries ({label})", len(queries))
    deadline = time.perf_counter() + budget_s

    async def worker() -> None:
        nonlocal rows
        while not queue.empty() and time.perf_counter() < deadline:
            kind, params = queue.get_nowait()
            started = time.perf_counter()
            try:
                response = await env.http.get("/v1/customers", params=params, timeout=timeout_s)
            except httpx.TransportError as error:
                if not isinstance(error, httpx.TimeoutException):
                    flags["errors"] += 1
                    progress.add()
                    continue
                seconds.append(timeout_s)
                by_kind[kind].append(timeout_s)
                flags["timeouts"] += 1
                progress.add()
                continue
            elapsed = time.perf_counter() - started
            seconds.append(elapsed)
            by_kind[kind].append(elapsed)
            if response.status_code != 200:
                flags["errors"] += 1
            else:
                page = response.json()
                rows += len(page["items"])
                flags["degraded"] += bool(page["degraded_regions"])
                flags["incomplete"] += bool(page["incomplete"])
            progress.add()

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    elapsed = time.perf_counter() - started
    return {
        **latency_summary(seconds),
        "queries": float(len(seconds)),
        "queries_per_s": len(seconds) / elapsed if elapsed else 0.0,
        "rows_mean": rows / len(seconds) if seconds else 0.0,
        "errors": float(flags["errors"]),
        "timeouts": float(flags["timeouts"]),
        "timeout_s": timeout_s,
        "degraded_answers": float(flags["degraded"]),
        "incomplete_answers": float(flags["incomplete"]),
        "by_kind": {kind: latency_summary(values) for kind, values in by_kind.items()},
    }


async def store_counts(env: BenchEnv) -> dict[str, float]:
    """Documents in each regional store (estimated: a full count costs a scan)."""
    return {
        region: float(await collection.estimated_document_count())
        for region, collection in env.collections.items()
    }


async def queries(env: BenchEnv, plan: Plan, customers: Customers) -> dict[str, Any]:
    """The same query mix with all regions up, then with the busiest home region down."""
    mix = query_mix(customers, plan.queries, plan.seed)
    homes = Counter(
        env.regions.home_of(int(b["customer_zip_code_prefix"])) for b in customers.bodies
    )
    down = homes.most_common(1)[0][0]
    counts = await store_counts(env)
    up = await run_queries(
        env, mix, plan.query_concurrency, "all up", plan.query_budget_s, plan.query_timeout_s
    )
    # Both conditions run the same queries, however many the first one got through.
    mix = mix[: int(up["queries"])]
    log.info("queries all up: p50 %.1f ms, p99 %.1f ms", up["p50_ms"], up["p99_ms"])
    await env.set_status(down, "unavailable")
    try:
        degraded = await run_queries(
            env,
            mix,
            plan.query_concurrency,
            f"{down} down",
            2 * plan.query_budget_s,
            plan.query_timeout_s,
        )
    finally:
        await env.set_status(down, "available")
    log.info(
        "queries %s down: p50 %.1f ms, p99 %.1f ms", down, degraded["p50_ms"], degraded["p99_ms"]
    )
    return {
        "queries": float(len(mix)),
        "queries_planned": float(plan.queries),
        "time_budget_s": plan.query_budget_s,
        "concurrency": float(plan.query_concurrency),
        "page_size": "gateway default",
        "kinds": list(KINDS),
        "store_documents": counts,
        "bench_customers": float(len(customers.bodies)),
        "down_region": down,
        "all_up": up,
        "one_down": degraded,
    }
