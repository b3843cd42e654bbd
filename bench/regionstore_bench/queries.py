"""Scenario 5: every list-query shape of the API and a point read, all regions up and one down.

The shapes run in rounds, each round every shape once in a shuffled order: a time budget then
cuts every shape alike, and each list query meets the same conditions as the point read it is
held against.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import random
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import httpx

from regionstore_shared.regions import RegionMap
from regionstore_shared.schemas import fold_text

from .data import Customers
from .env import BenchEnv, Progress
from .plan import Plan
from .stats import latency_summary

log = logging.getLogger("regionstore_bench")

Params = dict[str, str | int]
POINT_READ = "point_read"
NO_FILTER = "no_filter"
NEXT_PAGE = "next_page"
FILTER_RECORDS = "filter_records"
LIST_PATH = "/v1/customers"
# Every shape and the request it times, as the report shows it.
SHAPES = {
    "state": "GET /v1/customers?state=",
    "city_prefix": "GET /v1/customers?city= (prefix of 3-6 letters)",
    "state_city": "GET /v1/customers?state=&city=",
    "zip_range": "GET /v1/customers?zip_min=&zip_max= (100, 1,000 or 5,000 wide)",
    "zip_state": "GET /v1/customers?zip_min=&zip_max=&state=",
    "region": "GET /v1/customers?region=",
    NO_FILTER: "GET /v1/customers",
    FILTER_RECORDS: (
        "POST /filter-records {zipRangeMin, zipRangeMax, city, state} "
        "(every match, up to max_filter_records)"
    ),
    NEXT_PAGE: "GET /v1/customers?state=&cursor= (the page after an untimed first page)",
    POINT_READ: "GET /v1/customers/{id}",
}
LIST_SHAPES = tuple(shape for shape in SHAPES if shape != POINT_READ)
# The list shapes held against the point read: every one that filters.
FILTERED_SHAPES = tuple(shape for shape in LIST_SHAPES if shape != NO_FILTER)
ZIP_WIDTHS = (100, 1000, 5000)


@dataclass(frozen=True, slots=True)
class Query:
    """One request: ``GET path?params``, or ``POST path`` with ``body``."""

    shape: str
    path: str
    params: Params = field(default_factory=dict)
    body: dict[str, Any] | None = None


def _query(shape: str, body: dict[str, Any], rng: random.Random, regions: RegionMap) -> Query:
    """A query of ``shape`` that this customer's own zip, state, city and region answer."""
    zip_prefix = int(body["customer_zip_code_prefix"])
    zip_max = min(99999, zip_prefix + rng.choice(ZIP_WIDTHS))
    state = str(body["customer_state"])
    city = fold_text(body["customer_city"])[: rng.randint(3, 6)]
    if shape == POINT_READ:
        return Query(shape, f"{LIST_PATH}/{body['customer_id']}")
    if shape == FILTER_RECORDS:
        legacy = {"zipRangeMin": zip_prefix, "zipRangeMax": zip_max, "city": city, "state": state}
        return Query(shape, "/filter-records", body=legacy)
    params: dict[str, Params] = {
        "state": {"state": state},
        "city_prefix": {"city": city},
        "state_city": {"state": state, "city": city},
        "zip_range": {"zip_min": zip_prefix, "zip_max": zip_max},
        "zip_state": {"zip_min": zip_prefix, "zip_max": zip_max, "state": state},
        "region": {"region": regions.home_of(zip_prefix)},
        NO_FILTER: {},
        NEXT_PAGE: {"state": state},
    }
    return Query(shape, LIST_PATH, params[shape])


def query_mix(customers: Customers, rounds: int, seed: int, regions: RegionMap) -> list[Query]:
    """``rounds`` rounds of every shape, over the customers' own zips, states and cities."""
    rng = random.Random(seed)
    shapes = list(SHAPES)
    mix: list[Query] = []
    for _ in range(rounds):
        rng.shuffle(shapes)
        mix += [_query(shape, rng.choice(customers.bodies), rng, regions) for shape in shapes]
    return mix


