"""A parked backlog drains while live writes go to the same region: paced, then flat out.

Recovery's pacing is a setting of the process, so each mode runs a writer and a recovery of its
own (the services' code, as processes) beside the local stack, as the region-map scenario does:
a command topic, parking topics, consumer groups, Redis status keys and databases of their own,
on a map of two regions whose first one (the one drained) lives in the stack's first store.

Each mode:
1. live writes only, at ``live_rate`` commands per second: the live apply latency before;
2. the region is switched off and ``backlog`` commands are written, which the writer parks;
3. the region is switched on while the live writes run again; recovery drains the backlog.
   The live apply latency is the writer's ``regionstore_apply_lag_seconds`` (publish to
   applied) observed between the switch and the end of the drain; the drain rate is the
   backlog over that time.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
from aiokafka import AIOKafkaProducer

from regionstore_shared.backlog import BacklogProbe
from regionstore_shared.clients import kafka_admin, kafka_producer, mongo_client, redis_client
from regionstore_shared.clock import HybridClock
from regionstore_shared.domain import upsert_command
from regionstore_shared.regions import RegionMap
from regionstore_shared.schemas import Customer, encode_command
from regionstore_shared.settings import CommonSettings, KafkaSettings
from regionstore_shared.status import NodeStatus, StatusBoard
from regionstore_testing.consumed import wait_consumed
from regionstore_testing.ports import free_port
from regionstore_testing.processes import stop, wait_serving
from regionstore_tools.dataset.olist import generate

from .plan import FULL
from .probes import Samples, bucket_delta, buckets, scrape, total
from .region_maps import with_database
from .stats import histogram_quantile, rate
from .write_cost import ring

log = logging.getLogger("regionstore_bench")

SERVICES = ("writer", "recovery")
READY_WITHIN_S = 120.0
LAG = "regionstore_apply_lag_seconds"
# Recovery's batches: one store request each when paced, up to eight flat out.
BATCH = "regionstore_batch_apply_seconds"
RATE_LIMIT = "regionstore_drain_rate_limit"
# Live commands are sent in this many groups a second: steady, not one burst a second.
TICKS_PER_S = 20
POLL_S = 0.25


@dataclass(frozen=True)
class PacedRun:
    """One mode's topics, groups, keys, databases and settings."""

    paced: bool
    prefix: str
    regions: RegionMap
    stores: dict[str, str]

    @classmethod
    def of(cls, paced: bool, settings: CommonSettings) -> PacedRun:
        prefix = f"bench.paced{int(paced)}.{uuid.uuid4().hex[:6]}"
        regions = ring(2)
        bases = [settings.stores[name] for name in settings.region_map.names]
        database = prefix.replace(".", "_")
        stores = {
            name: with_database(bases[i % len(bases)], f"{database}_{name}")
            for i, name in enumerate(regions.names)
        }
        return cls(paced, prefix, regions, stores)

    @property
    def drained(self) -> str:
        """The region switched off and drained."""
        return self.regions.names[0]

    @property
    def command_topic(self) -> str:
        return f"{self.prefix}.commands"

    @property
    def pending_prefix(self) -> str:
        return f"{self.prefix}.pending."

    @property
    def writer_group(self) -> str:
        return f"{self.prefix}.writer"

    @property
    def recovery_prefix(self) -> str:
        return f"{self.prefix}.recovery."

    @property
    def status_prefix(self) -> str:
        return f"{self.prefix}:node:"

    def kafka(self, settings: CommonSettings) -> KafkaSettings:
        """The stack's Kafka settings, with the mode's topic and group names."""
        return settings.kafka.model_copy(
            update={
                "command_topic": self.command_topic,
                "pending_topic_prefix": self.pending_prefix,
                "writer_group": self.writer_group,
                "recovery_group_prefix": self.recovery_prefix,
            }
        )

    def environment(self, service: str, port: int) -> dict[str, str]:
        specs = [spec.model_dump(mode="json") for spec in self.regions.specs]
        return {
            **os.environ,
            "PYTHONUNBUFFERED": "1",
            "REGIONSTORE_SERVICE_NAME": f"{self.prefix}.{service}",
            "REGIONSTORE_HTTP__PORT": str(port),
            "REGIONSTORE_REGIONS": json.dumps(specs),
            **{f"REGIONSTORE_STORES__{name.upper()}": uri for name, uri in self.stores.items()},
            "REGIONSTORE_KAFKA__COMMAND_TOPIC": self.command_topic,
            "REGIONSTORE_KAFKA__PENDING_TOPIC_PREFIX": self.pending_prefix,
            "REGIONSTORE_KAFKA__WRITER_GROUP": self.writer_group,
            "REGIONSTORE_KAFKA__REPLICATOR_GROUP": f"{self.prefix}.replicator",
            "REGIONSTORE_KAFKA__RECOVERY_GROUP_PREFIX": self.recovery_prefix,
            "REGIONSTORE_REDIS__STATUS_KEY_PREFIX": self.status_prefix,
            "REGIONSTORE_REDIS__APPLIED_KEY": f"{self.prefix}:applied",
            "REGIONSTORE_REDIS__HEALTH_KEY": f"{self.prefix}:health",
            # The switches are the bench's: a detector would see a region it was told is off
            # answer, and the stack's own detector holds the lease anyway.
            "REGIONSTORE_DETECTOR__ENABLED": "false",
            "REGIONSTORE_RESYNC_INTERVAL_S": "1",
            "REGIONSTORE_PACING__ENABLED": "true" if self.paced else "false",
        }


