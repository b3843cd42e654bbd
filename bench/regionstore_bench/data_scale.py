"""``python -m regionstore_bench.data_scale``: every list shape's pages at the stores' size.

Loads ``--load`` more Olist-shaped customers (the data set's distribution of states, cities and
zips) through the command path, ``POST /v1/customers:batch``, so the writer's and replicator's
placement tables learn every one, and waits until the consumers have applied them all. Then it
times every list shape of the API, the first page and the page after it, with a point read by
id in the same rounds, and records the load's rate and the disk each region uses.

The load sends no ``Idempotency-Key``: a batch item whose outcome is unknown is sent again as a
new write of the same customer (a newer version of the same fields), so the bulk load keeps no
record in Redis. A 429 (backpressure: the consumers are behind) took nothing: the batch waits
as long as the gateway asks and is sent again, without using up a try. Loads add up: run it
again with ``--load`` to grow the stores, or with ``--load 0`` to time them as they are.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import math
import os
import random
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from regionstore_shared.schemas import fold_text
from regionstore_tools.dataset.olist import generate

from .env import BenchEnv, Progress, open_env
from .stats import latency_summary

log = logging.getLogger("regionstore_bench")

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "bench" / "results"
SAMPLE = 4000
RETRIES = 5
BUSY = 429
ZIP_WIDTHS = (100, 1000, 5000)
LIST = "/v1/customers"
LIMIT = 50
POINT_READ = "point_read"

# Every list shape: how its query is drawn from one loaded customer's own values (so it
# matches something), plus the two most common values, where a page used to sort the most.
SHAPES = (
    "no_filter",
    "region",
    "state",
    "state_SP",
    "city_prefix",
    "city_sao",
    "state_city",
    "zip_range",
    "zip_state",
    "zip_city",
    "zip_state_city",
    "filter_records",
)


def _query(shape: str, body: dict[str, Any], rng: random.Random, home: str) -> dict[str, Any]:
    zip_min = int(body["customer_zip_code_prefix"])
    zip_max = min(99999, zip_min + rng.choice(ZIP_WIDTHS))
    city = fold_text(body["customer_city"])[: rng.randint(3, 6)]
    state = str(body["customer_state"])
    queries: dict[str, dict[str, Any]] = {
        "no_filter": {},
        "region": {"region": home},
        "state": {"state": state},
        "state_SP": {"state": "SP"},
        "city_prefix": {"city": city},
        "city_sao": {"city": "sao"},
        "state_city": {"state": state, "city": city},
        "zip_range": {"zip_min": zip_min, "zip_max": zip_max},
        "zip_state": {"zip_min": zip_min, "zip_max": zip_max, "state": state},
        "zip_city": {"zip_min": zip_min, "zip_max": zip_max, "city": city},
        "zip_state_city": {"zip_min": zip_min, "zip_max": zip_max, "state": state, "city": city},
        "filter_records": {
            "zipRangeMin": zip_min,
            "zipRangeMax": zip_max,
            "city": city,
            "state": state,
        },
    }
    return queries[shape]


@dataclass
class Loaded:
    """What a load sent and how long each part took."""

    count: int = 0
    accepted: int = 0
    rejected: int = 0
    gave_up: int = 0
    accept_s: float = 0.0
    applied_s: float = 0.0
    sample: list[dict[str, Any]] = field(default_factory=list)


def _chunks(count: int, seed: int, size: int) -> Iterator[list[dict[str, Any]]]:
    chunk: list[dict[str, Any]] = []
    for customer in generate(count, seed=seed):
        chunk.append(customer.model_dump())
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


async def _post(env: BenchEnv, chunk: list[dict[str, Any]], loaded: Loaded) -> None:
    """One batch, its items that were not certainly taken sent again (no key: a new write)."""
    items = chunk
    tries = 0
    while tries < RETRIES:
        try:
            response = await env.http.post(
                "/v1/customers:batch", json={"items": [{"customer": c} for c in items]}
            )
        except httpx.TransportError as error:
            log.warning("batch failed (%r): sending it again", error)
            tries += 1
            await asyncio.sleep(1)
            continue
        if response.status_code == BUSY:
            # Backpressure (the consumers are behind): nothing was taken; wait as asked.
            await asyncio.sleep(float(response.headers.get("Retry-After", "1")))
            continue
        tries += 1
        if response.status_code not in (202, 422, 503, 504):
            log.warning("batch answered %s: %s", response.status_code, response.text[:300])
            await asyncio.sleep(1)
            continue
        results = response.json().get("results", [])
        again = []
        for body, result in zip(items, results, strict=True):
            status = result["status"]
            if status == "accepted":
                loaded.accepted += 1
            elif status == "rejected":
                loaded.rejected += 1
            else:
                again.append(body)
        if not again:
            return
        items = again
        await asyncio.sleep(float(response.headers.get("Retry-After", "1")))
    loaded.gave_up += len(items)


async def load(env: BenchEnv, count: int, seed: int, *, batch: int, concurrency: int) -> Loaded:
    """Send ``count`` generated customers; wait until every region has applied them."""
    loaded = Loaded(count=count)
    rng = random.Random(seed)
    progress = Progress("customers accepted", count, every_s=15)
    queue: asyncio.Queue[list[dict[str, Any]] | None] = asyncio.Queue(maxsize=concurrency * 2)
    started = time.perf_counter()

    async def worker() -> None:
        while (chunk := await queue.get()) is not None:
            await _post(env, chunk, loaded)
            progress.add(len(chunk))

    workers = [asyncio.create_task(worker()) for _ in range(concurrency)]
    seen = 0
    for chunk in _chunks(count, seed, batch):
        for body in chunk:  # a uniform sample of what was sent, for the queries
            seen += 1
            if len(loaded.sample) < SAMPLE:
                loaded.sample.append(body)
            elif (slot := rng.randrange(seen)) < SAMPLE:
                loaded.sample[slot] = body
        await queue.put(chunk)
    for _ in workers:
        await queue.put(None)
    await asyncio.gather(*workers)
    loaded.accept_s = time.perf_counter() - started
    await _wait_applied(env)
    loaded.applied_s = time.perf_counter() - started
    return loaded


async def _wait_applied(env: BenchEnv, timeout_s: float = 6 * 3600) -> None:
    """Until no command waits for the writer or the replicator and nothing is parked."""
    deadline = time.monotonic() + timeout_s
    settled = 0
    last_log = 0.0
    while time.monotonic() < deadline:
        regions = (await env.http.get("/v1/regions")).json()
        lag = regions["lag"]
        pending = sum(r["pending"] or 0 for r in regions["regions"])
        known = all(v is not None for v in lag.values())
        settled = settled + 1 if known and not any(lag.values()) and not pending else 0
        if settled >= 3:
            return
        if time.monotonic() - last_log > 15:
            last_log = time.monotonic()
            log.info("applying: lag %s, parked %s", lag, pending)
        await asyncio.sleep(2)
    raise TimeoutError("the consumers did not catch up")


async def sizes(env: BenchEnv) -> dict[str, dict[str, float]]:
    """Each region's live home customers, documents, and disk (the store's own figures and
    its data directory where the stack runs here)."""
    run_dir = os.environ.get("RUN_DIR", str(ROOT / ".run"))
    result: dict[str, dict[str, float]] = {}
    for region, collection in env.collections.items():
        stats = await collection.database.command("dbStats")
        live = await collection.count_documents(
            {"_home": region, "_deleted": False}, hint="list_home_id"
        )
        documents = await collection.estimated_document_count()
        figures = {
            "live_home_customers": float(live),
            "documents": float(documents),
            "data_mb": stats.get("dataSize", math.nan) / 2**20,
            "index_mb": stats.get("indexSize", math.nan) / 2**20,
            "storage_mb": stats.get("totalSize", stats.get("storageSize", math.nan)) / 2**20,
        }
        directory = Path(run_dir) / "stores" / region
        if directory.is_dir():
            du = await asyncio.create_subprocess_exec(
                "du", "-sb", str(directory), stdout=asyncio.subprocess.PIPE
            )
            out, _ = await du.communicate()
            if du.returncode == 0:
                figures["directory_mb"] = int(out.split()[0]) / 2**20
        result[region] = figures
    return result


async def _stored_sample(env: BenchEnv, count: int) -> list[dict[str, Any]]:
    """Customers already in the stores, for timing without a load."""
    sample: list[dict[str, Any]] = []
    for region, collection in env.collections.items():
        pipeline: list[dict[str, Any]] = [
            {"$match": {"_home": region, "_deleted": False}},
            {"$sample": {"size": count // len(env.collections)}},
        ]
        sample += [doc async for doc in await collection.aggregate(pipeline)]
    return [{**doc, "customer_id": doc["_id"]} for doc in sample]


@dataclass
class Timing:
    """Latencies of one shape and what its answers said."""

    first: list[float] = field(default_factory=list)
    following: list[float] = field(default_factory=list)
    rows: int = 0
    answers: int = 0
    short_with_more: int = 0
    degraded: int = 0
    incomplete: int = 0
    refused: int = 0
    errors: int = 0
    orders: dict[str, int] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        return {
            "first": latency_summary(self.first),
            "next": latency_summary(self.following),
            "rows_mean": self.rows / self.answers if self.answers else math.nan,
            "short_pages_with_more": self.short_with_more,
            "degraded": self.degraded,
            "incomplete": self.incomplete,
            "refused_too_broad": self.refused,
            "errors": self.errors,
            "orders": self.orders,
        }


async def _timed(env: BenchEnv, method: str, path: str, **kwargs: Any) -> tuple[float, Any]:
    started = time.perf_counter()
    response = await env.http.request(method, path, **kwargs)
    return time.perf_counter() - started, response


async def _list_shape(env: BenchEnv, params: dict[str, Any], timing: Timing) -> None:
    seconds, response = await _timed(env, "GET", LIST, params={**params, "limit": LIMIT})
    if response.status_code != 200:
        timing.errors += 1
        return
    page = response.json()
    timing.first.append(seconds)
    _count(page, timing)
    if page["next_cursor"] is None:
        return
    query = {**params, "limit": LIMIT, "cursor": page["next_cursor"]}
    seconds, response = await _timed(env, "GET", LIST, params=query)
    if response.status_code != 200:
        timing.errors += 1
        return
    timing.following.append(seconds)
    _count(response.json(), timing)


def _count(page: dict[str, Any], timing: Timing) -> None:
    timing.answers += 1
    timing.rows += len(page["items"])
    timing.short_with_more += len(page["items"]) < LIMIT and page["next_cursor"] is not None
    timing.degraded += bool(page["degraded_regions"])
    timing.incomplete += bool(page["incomplete"])
    order = ",".join(page["order"])
    timing.orders[order] = timing.orders.get(order, 0) + 1


async def _filter_records(env: BenchEnv, body: dict[str, Any], timing: Timing) -> None:
    seconds, response = await _timed(env, "POST", "/filter-records", json=body)
    if response.status_code == 422 and "too_many_records" in response.text:
        timing.refused += 1
        timing.first.append(seconds)
        return
    if response.status_code != 200:
        timing.errors += 1
        return
    timing.first.append(seconds)
    answer = response.json()
    timing.answers += 1
    timing.rows += answer["count"]
    timing.degraded += bool(answer["degraded_regions"])
    timing.incomplete += bool(answer["incomplete"])


async def measure(
    env: BenchEnv, sample: list[dict[str, Any]], rounds: int, seed: int
) -> dict[str, Any]:
    """``rounds`` rounds of every shape and a point read, one request at a time, each round in
    a shuffled order so that every shape meets the same conditions."""
    rng = random.Random(seed)
    timings = {shape: Timing() for shape in (*SHAPES, POINT_READ)}
    shapes = [*SHAPES, POINT_READ]
    progress = Progress("query rounds", rounds, every_s=30)
    for _ in range(rounds):
        rng.shuffle(shapes)
        for shape in shapes:
            body = rng.choice(sample)
            timing = timings[shape]
            if shape == POINT_READ:
                seconds, response = await _timed(env, "GET", f"{LIST}/{body['customer_id']}")
                if response.status_code == 200:
                    timing.first.append(seconds)
                else:
                    timing.errors += 1
                continue
            home = env.regions.home_of(int(body["customer_zip_code_prefix"]))
            query = _query(shape, body, rng, home)
            if shape == "filter_records":
                await _filter_records(env, query, timing)
            else:
                await _list_shape(env, query, timing)
        progress.add()
    point_p50 = latency_summary(timings[POINT_READ].first)["p50_ms"]
    shapes_out = {shape: timings[shape].summary() for shape in SHAPES}
    for summary in shapes_out.values():
        worst = max(summary["first"]["p99_ms"], _nan_to(summary["next"]["p99_ms"], 0.0))
        summary["p99_over_point_read_p50"] = worst / point_p50 if point_p50 else math.nan
    return {"point_read": latency_summary(timings[POINT_READ].first), "shapes": shapes_out}


def _nan_to(value: float, default: float) -> float:
    return default if math.isnan(value) else value


def _label(customers: float) -> str:
    if customers >= 1_000_000:
        return f"{customers / 1_000_000:.1f}M".replace(".0M", "M")
    return f"{round(customers / 1000)}k"


def markdown(result: dict[str, Any]) -> str:
    """The results as a table."""
    total = result["live_customers"]
    lines = [
        f"# List pages at {total:,.0f} customers ({result['finished']})",
        "",
        f"Point read p50 {result['queries']['point_read']['p50_ms']:.1f} ms, "
        f"p99 {result['queries']['point_read']['p99_ms']:.1f} ms; "
        f"{result['rounds']} rounds, limit {LIMIT}.",
        "",
        "| shape | first p50 / p99 ms | next p50 / p99 ms | worst p99 / point p50 | rows | "
        "short pages | degraded | incomplete |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for shape, s in result["queries"]["shapes"].items():
        first, following = s["first"], s["next"]
        lines.append(
            f"| {shape} | {first['p50_ms']:.1f} / {first['p99_ms']:.1f} | "
            f"{following['p50_ms']:.1f} / {following['p99_ms']:.1f} | "
            f"{s['p99_over_point_read_p50']:.1f} | {s['rows_mean']:.0f} | "
            f"{s['short_pages_with_more']} | {s['degraded']} | {s['incomplete']} |"
        )
    lines += ["", "| region | live home customers | documents | data MB | index MB | dir MB |"]
    lines.append("| --- | --- | --- | --- | --- | --- |")
    for region, f in result["sizes"].items():
        lines.append(
            f"| {region} | {f['live_home_customers']:,.0f} | {f['documents']:,.0f} | "
            f"{f['data_mb']:,.0f} | {f['index_mb']:,.0f} | {f.get('directory_mb', math.nan):,.0f} |"
        )
    if result.get("load"):
        load = result["load"]
        lines += [
            "",
            f"Loaded {load['count']:,} customers through `:batch` (no Idempotency-Key): "
            f"accepted in {load['accept_s']:.0f} s ({load['accept_rate']:,.0f}/s), applied "
            f"in every region after {load['applied_s']:.0f} s ({load['applied_rate']:,.0f}/s); "
            f"rejected {load['rejected']}, not taken after {RETRIES} tries {load['gave_up']}.",
        ]
    return "\n".join(lines) + "\n"


async def run(args: argparse.Namespace) -> dict[str, Any]:
    async with open_env(timeout_s=120) as env:
        result: dict[str, Any] = {"started": datetime.now(UTC).isoformat(timespec="seconds")}
        if args.load:
            seed = args.seed if args.seed is not None else int(time.time())
            loaded = await load(
                env, args.load, seed, batch=args.batch, concurrency=args.concurrency
            )
            result["load"] = {
                "count": loaded.count,
                "seed": seed,
                "accepted": loaded.accepted,
                "rejected": loaded.rejected,
                "gave_up": loaded.gave_up,
                "accept_s": loaded.accept_s,
                "applied_s": loaded.applied_s,
                "accept_rate": loaded.count / loaded.accept_s,
                "applied_rate": loaded.count / loaded.applied_s,
            }
            sample = loaded.sample
        else:
            sample = await _stored_sample(env, SAMPLE)
        result["sizes"] = await sizes(env)
        result["live_customers"] = sum(s["live_home_customers"] for s in result["sizes"].values())
        result["rounds"] = args.rounds
        result["queries"] = await measure(env, sample, args.rounds, seed=7)
        result["finished"] = datetime.now(UTC).isoformat(timespec="seconds")
        return result


def main() -> None:
    parser = argparse.ArgumentParser(prog="regionstore_bench.data_scale", description=__doc__)
    parser.add_argument("--load", type=int, default=0, help="customers to add first (0: none)")
    parser.add_argument("--rounds", type=int, default=100, help="rounds of every shape")
    parser.add_argument("--seed", type=int, help="the generator's seed (default: the time)")
    parser.add_argument("--batch", type=int, default=1000, help="items per :batch request")
    parser.add_argument("--concurrency", type=int, default=4, help="batches in flight")
    parser.add_argument("--results-dir", type=Path, default=RESULTS)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    result = asyncio.run(run(args))
    stem = args.results_dir / f"data-scale-{_label(result['live_customers'])}"
    stem.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
    stem.with_suffix(".md").write_text(markdown(result))
    print(markdown(result))


if __name__ == "__main__":
    main()