@dataclass
class Tally:
    """One shape's latencies and what its answers said."""

    seconds: list[float] = field(default_factory=list)
    rows: int = 0
    flags: Counter[str] = field(default_factory=Counter)

    def answer(self, shape: str, data: dict[str, Any]) -> None:
        """Count the rows of a 200 answer and whether it was degraded or incomplete."""
        if shape == POINT_READ:
            self.rows += 1
            self.flags["degraded"] += bool(data["fallback"])
            return
        self.rows += len(data["records"] if shape == FILTER_RECORDS else data["items"])
        self.flags["degraded"] += bool(data["degraded_regions"])
        self.flags["incomplete"] += bool(data["incomplete"])

    def summary(self) -> dict[str, float]:
        """Latency percentiles, rows per answer and the flags, as numbers."""
        return {
            **latency_summary(self.seconds),
            "rows_mean": self.rows / len(self.seconds) if self.seconds else math.nan,
            **_flag_counts(self.flags),
        }


def _flag_counts(flags: Counter[str]) -> dict[str, float]:
    return {
        "errors": float(flags["errors"]),
        "timeouts": float(flags["timeouts"]),
        "degraded_answers": float(flags["degraded"]),
        "incomplete_answers": float(flags["incomplete"]),
        "no_next_page": float(flags["no_next_page"]),
        "too_broad": float(flags["too_broad"]),
    }


def too_broad(response: httpx.Response) -> bool:
    """A /filter-records answer refusing a filter that matches more than the gateway's
    ``max_filter_records``: the answer the API documents, not a failure."""
    if response.status_code != 422:
        return False
    detail = response.json().get("detail")
    return isinstance(detail, list) and any(
        isinstance(error, dict) and error.get("type") == "too_many_records" for error in detail
    )


async def _send(env: BenchEnv, query: Query, timeout_s: float) -> httpx.Response:
    if query.body is not None:
        return await env.http.post(query.path, json=query.body, timeout=timeout_s)
    return await env.http.get(query.path, params=query.params, timeout=timeout_s)


async def _prepare(env: BenchEnv, query: Query, timeout_s: float) -> Query | None:
    """The request to time: for the next page, the first page is fetched (untimed) for its
    cursor; None when the query has a single page."""
    if query.shape != NEXT_PAGE:
        return query
    first = await _send(env, query, timeout_s)
    cursor = first.json().get("next_cursor") if first.status_code == 200 else None
    if not cursor:
        return None
    return Query(query.shape, query.path, {**query.params, "cursor": cursor})