@contextlib.asynccontextmanager
async def services(run: PacedRun, logs: Path) -> AsyncIterator[dict[str, str]]:
    """Run the mode's writer and recovery; yield their base URLs once both are ready."""
    processes: list[asyncio.subprocess.Process] = []
    urls: dict[str, str] = {}
    try:
        for service in SERVICES:
            port = free_port()
            with (logs / f"{run.prefix}.{service}.log").open("wb") as out:
                processes.append(
                    await asyncio.create_subprocess_exec(
                        sys.executable,
                        "-m",
                        f"regionstore_{service}",
                        env=run.environment(service, port),
                        stdout=out,
                        stderr=asyncio.subprocess.STDOUT,
                    )
                )
            urls[service] = f"http://127.0.0.1:{port}"
        for url, process in zip(urls.values(), processes, strict=True):
            await wait_serving(url, process, within_s=READY_WITHIN_S)
        yield urls
    finally:
        await stop(processes)


class LiveWrites:
    """Sends new customers of one region at a steady rate until stopped; counts what it sent."""

    def __init__(
        self,
        producer: AIOKafkaProducer,
        run: PacedRun,
        customers: list[Customer],
        *,
        per_s: int,
        clock: HybridClock,
    ) -> None:
        self._producer = producer
        self._run = run
        self._customers = iter(customers)
        self._per_tick = max(1, per_s // TICKS_PER_S)
        self._clock = clock
        self.sent = 0

    async def run_until(self, stop: asyncio.Event) -> None:
        tick = 1 / TICKS_PER_S
        next_at = time.monotonic()
        while not stop.is_set():
            sends = []
            for customer in (next(self._customers, None) for _ in range(self._per_tick)):
                if customer is None:
                    raise RuntimeError("live writes ran out of customers; raise the plan's count")
                sends.append(await self._producer.send(*_message(self._run, customer, self._clock)))
            await asyncio.gather(*sends)
            self.sent += len(sends)
            next_at += tick
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(max(0.0, next_at - time.monotonic())):
                    await stop.wait()


def _message(run: PacedRun, customer: Customer, clock: HybridClock) -> tuple[str, bytes, bytes]:
    # Issued now: the writer's apply lag counts from here, as it counts from a gateway's accept.
    command = upsert_command(
        customer,
        regions=run.regions,
        version=clock.now(),
        issued_at_ms=time.time_ns() // 1_000_000,
    )
    return run.command_topic, encode_command(command), command.key.encode()


def region_customers(run: PacedRun, count: int, tag: str, seed: int) -> list[Customer]:
    """``count`` Olist-like new customers homed in the drained region."""
    spec = run.regions.spec(run.drained)
    result: list[Customer] = []
    for n, customer in enumerate(generate(count * len(run.regions.names) * 2, seed=seed)):
        if len(result) == count:
            break
        if spec.zip_min <= customer.customer_zip_code_prefix <= spec.zip_max:
            customer_id = f"{run.prefix.replace('.', '-')}-{tag}-{n}"
            result.append(customer.model_copy(update={"customer_id": customer_id}))
    if len(result) < count:
        raise RuntimeError(f"only {len(result)} of {count} customers homed in {run.drained}")
    return result


def lag_summary(before: Samples, after: Samples, name: str = LAG) -> dict[str, float]:
    """A histogram between two scrapes (by default the writer's apply lag): count, mean, p50,
    p99 (seconds)."""
    delta = bucket_delta(buckets(before, name), buckets(after, name))
    count = total(after, f"{name}_count") - total(before, f"{name}_count")
    seconds = total(after, f"{name}_sum") - total(before, f"{name}_sum")
    return {
        "count": count,
        "mean_s": seconds / count if count else float("nan"),
        "p50_s": histogram_quantile(0.5, delta),
        "p99_s": histogram_quantile(0.99, delta),
    }


async def _live_for(live: LiveWrites, seconds: float) -> None:
    stop = asyncio.Event()
    task = asyncio.create_task(live.run_until(stop))
    await asyncio.sleep(seconds)  # the length of the baseline, not a wait for readiness
    stop.set()
    await task


async def _pending(backlog: BacklogProbe, run: PacedRun) -> int:
    found = (await backlog.backlog([run.drained]))[run.drained]
    if found is None:
        raise RuntimeError(f"Kafka did not say how many commands are parked for {run.drained}")
    return found


async def measure(
    settings: CommonSettings,
    *,
    paced: bool,
    backlog: int,
    live_rate: int,
    baseline_s: float,
    timeout_s: float,
    logs: Path,
) -> dict[str, Any]:
    """One mode: live latency before, then during the drain of ``backlog`` parked commands."""
    run = PacedRun.of(paced, settings)
    mode = "paced" if paced else "unpaced"
    redis = redis_client(settings.redis, f"{run.prefix}.bench")
    board = StatusBoard(
        redis,
        settings.redis.model_copy(update={"status_key_prefix": run.status_prefix}),
        run.regions.names,
    )
    kafka = run.kafka(settings)
    producer = kafka_producer(kafka, f"{run.prefix}.bench")
    await producer.start()
    probe = BacklogProbe(kafka, f"{run.prefix}.bench")
    await probe.start()
    clock = HybridClock(node_id=0)
    live_count = int(live_rate * (baseline_s + timeout_s)) + TICKS_PER_S
    try:
        for region in run.regions.names:
            await board.set(region, NodeStatus.AVAILABLE)
        async with services(run, logs) as urls:
            async with httpx.AsyncClient(timeout=10) as http:
                live = LiveWrites(
                    producer,
                    run,
                    region_customers(run, live_count, "live", seed=31),
                    per_s=live_rate,
                    clock=clock,
                )
                start = await scrape(http, urls["writer"])
                await _live_for(live, baseline_s)
                await wait_consumed(
                    kafka, run.command_topic, [run.writer_group], within_s=timeout_s
                )
                before = lag_summary(start, await scrape(http, urls["writer"]))
                log.info("paced drain (%s): live only, p99 %.3fs", mode, before["p99_s"])

                await board.set(run.drained, NodeStatus.UNAVAILABLE)
                parked = region_customers(run, backlog, "parked", seed=37)
                sends = [await producer.send(*_message(run, c, clock)) for c in parked]
                await asyncio.gather(*sends)
                await wait_consumed(
                    kafka, run.command_topic, [run.writer_group], within_s=timeout_s
                )
                held = await _pending(probe, run)
                log.info("paced drain (%s): %s parked; switching the region on", mode, held)

                start = await scrape(http, urls["writer"])
                drain_start = await scrape(http, urls["recovery"])
                load_at_flip = os.getloadavg()[0]
                stop_live = asyncio.Event()
                live_task = asyncio.create_task(live.run_until(stop_live))
                flipped = time.perf_counter()
                await board.set(run.drained, NodeStatus.AVAILABLE)
                limits: list[float] = []
                deadline = flipped + timeout_s
                try:
                    while (left := await _pending(probe, run)) > 0:
                        if time.perf_counter() > deadline:
                            raise TimeoutError(f"{left} parked commands left after {timeout_s}s")
                        recovery = await scrape(http, urls["recovery"])
                        limits.append(total(recovery, RATE_LIMIT, region=run.drained))
                        await asyncio.sleep(POLL_S)
                    drain_s = time.perf_counter() - flipped
                finally:
                    stop_live.set()
                    await live_task
                during = lag_summary(start, await scrape(http, urls["writer"]))
                batches = lag_summary(drain_start, await scrape(http, urls["recovery"]), BATCH)
    finally:
        await probe.close()
        await producer.stop()
        await redis.aclose()
        await _clean(settings, run)
    log.info(
        "paced drain (%s): %s drained in %.1fs (%.0f/s); live p99 %.3fs (before %.3fs)",
        mode,
        held,
        drain_s,
        rate(held, drain_s),
        during["p99_s"],
        before["p99_s"],
    )
    return {
        "mode": mode,
        "backlog": float(held),
        "live_rate_per_s": float(live_rate),
        "drain_seconds": drain_s,
        "drain_per_s": rate(held, drain_s),
        "live_before": before,
        "live_during_drain": during,
        "drain_batches": batches,
        # The machine's 1-minute load average at the switch and at the end of the drain:
        # on a shared machine the figures are only as steady as this.
        "load_1m": [load_at_flip, os.getloadavg()[0]],
        "rate_limit_samples": limits[:: max(1, len(limits) // 40)],
    }


async def _clean(settings: CommonSettings, run: PacedRun) -> None:
    """Drop the mode's databases, topics, groups' placement topics and status keys."""
    for uri in run.stores.values():
        client = mongo_client(uri, settings.store, "bench-paced")
        try:
            await client.drop_database(urlsplit(uri).path.lstrip("/"))
        finally:
            await client.close()
    admin = kafka_admin(settings.kafka, "bench-paced")
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        topics = {t for t in existing if t.startswith(run.prefix)}
        await admin.delete_topics(sorted(topics))
    finally:
        await admin.close()
    redis = redis_client(settings.redis, "bench-paced")
    try:
        keys = [key async for key in redis.scan_iter(match=f"{run.prefix}:*")]
        if keys:
            await redis.delete(*keys)
    finally:
        await redis.aclose()


def compare(modes: Mapping[str, Mapping[str, Any]]) -> dict[str, float]:
    """What pacing changes: live p99 during the drain and drain rate, paced over unpaced."""
    paced, unpaced = modes["paced"], modes["unpaced"]
    return {
        "live_p99_during_drain_paced_s": paced["live_during_drain"]["p99_s"],
        "live_p99_during_drain_unpaced_s": unpaced["live_during_drain"]["p99_s"],
        "drain_per_s_paced": paced["drain_per_s"],
        "drain_per_s_unpaced": unpaced["drain_per_s"],
        "drain_rate_ratio": rate(paced["drain_per_s"], unpaced["drain_per_s"]),
    }


async def measure_both(
    *, backlog: int, live_rate: int, baseline_s: float, timeout_s: float, logs: Path
) -> dict[str, Any]:
    """Both modes, paced first; the figures of each and the comparison."""
    settings = CommonSettings()
    modes = {}
    for paced in (True, False):
        result = await measure(
            settings,
            paced=paced,
            backlog=backlog,
            live_rate=live_rate,
            baseline_s=baseline_s,
            timeout_s=timeout_s,
            logs=logs,
        )
        modes[result["mode"]] = result
    return {"modes": modes, "comparison": compare(modes)}


def main(argv: list[str] | None = None) -> int:
    """``python -m regionstore_bench.paced_drain``: this scenario alone, both modes."""
    parser = argparse.ArgumentParser(prog="regionstore_bench.paced_drain", description=__doc__)
    parser.add_argument("--backlog", type=int, default=FULL.paced_backlog)
    parser.add_argument("--live-rate", type=int, default=FULL.paced_live_rate)
    parser.add_argument("--baseline-s", type=float, default=FULL.paced_baseline_s)
    parser.add_argument("--output", type=Path, help="write the results here as JSON")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s bench %(message)s", datefmt="%H:%M:%S"
    )
    for noisy in ("aiokafka", "httpx", "httpcore"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    logs = Path(tempfile.mkdtemp(prefix="regionstore-bench-paced-"))
    log.info("the scenario's writers and recoveries log into %s", logs)
    results = asyncio.run(
        measure_both(
            backlog=args.backlog,
            live_rate=args.live_rate,
            baseline_s=args.baseline_s,
            timeout_s=FULL.apply_timeout_s,
            logs=logs,
        )
    )
    text = json.dumps(results, indent=2)
    if args.output is not None:
        args.output.write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
