"""What a write costs with every process running: at fixed rates, and at saturation.

The gateway-alone rounds (:mod:`.ingest`) stop the consumers, so they price accepting a write,
not applying it. Here nothing is stopped. Each round sends single creates, waits until the
writer and the replicator applied every one (and the audit agrees), and reads the CPU time that
Kafka, the gateway, the writer and the replicator used from its first write to that moment,
idle work included: at low rates that is most of what a write costs, and what a deployment that
takes a few writes a second pays.

- At a fixed rate, a write is due every ``1/rate`` seconds (open loop): one of a few keep-alive
  connections sends it when due, so a slow answer does not slow the rate down.
- At saturation, 32 connections send as fast as they are answered, as the gateway-alone round
  does.

Before the rounds, the same processes are watched with nothing sent (the idle round): what they
cost a second whatever the rate. Each round also records the machine's load average and how
the consumers worked: writes per batch applied and per placement commit (a Kafka transaction
per partition), the two costs that shrink as the rate grows.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import math
import os
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from statistics import quantiles
from typing import Any

from .data import Customers, customers, run_stamp
from .env import BenchEnv, log, open_env, port_of
from .ingest import (
    Accepts,
    applied_counters,
    applied_latencies,
    audit_counts,
    post_singles,
    wait_applied,
    wanted_applies,
)
from .probes import ProcessSampler, cpu_seconds, total
from .rawhttp import RawConnection, RawHttpError

RATES = (20, 100, 1000)
"""Writes a second of the fixed-rate rounds."""
PROCESSES = ("kafka", "gateway", "writer", "replicator")
"""Whose CPU a write costs."""
CONNECTIONS = 16
"""Connections of a fixed-rate round: enough that 1,000 writes a second are never queued."""
SATURATION_CONCURRENCY = 32
CONSUMERS = ("writer", "replicator")
"""Whose batches and placement commits a round counts."""
BATCHES = "regionstore_batch_apply_seconds_count"
COMMITS = "regionstore_placement_commits_total"
RESULTS = Path(__file__).resolve().parents[1] / "results"


def writes_for(rate: float, seconds: float) -> int:
    """How many writes a round at ``rate`` sends in ``seconds``."""
    return max(1, round(rate * seconds))


async def post_at_rate(
    env: BenchEnv,
    bodies: Sequence[dict[str, Any]],
    rate: float,
    accepts: Accepts,
    key: str | None = None,
) -> float:
    """POST the bodies, one every ``1/rate`` seconds, with ``key`` (the bench's unless given);
    the seconds it took to send them all."""
    started = time.perf_counter()
    due = iter(range(len(bodies)))

    async def worker() -> None:
        async with RawConnection(env.urls["gateway"], key or env.api_key) as connection:
            for index in due:
                delay = started + index / rate - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
                body = bodies[index]
                try:
                    status, answer = await connection.post_json("/v1/customers", body)
                except RawHttpError as error:
                    accepts.failed += 1
                    log.warning("write at a fixed rate failed: %s", error)
                    continue
                if status == 202:
                    accepts.accept(answer, time.time())
                else:
                    accepts.failed += 1

    await asyncio.gather(*(worker() for _ in range(CONNECTIONS)))
    return time.perf_counter() - started


def cpu_used(pids: Mapping[str, int], before: Mapping[str, float]) -> dict[str, float]:
    """CPU seconds each process used since ``before`` (NaN for one that restarted)."""
    return {name: cpu_seconds(pid) - before[name] for name, pid in pids.items()}


def load_1m() -> float:
    """The machine's load average over the last minute."""
    return os.getloadavg()[0]


async def consumer_work(env: BenchEnv) -> dict[str, float]:
    """Batches applied and placement commits made so far, per consumer service."""
    counts: dict[str, float] = {}
    for service in CONSUMERS:
        samples = await env.metrics(service)
        counts[f"{service}_batches"] = total(samples, BATCHES)
        counts[f"{service}_commits"] = total(samples, COMMITS)
    return counts


def per_write(
    done: Mapping[str, float], before: Mapping[str, float], writes: float
) -> dict[str, float]:
    """Writes per batch and per placement commit of each consumer, from two readings."""
    result: dict[str, float] = {}
    for name, after in done.items():
        spent = after - before[name]
        result[name] = writes / spent if spent > 0 else math.nan
    return result


async def idle_round(pids: Mapping[str, int], seconds: float) -> dict[str, Any]:
    """CPU milliseconds each process uses a second with nothing sent, over ``seconds``."""
    load = load_1m()
    before = {name: cpu_seconds(pid) for name, pid in pids.items()}
    started = time.perf_counter()
    await asyncio.sleep(seconds)
    used = cpu_used(pids, before)
    elapsed = time.perf_counter() - started
    per_s = {name: 1000 * value / elapsed for name, value in used.items()}
    per_s["all"] = sum(per_s.values())
    return {"seconds": elapsed, "cpu_ms_per_s": per_s, "load_1m": (load + load_1m()) / 2}


def percentile(values: Sequence[float], q: int) -> float:
    """The ``q``-th percentile (1-99) of ``values``; NaN when there are fewer than two."""
    if len(values) < 2:
        return math.nan
    return quantiles(values, n=100)[q - 1]


async def one_round(
    env: BenchEnv,
    customers: Customers,
    pids: Mapping[str, int],
    *,
    rate: float | None,
    seconds: float,
    timeout_s: float,
    key: str | None = None,
) -> dict[str, Any]:
    """One round: at ``rate`` writes a second, or as fast as answered (None), for ``seconds``,
    with ``key`` (the bench's unless given)."""
    accepts = Accepts(customers.prefix)
    before_counts = await applied_counters(env)
    before_work = await consumer_work(env)
    load = load_1m()
    before_cpu = {name: cpu_seconds(pid) for name, pid in pids.items()}
    started = time.perf_counter()
    if rate is None:
        sent, sending = await post_singles(
            env, customers.bodies, SATURATION_CONCURRENCY, accepts, budget_s=seconds, key=key
        )
    else:
        sending = await post_at_rate(env, customers.bodies, rate, accepts, key)
        sent = len(customers.bodies)
    done, report, snapshot = await wait_applied(
        env, accepts, before_counts, wanted_applies(env, accepts, customers.bodies), timeout_s
    )
    used = cpu_used(pids, before_cpu)
    load = (load + load_1m()) / 2
    accepted = len(accepts.expected)
    work = per_write(await consumer_work(env), before_work, accepted)
    latencies = applied_latencies(accepts, snapshot)["both"]
    total = sum(used.values())
    return {
        "rate_asked_per_s": rate,
        "seconds": seconds,
        "sent": float(sent),
        "accepted": float(accepted),
        "failed": float(accepts.failed),
        "accepted_per_s": accepted / sending if sending else math.nan,
        "applied_per_s": accepted / (done - started) if done > started else math.nan,
        "seconds_to_applied": done - started,
        "accept_to_applied_p50_s": percentile(latencies, 50),
        "accept_to_applied_p99_s": percentile(latencies, 99),
        "cpu_s": used,
        "cpu_ms_per_write": {
            name: 1000 * seconds_used / accepted if accepted else math.nan
            for name, seconds_used in {**used, "all": total}.items()
        },
        "writes_per": work,
        "load_1m": load,
        "audit": audit_counts(report),
    }


async def cost_rounds(
    env: BenchEnv,
    customers: Customers,
    pids: Mapping[str, int],
    *,
    seconds: float,
    timeout_s: float,
    idle_s: float,
    rates: Sequence[float] = RATES,
    saturation_s: float | None = None,
    key: str | None = None,
) -> dict[str, Any]:
    """The idle round, the fixed-rate rounds of ``seconds``, then the saturation round of
    ``saturation_s`` (``seconds`` unless given), on ``customers`` (enough for all), the writes
    sent with ``key`` (the bench's unless given)."""
    missing = [name for name in PROCESSES if name not in pids]
    if missing:
        raise RuntimeError(f"cannot measure CPU per write: no process found for {missing}")
    measured = {name: pids[name] for name in PROCESSES}
    log.info("end to end, idle: %.0f s", idle_s)
    idle = await idle_round(measured, idle_s)
    rounds: dict[str, Any] = {}
    start = 0
    for rate in [*rates, None]:
        count = writes_for(rate, seconds) if rate is not None else len(customers.bodies) - start
        part = Customers(customers.tag, customers.prefix, customers.bodies[start : start + count])
        start += count
        label = f"{rate:g}/s" if rate is not None else "saturation"
        log.info("end to end, %s: %d writes", label, len(part.bodies))
        length = seconds if rate is not None or saturation_s is None else saturation_s
        rounds[label] = await one_round(
            env, part, measured, rate=rate, seconds=length, timeout_s=timeout_s, key=key
        )
        log.info(
            "end to end, %s: %.0f applied/s, %.2f ms CPU per write",
            label,
            rounds[label]["applied_per_s"],
            rounds[label]["cpu_ms_per_write"]["all"],
        )
    return {
        "idle": idle,
        "rounds": rounds,
        "low_rate_to_saturation_cpu_ratio": low_to_saturation(rounds, rates),
    }


def cpu_per_write(rounds: Mapping[str, Any], label: str) -> float:
    """CPU ms per write of all processes in the round ``label`` ("20/s", "saturation"); NaN
    when the round is missing."""
    return float(rounds.get(label, {}).get("cpu_ms_per_write", {}).get("all", math.nan))


def low_to_saturation(rounds: Mapping[str, Any], rates: Sequence[float] = RATES) -> float:
    """CPU per write (all processes) at the lowest rate over that at saturation; NaN when
    either is missing or saturation cost nothing."""
    low = cpu_per_write(rounds, f"{min(rates):g}/s")
    high = cpu_per_write(rounds, "saturation")
    return low / high if high and not math.isnan(high) else math.nan


async def measure(seconds: float, timeout_s: float, idle_s: float, seed: int) -> dict[str, Any]:
    """Every round on the running local stack, its customers removed after."""
    # Imported here: the package's entry point imports this module.
    from .__main__ import infra_ports

    async with open_env() as env:
        ports = {name: port_of(url) for name, url in env.urls.items()} | infra_ports(env)
        pids = ProcessSampler(ports).resolve()
        count = sum(writes_for(rate, seconds) for rate in RATES) + round(3000 * seconds)
        bodies = customers(run_stamp(), "e", count, seed)
        try:
            results = await cost_rounds(
                env, bodies, pids, seconds=seconds, timeout_s=timeout_s, idle_s=idle_s
            )
        finally:
            await env.delete_customers(bodies)
        results["settings"] = {
            "commit_interval_ms": env.settings.kafka.commit_interval_ms,
            "fetch_min_bytes": env.settings.kafka.fetch_min_bytes,
            "fetch_max_wait_ms": env.settings.kafka.fetch_max_wait_ms,
            "round_s": seconds,
        }

    return results


def table(results: Mapping[str, Any]) -> str:
    """The rounds as a Markdown table, the idle round first."""
    lines = [
        "| round | load 1 min | accepted/s | applied/s | accept→applied p50 / p99 | "
        "writes per batch / per commit: writer, replicator | CPU ms per write: "
        "Kafka / gateway / writer / replicator / all |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    idle = results["idle"]
    lines.append(
        f"| idle (CPU ms a second) | {idle['load_1m']:.2f} | | | | | "
        + " / ".join(f"{idle['cpu_ms_per_s'][name]:.1f}" for name in (*PROCESSES, "all"))
        + " |"
    )
    for label, r in results["rounds"].items():
        cpu, per = r["cpu_ms_per_write"], r["writes_per"]
        work = ", ".join(
            f"{per[f'{service}_batches']:.1f} / {per[f'{service}_commits']:.1f}"
            for service in CONSUMERS
        )
        lines.append(
            f"| {label} | {r['load_1m']:.2f} | {r['accepted_per_s']:.0f} | "
            f"{r['applied_per_s']:.0f} | "
            f"{r['accept_to_applied_p50_s'] * 1000:.0f} / "
            f"{r['accept_to_applied_p99_s'] * 1000:.0f} ms | {work} | "
            + " / ".join(f"{cpu[name]:.2f}" for name in (*PROCESSES, "all"))
            + " |"
        )
    ratio = results["low_rate_to_saturation_cpu_ratio"]
    lines.append(f"\nCPU per write at the lowest rate: {ratio:.1f} times that at saturation.")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="length of each round")
    parser.add_argument("--timeout", type=float, default=300.0, help="wait for applied, at most")
    parser.add_argument("--idle", type=float, default=20.0, help="length of the idle round")
    parser.add_argument("--seed", type=int, default=20261206)
    parser.add_argument("--output", type=Path, default=RESULTS / "cost-latest.json")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s bench %(message)s", datefmt="%X")
    for noisy in ("aiokafka", "httpx", "httpcore"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    results = asyncio.run(measure(args.seconds, args.timeout, args.idle, args.seed))
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(results, indent=2, default=str) + "\n")
    print(table(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
