"""Scenarios 2 and 3: writes through the gateway, one customer per request or 1000 per batch.

Accepted means the gateway answered 202 (Kafka acknowledged with acks=all). Applied means the
write is present in its home and replica regions, proved by the audit; its time is taken from
the services' applied counters (they move only after a bulk write returned), confirmed by
an audit that then finds every write in place.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import sys
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx

from regionstore_shared.api_key import ClientKeySettings, stack_secret
from regionstore_shared.documents import APPLIED_AT, HOME
from regionstore_testing.audit import AuditReport, Expected

from .bare import bare_server, ratio_to_bare
from .data import Customers, target_counts
from .env import BenchEnv, Progress, compose_url, port_of
from .plan import Plan
from .probes import bucket_delta, buckets, cpu_seconds, listener_pid, total
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
# The processes stopped while the single-request rounds run (and their second instances).
CONSUMERS = ("writer", "replicator")
# Requests per second and burst of the singles' key: more than any round sends.
UNMETERED = 1_000_000
# The gateway's answer while the consumers are too far behind (backpressure).
BUSY = 429


@dataclass
class Accepts:
    """What the gateway acknowledged: final states, and when each acknowledgement arrived."""

    prefix: str
    expected: dict[str, Expected] = field(default_factory=dict)
    accepted_wall: dict[str, float] = field(default_factory=dict)
    request_seconds: list[float] = field(default_factory=list)
    rejected: int = 0
    failed: int = 0
    busy: int = 0
    """Batch requests answered 429 (the consumers too far behind): waited out and sent again."""

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
    key: str | None = None,
) -> tuple[int, float]:
    """POST each customer on its own from ``concurrency`` workers, until done or out of time.

    Each worker has its own keep-alive connection (see rawhttp) to ``url``, the gateway unless
    given, with ``key`` (the bench's, unless given). Returns (requests sent, elapsed seconds).
    """
    queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    for body in bodies:
        queue.put_nowait(body)
    progress = Progress("single requests", len(bodies))
    deadline = time.perf_counter() + budget_s

    async def worker() -> None:
        async with RawConnection(url or env.urls["gateway"], key or env.api_key) as connection:
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
                while response.status_code == BUSY:
                    # Backpressure: nothing was taken; send it again when the gateway says.
                    accepts.busy += 1
                    await asyncio.sleep(float(response.headers.get("Retry-After", "1")))
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


@dataclass(frozen=True, slots=True)
class Rounds:
    """Requests per second of each round, and the server's CPU per request over all of them."""

    rates: list[float]
    cpu_us_per_request: float


class ServerCpu:
    """CPU time of the process listening at a URL (the server under test), summed over rounds."""

    def __init__(self, url: str) -> None:
        self._pid = listener_pid(port_of(url))
        self.seconds = 0.0
        self.requests = 0

    @contextlib.contextmanager
    def round(self) -> Iterator[None]:
        """Count the CPU the server uses while the body runs."""
        started = cpu_seconds(self._pid) if self._pid is not None else math.nan
        yield
        ended = cpu_seconds(self._pid) if self._pid is not None else math.nan
        self.seconds += ended - started

    def per_request_us(self) -> float:
        """Microseconds of CPU per request; NaN when the server was not found or got none."""
        return self.seconds / self.requests * 1e6 if self.requests else math.nan


async def bare_rounds(
    env: BenchEnv, plan: Plan, bodies: Sequence[dict[str, Any]], durations: Sequence[float]
) -> Rounds:
    """The gateway's rounds again against the bare endpoint: same bodies, concurrency, and
    each round as long as the gateway's was (the bodies repeat: nothing is stored)."""
    rates: list[float] = []
    repeated = list(bodies) * BARE_REPEATS
    async with bare_server() as url:
        cpu = ServerCpu(url)
        for index, duration in enumerate(durations):
            with cpu.round():
                count, seconds = await post_singles(
                    env, repeated, plan.single_concurrency, CountedOnly(""), duration, url
                )
            cpu.requests += count
            rates.append(rate(count, seconds))
            log.info("bare round %d: %d sent, %.0f requests/s", index + 1, count, rates[-1])
    return Rounds(rates, cpu.per_request_us())


def keys_environment(run_dir: Path) -> dict[str, str]:
    """The environment of the gateway's key command: the bench's, with the stack's server
    secret (``$RUN_DIR/secrets/auth_secret``) unless REGIONSTORE_AUTH__SECRET is set."""
    environment = dict(os.environ)
    if not environment.get("REGIONSTORE_AUTH__SECRET"):
        environment["REGIONSTORE_AUTH__SECRET"] = stack_secret(run_dir)
    return environment


def keys_command(*arguments: str) -> list[str]:
    """The gateway's key command (``python -m regionstore_gateway.keys``) with ``arguments``."""
    return [sys.executable, "-m", "regionstore_gateway.keys", *arguments]


def key_id(key: str) -> str:
    """The public id of a key ``rsk_<id>_<secret>``."""
    return key.split("_", 2)[1]


async def _keys(environment: dict[str, str], *arguments: str) -> str:
    process = await asyncio.create_subprocess_exec(
        *keys_command(*arguments),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=environment,
    )
    out, err = await process.communicate()
    if process.returncode != 0:
        raise RuntimeError(f"keys {arguments[0]} failed: {err.decode(errors='replace').strip()}")
    return out.decode().strip()


@contextlib.asynccontextmanager
async def unmetered_key() -> AsyncIterator[str]:
    """A writer key whose rate no round reaches, revoked on the way out.

    The gateway limits each key (1,000 requests/s by default): with the bench's own key, a
    gateway faster than that would be answered 429 and the rounds would measure the limit.
    """
    environment = keys_environment(ClientKeySettings().run_dir)
    limit = str(UNMETERED)
    key = await _keys(
        environment, "create", "--role", "writer", "--name", "bench singles",
        "--rate", limit, "--burst", limit,
    )  # fmt: skip
    try:
        yield key
    finally:
        await _keys(environment, "revoke", key_id(key))


async def _processes(compose: httpx.AsyncClient) -> list[dict[str, Any]]:
    answer = await compose.get("/processes")
    answer.raise_for_status()
    return list(answer.json()["data"])


async def set_consumers(compose: httpx.AsyncClient, *, running: bool, timeout_s: float) -> None:
    """Start (and wait until ready) or stop every writer and replicator of the stack."""
    names = [p["name"] for p in await _processes(compose) if p["name"].startswith(CONSUMERS)]
    for name in names:
        if running:
            await compose.post(f"/process/start/{name}")
        else:
            await compose.patch(f"/process/stop/{name}")
    deadline = time.monotonic() + timeout_s
    while True:
        states = [p for p in await _processes(compose) if p["name"] in names]
        if all(
            state["is_ready"] == "Ready" if running else state["status"] != "Running"
            for state in states
        ):
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"{names} not {'ready' if running else 'stopped'} in {timeout_s}s")
        await asyncio.sleep(0.2)  # poll interval, not a wait for the state