async def run_queries(
    env: BenchEnv,
    queries: list[Query],
    concurrency: int,
    label: str,
    budget_s: float = math.inf,
    timeout_s: float = 60.0,
) -> dict[str, Any]:
    """Run the queries from ``concurrency`` workers until done or out of time.

    Latency per shape, and over every list shape together (the point read apart). A query with
    no answer within ``timeout_s`` counts as timed out, at ``timeout_s``: its real latency is at
    least that.
    """
    first_of_shape: dict[str, Query] = {}
    for query in queries:
        first_of_shape.setdefault(query.shape, query)
    for query in first_of_shape.values():
        with contextlib.suppress(httpx.TransportError):
            if (warm := await _prepare(env, query, timeout_s)) is not None:
                await _send(env, warm, timeout_s)
    tallies = {shape: Tally() for shape in SHAPES}
    queue: asyncio.Queue[Query] = asyncio.Queue()
    for query in queries:
        queue.put_nowait(query)
    progress = Progress(f"queries ({label})", len(queries))
    deadline = time.perf_counter() + budget_s

    async def one(query: Query) -> None:
        tally = tallies[query.shape]
        try:
            timed = await _prepare(env, query, timeout_s)
        except httpx.TransportError:
            tally.flags["errors"] += 1
            return
        if timed is None:
            tally.flags["no_next_page"] += 1
            return
        started = time.perf_counter()
        try:
            response = await _send(env, timed, timeout_s)
        except httpx.TimeoutException:
            tally.seconds.append(timeout_s)
            tally.flags["timeouts"] += 1
            return
        except httpx.TransportError:
            tally.flags["errors"] += 1
            return
        if too_broad(response):
            tally.flags["too_broad"] += 1
            return
        tally.seconds.append(time.perf_counter() - started)
        if response.status_code != 200:
            tally.flags["errors"] += 1
            return
        tally.answer(query.shape, response.json())

    async def worker() -> None:
        while not queue.empty() and time.perf_counter() < deadline:
            await one(queue.get_nowait())
            progress.add()

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    elapsed = time.perf_counter() - started
    listed = [seconds for shape in LIST_SHAPES for seconds in tallies[shape].seconds]
    flags: Counter[str] = Counter()
    for shape in LIST_SHAPES:
        flags.update(tallies[shape].flags)
    rows = sum(tallies[shape].rows for shape in LIST_SHAPES)
    timed = len(listed) + len(tallies[POINT_READ].seconds)
    return {
        **latency_summary(listed),
        "requests": float(progress.done),
        "queries": float(len(listed)),
        "point_reads": float(len(tallies[POINT_READ].seconds)),
        "queries_per_s": timed / elapsed if elapsed else 0.0,
        "rows_mean": rows / len(listed) if listed else 0.0,
        **_flag_counts(flags),
        "timeout_s": timeout_s,
        "by_kind": {shape: tally.summary() for shape, tally in tallies.items()},
    }


async def store_counts(env: BenchEnv) -> dict[str, float]:
    """Documents in each regional store (estimated: a full count reads every document)."""
    return {
        region: float(await collection.estimated_document_count())
        for region, collection in env.collections.items()
    }


async def store_indexes(env: BenchEnv) -> dict[str, list[str]]:
    """The indexes of each region's customers collection, by name."""
    return {
        region: sorted(await collection.index_information())
        for region, collection in env.collections.items()
    }


async def queries(env: BenchEnv, plan: Plan, customers: Customers) -> dict[str, Any]:
    """The same queries with all regions up, then with the busiest home region down."""
    mix = query_mix(customers, plan.queries_per_shape, plan.seed, env.regions)
    planned = len(mix)
    homes = Counter(
        env.regions.home_of(int(b["customer_zip_code_prefix"])) for b in customers.bodies
    )
    down = homes.most_common(1)[0][0]
    counts = await store_counts(env)
    indexes = await store_indexes(env)
    up = await run_queries(
        env, mix, plan.query_concurrency, "all up", plan.query_budget_s, plan.query_timeout_s
    )
    # Both conditions run the same queries, however many the first one got through.
    mix = mix[: int(up["requests"])]
    _log_condition("all up", up)
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
    _log_condition(f"{down} down", degraded)
    return {
        "queries": up["queries"],
        "point_reads": up["point_reads"],
        "queries_per_shape_planned": float(plan.queries_per_shape),
        "stopped_by_time_budget": float(len(mix) < planned),
        "time_budget_s": plan.query_budget_s,
        "concurrency": float(plan.query_concurrency),
        "page_size": "gateway default",
        "kinds": list(SHAPES),
        "shape_requests": dict(SHAPES),
        "filtered_shapes": list(FILTERED_SHAPES),
        "store_documents": counts,
        "store_indexes": indexes,
        "bench_customers": float(len(customers.bodies)),
        "down_region": down,
        "all_up": up,
        "one_down": degraded,
    }


def _log_condition(label: str, summary: dict[str, Any]) -> None:
    point = summary["by_kind"][POINT_READ]
    log.info(
        "queries %s: list p50 %.1f ms, p99 %.1f ms; point read p50 %.1f ms, p99 %.1f ms",
        label,
        summary["p50_ms"],
        summary["p99_ms"],
        point["p50_ms"],
        point["p99_ms"],
    )
