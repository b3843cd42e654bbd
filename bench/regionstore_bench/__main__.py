"""``python -m regionstore_bench [--quick]``: run every scenario against the local stack."""

from __future__ import annotations

import argparse
import asyncio
import glob
import json
import logging
import math
import os
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
from pymongo.errors import PyMongoError

from regionstore_shared.status import NodeStatus

from . import (
    baselines,
    endtoend,
    ingest,
    paced_drain,
    queries,
    recovery,
    reference,
    region_maps,
    report,
    stores,
)
from .data import Customers, commands, customers, documents, encoded, run_stamp
from .env import BenchEnv, compose_url, log, open_env, port_of
from .plan import FULL, QUICK, SMOKE, Plan
from .probes import PhaseUsage, ProcessSampler
from .profile import profiled
from .write_cost import write_costs

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "bench" / "results"
PROFILES = ROOT / "test-artifacts" / "bench-profiles"
IDLE_S = 3.0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="regionstore_bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small counts (< 2 minutes)")
    parser.add_argument(
        "--smoke", action="store_true", help="every scenario at its smallest, figures unfit to read"
    )
    parser.add_argument("--output", help="results file stem (default latest, quick or smoke)")
    parser.add_argument("--results-dir", type=Path, default=RESULTS, help="where results go")
    parser.add_argument("--profile", action="store_true", help="py-spy the services meanwhile")
    parser.add_argument("--keep-data", action="store_true", help="leave the bench's customers")
    parser.add_argument(
        "--reference-url",
        default=os.environ.get(reference.ENVIRONMENT) or None,
        help="the original system's app, run apart (docs/performance.md), for a reference row "
        f"(default: ${reference.ENVIRONMENT}; none: the row says not run)",
    )
    parser.add_argument(
        "--report-only",
        type=Path,
        metavar="JSON",
        help="redo targets, summary and chart from an earlier results file; run nothing",
    )
    return parser.parse_args(argv)


async def _wait_ready(env: BenchEnv, within_s: float = 60) -> None:
    deadline = time.monotonic() + within_s
    while True:
        missing = []
        for name, url in env.urls.items():
            try:
                response = await env.http.get(f"{url}/readyz", timeout=5)
                if response.status_code != 200:
                    missing.append(name)
            except httpx.HTTPError:
                missing.append(name)
        if not missing:
            return
        if time.monotonic() > deadline:
            raise SystemExit(f"services not ready: {', '.join(missing)} (is the stack up? make up)")
        await asyncio.sleep(1)


async def _versions(env: BenchEnv) -> dict[str, str]:
    jars = sorted(glob.glob(str(ROOT / ".cache" / "kafka" / "libs" / "kafka_2.13-*.jar")))
    kafka = Path(jars[0]).stem.removeprefix("kafka_2.13-") if jars else "unknown"
    collection = next(iter(env.collections.values()))
    info = await collection.database.client.admin.command("buildInfo")
    if isinstance(info.get("ferretdb"), dict):
        store = f"FerretDB {info['ferretdb'].get('version', 'unknown')}"
    elif "ferretdbVersion" in info:
        store = f"FerretDB {info['ferretdbVersion']}"
    else:
        store = f"mongod {info['version']}"
    redis_info = await env.redis.info("server")
    return {"kafka": kafka, "store": store, "redis": str(redis_info.get("redis_version"))}


def infra_ports(env: BenchEnv) -> dict[str, int]:
    """The ports Kafka, Redis and each regional store listen on, from the settings."""
    first_broker = env.settings.kafka.bootstrap_servers.split(",")[0]
    ports = {"kafka": int(first_broker.rsplit(":", 1)[1])}
    ports["redis"] = urlsplit(env.settings.redis.url).port or 6379
    for region in env.regions.names:
        ports[region] = urlsplit(env.settings.stores[region]).port or 27017
    return ports


def _usage(phases: dict[str, PhaseUsage]) -> tuple[dict[str, Any], dict[str, Any]]:
    idle = phases["idle"].median_rss_mb
    batch = phases["batch"].peak_rss_mb if "batch" in phases else {}
    peak: dict[str, float] = {}
    for usage in phases.values():
        for name, value in usage.peak_rss_mb.items():
            peak[name] = max(peak.get(name, -math.inf), value)
    rss = {"idle": idle, "batch_peak": batch, "peak": peak}
    cpu = {name: usage.cpu_share() for name, usage in phases.items() if name != "idle"}
    for name, usage in phases.items():
        cpu.setdefault(name, {})["machine_load_1m"] = (usage.load_start + usage.load_end) / 2
    return rss, cpu