@contextlib.asynccontextmanager
async def consumers_stopped(url: str, timeout_s: float = 120.0) -> AsyncIterator[bool]:
    """The writers and replicators stopped (process-compose's API at ``url``) while the body
    runs, started again however it ends; whether they were (False: no process-compose there,
    as on a stack started some other way, and they ran on)."""
    async with httpx.AsyncClient(base_url=url, timeout=30) as compose:
        try:
            await set_consumers(compose, running=False, timeout_s=timeout_s)
        except httpx.TransportError as error:
            log.warning("consumers left running: process-compose unreachable (%s)", error)
            yield False
            return
        try:
            yield True
        finally:
            await set_consumers(compose, running=True, timeout_s=timeout_s)


async def single_ingest(env: BenchEnv, plan: Plan, customers: Customers) -> dict[str, Any]:
    """Scenario 2: single-customer POSTs at a fixed concurrency, in rounds, then the bare
    endpoint's rounds, all while the writers and replicators are stopped.

    So both sets of rounds have the machine alike, and a round measures accepting writes (a 202
    once Kafka acknowledged each, acks=all), not applying them. The consumers are started
    after, and the backlog is timed until every write is applied, and audited. Without
    process-compose to stop them, they apply beside the rounds, and the results say so.
    """
    unloaded_bodies = customers.bodies[: plan.unloaded_requests]
    loaded = customers.bodies[plan.unloaded_requests :]
    accepts = Accepts(customers.prefix)
    unloaded = Accepts(customers.prefix)
    per_round = math.ceil(len(loaded) / plan.single_rounds)
    budget = plan.single_budget_s / plan.single_rounds
    rates: list[float] = []
    durations: list[float] = []
    sent = 0
    gateway = ServerCpu(env.urls["gateway"])
    counted = await applied_counters(env)
    async with unmetered_key() as key, consumers_stopped(compose_url()) as stopped:
        for index in range(plan.single_rounds):
            bodies = loaded[index * per_round : (index + 1) * per_round]
            with gateway.round():
                count, seconds = await post_singles(
                    env, bodies, plan.single_concurrency, accepts, budget, key=key
                )
            sent += count
            durations.append(seconds)
            rates.append(rate(count, seconds))
            log.info("singles round %d: %d sent, %.0f accepted/s", index + 1, count, rates[-1])
        gateway.requests = len(accepts.expected)
        loaded_seconds = list(accepts.request_seconds)
        await post_singles(env, unloaded_bodies, 1, unloaded, key=key)
        bare = await bare_rounds(env, plan, loaded[:per_round], durations)
    started = time.perf_counter()
    accepts.expected.update(unloaded.expected)
    accepts.accepted_wall.update(unloaded.accepted_wall)
    accepts.failed += unloaded.failed
    # Started again, the consumers are new processes: their applied counters start at zero.
    before = dict.fromkeys(ROLE_OF, 0.0) if stopped else counted
    done, report, _ = await wait_applied(
        env, accepts, before, wanted_applies(env, accepts, customers.bodies), plan.apply_timeout_s
    )
    log.info("singles applied %.1fs after the rounds: %s", done - started, report)
    gateway_rate = median(rates)
    bare_rate = median(bare.rates)
    return {
        "requests": float(sent),
        "requests_planned": float(len(loaded)),
        "stopped_by_time_budget": float(sent < len(loaded)),
        "time_budget_s": plan.single_budget_s,
        "concurrency": float(plan.single_concurrency),
        "rounds": float(plan.single_rounds),
        "consumers_stopped_during_rounds": float(stopped),
        "runs_accepted_per_s": rates,
        "accepted_per_s": gateway_rate,
        "cpu_us_per_accepted": gateway.per_request_us(),
        "bare_runs_per_s": bare.rates,
        "bare_per_s": bare_rate,
        "bare_cpu_us_per_request": bare.cpu_us_per_request,
        "ratio_to_bare": ratio_to_bare(gateway_rate, bare_rate),
        "accept_latency": latency_summary(loaded_seconds),
        "unloaded_accept_latency": latency_summary(unloaded.request_seconds),
        "failed": float(accepts.failed),
        "applied_s_after_rounds": done - started,
        "applied_per_s_after_rounds": rate(len(accepts.expected), done - started),
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
        "requests_answered_429": float(accepts.busy),
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