async def run(
    plan: Plan, *, profile: bool, keep_data: bool, reference_url: str | None = None
) -> dict[str, Any]:
    """Every scenario in order; the results as a dict."""
    started_at = datetime.now(UTC).isoformat(timespec="seconds")
    started = time.perf_counter()
    results: dict[str, Any] = {}
    profiles: dict[str, Any] = {}
    async with open_env() as env:
        await _wait_ready(env)
        versions = await _versions(env)
        statuses = await env.http.get("/v1/regions")
        if any(r["status"] != NodeStatus.AVAILABLE for r in statuses.json()["regions"]):
            log.warning("a region was unavailable before the bench; making all available")
            await env.restore_regions()
        removed = await env.delete_stale_runs()
        if removed:
            log.info("removed %d documents left by older bench runs", removed)
        stamp = run_stamp()
        log.info("generating customers (seed %d)", plan.seed)
        batch_set = customers(stamp, "b", plan.batch_customers, plan.seed)
        single_set = customers(
            stamp, "s", plan.single_requests + plan.unloaded_requests, plan.seed + 1
        )
        recovery_set = customers(stamp, "r", plan.recovery_writes, plan.seed + 2)
        e2e_set = customers(
            stamp,
            "e",
            endtoend.customers_needed(plan.e2e_round_s, plan.e2e_sustained_s),
            plan.seed + 3,
        )
        # Written to the reference app's own databases, never to regionstore's.
        reference_set = customers(
            stamp, "o", endtoend.reference_needed(plan.e2e_sustained_s), plan.seed + 4
        )
        baseline_commands = commands(batch_set.bodies, env.regions)
        messages = encoded(baseline_commands)
        docs = documents(baseline_commands)
        del baseline_commands
        run_prefix = f"bench-{stamp}-"
        cleanup = "skipped (--keep-data)" if keep_data else "done"
        written: list[Customers] = []
        ports = {name: port_of(url) for name, url in env.urls.items()} | infra_ports(env)
        sampler = ProcessSampler(
            ports,
            compose_url=compose_url(),
            trees=stores.trees(env.regions.names),
            groups=stores.groups(env.regions.names),
        )

        def profiling(label: str, services: tuple[str, ...]) -> Any:
            pids = {n: p for n, p in sampler.resolve().items() if n in services}
            return profiled(pids if profile else {}, PROFILES, label, profiles)

        try:
            async with sampler.phase("idle"):
                await asyncio.sleep(IDLE_S)
            async with sampler.phase("baselines"):
                log.info("1/8 baselines")
                results["baselines"] = await baselines.kafka_baselines(env.settings, plan, messages)
                home = env.regions.names[0]
                sample = docs[: plan.insert_documents]
                results["baselines"]["insert_many"] = await baselines.insert_baseline(
                    env.settings, plan, sample, home
                )
            del messages, docs
            log.info("2/8 single-request ingest")
            written += [single_set, batch_set, recovery_set]
            async with (
                sampler.phase("singles"),
                profiling("singles", ("gateway", "writer", "replicator")),
            ):
                results["ingest_single"] = await ingest.single_ingest(env, plan, single_set)
            if not keep_data:
                await env.delete_customers(single_set)
            log.info("3/8 batch ingest")
            async with (
                sampler.phase("batch"),
                profiling("batch", ("gateway", "writer", "replicator")),
            ):
                results["ingest_batch"] = await ingest.batch_ingest(env, plan, batch_set)
            # Queries right after the batch ingest: over its 100,000 customers, before the
            # recovery scenario adds 50,000 more.
            log.info("4/8 queries")
            async with sampler.phase("queries"), profiling("queries", ("gateway",)):
                results["queries"] = await queries.queries(env, plan, batch_set)
            log.info("5/8 recovery")
            async with sampler.phase("recovery"), profiling("recovery", ("recovery",)):
                results["recovery"] = await recovery.recovery(env, plan, recovery_set)
            async with sampler.phase("baseline_full_store"):
                drained = results["recovery"]
                log.info("baseline insert_many into a store as full as the drained region")
                results["baselines"]["insert_many_full"] = await baselines.insert_baseline(
                    env.settings,
                    plan,
                    sample,
                    drained["region"],
                    holding=int(drained["store_documents_at_flip"]),
                )
            del sample
            sizes = ", ".join(str(size) for size in plan.map_sizes)
            log.info("6/8 store writes per customer write on maps of %s regions", sizes)
            async with sampler.phase("maps"):
                logs = Path(tempfile.mkdtemp(prefix="regionstore-bench-maps-"))
                log.info("the maps' writers and replicators log into %s", logs)
                results["write_cost_measured"] = await region_maps.measure_all(
                    plan.map_customers, logs, plan.map_sizes
                )
            log.info("7/8 a parked backlog drained under live writes, paced and flat out")
            async with sampler.phase("paced_drain"):
                results["paced_drain"] = await paced_drain.measure_both(
                    backlog=plan.paced_backlog,
                    live_rate=plan.paced_live_rate,
                    baseline_s=plan.paced_baseline_s,
                    timeout_s=plan.apply_timeout_s,
                    logs=logs,
                )
            log.info("8/8 end to end, every process running")
            written.append(e2e_set)
            # The consumers were restarted after scenario 2: their pids as they are now.
            pids = sampler.resolve()
            async with sampler.phase("end_to_end"):
                results["end_to_end"] = await endtoend.end_to_end(
                    env, plan, e2e_set, reference_set, pids, reference_url
                )
        finally:
            await env.restore_regions()
            if written and not keep_data:
                log.info("removing the bench's customers (%s*) from the stores", run_prefix)
                try:
                    for scenario_set in written:
                        await env.delete_customers(scenario_set)
                except PyMongoError as error:
                    # The figures stand; what is left is found by its prefix and removed by
                    # the next run once it is older than a few hours.
                    cleanup = f"failed, customers {run_prefix}* may remain: {error!r}"[:500]
                    log.warning("clean-up %s", cleanup)
        rss, cpu = _usage(sampler.phases)
    results["rss_mb"] = rss
    server = "ferretdb" if versions["store"].startswith("FerretDB") else "mongod"
    results["store_rss_mb"] = stores.memory(sampler.phases, env.regions.names, server)
    results["cpu_share"] = cpu
    results["meta"] = {
        "started_at": started_at,
        "duration_s": time.perf_counter() - started,
        "plan": plan.as_dict(),
        "id_prefix": run_prefix,
        "cleanup": cleanup,
        "settings": {
            "kafka": env.settings.kafka.model_dump(mode="json"),
            "store": env.settings.store.model_dump(mode="json"),
            "regions": [spec.model_dump() for spec in env.regions.specs],
            "services": env.urls,
        },
        "machine": report.machine(versions),
    }
    if profiles:
        results["profiles"] = profiles
    results["write_cost"] = write_costs()
    results["end_to_end"]["restated"] = endtoend.restate(results)
    results["targets"] = report.targets(results)
    results["query_targets"] = report.query_targets(results)
    return results


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s bench %(message)s", datefmt="%H:%M:%S"
    )
    for noisy in ("aiokafka", "httpx", "httpcore"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    plan = SMOKE if args.smoke else QUICK if args.quick else FULL
    stem = args.output or ("latest" if plan is FULL else plan.name)
    directory: Path = args.results_dir
    directory.mkdir(parents=True, exist_ok=True)
    if args.report_only is not None:
        results = json.loads(args.report_only.read_text())
        if "end_to_end" in results:
            results["end_to_end"]["restated"] = endtoend.restate(results)
        results["targets"] = report.targets(results)
        results["query_targets"] = report.query_targets(results)
        stem = args.output or args.report_only.stem
    else:
        results = asyncio.run(
            run(
                plan,
                profile=args.profile,
                keep_data=args.keep_data,
                reference_url=args.reference_url,
            )
        )
    json_path, md_path, png_path = (directory / f"{stem}{ext}" for ext in (".json", ".md", ".png"))
    chart = os.path.relpath(png_path, ROOT)
    report.write_json(results, json_path)
    report.write_chart(results, png_path)
    report.write_markdown(results, md_path, chart)
    log.info("results: %s, %s, %s", json_path, md_path, png_path)
    missed = [t["name"] for t in results["targets"] + results["query_targets"] if not t["pass"]]
    for name in missed:
        log.info("target missed: %s", name)
    return 0


if __name__ == "__main__":
    sys.exit(main())
